package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/push/apns"
	"github.com/sipwake/sipwake/push/fcm"
	"github.com/sipwake/sipwake/push/webhook"
)

// pushTimeout bounds one push request to a provider.
const pushTimeout = 10 * time.Second

// buildPusher builds the push dispatcher with a notifier per configured
// provider: APNs (token or certificate auth), FCM (one or more projects),
// and the webhook for every provider without a notifier of its own.
func buildPusher(cfg *Config, log *zap.Logger, reg prometheus.Registerer) (*push.Dispatcher, error) {
	d := push.NewDispatcher(push.DispatcherOptions{
		QueueSize:  4096,
		Workers:    32,
		Timeout:    pushTimeout,
		Registerer: reg,
		Logger:     log,
	})
	pc := cfg.Push
	if pc.APNs.KeyFile != "" || len(pc.APNs.Certificates) > 0 {
		n, err := apns.New(apns.Options{
			KeyFile: pc.APNs.KeyFile, KeyID: pc.APNs.KeyID, TeamID: pc.APNs.TeamID,
			Certificates: pc.APNs.Certificates,
			URL:          pc.APNs.URL, SandboxURL: pc.APNs.SandboxURL,
			CAFile: pc.CAFile, Timeout: pushTimeout,
		})
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("push.apns: %w", err)
		}
		if err := errors.Join(d.Register(push.ProviderAPNs, n), d.Register(push.ProviderAPNsDev, n)); err != nil {
			d.Close()
			return nil, err
		}
	}
	var projects []fcm.Project
	for _, p := range pc.FCM.Projects {
		if p.ProjectID != "" || p.CredentialsFile != "" {
			projects = append(projects, fcm.Project{ProjectID: p.ProjectID, CredentialsFile: p.CredentialsFile})
		}
	}
	if len(projects) > 0 {
		n, err := fcm.New(fcm.Options{Projects: projects, Endpoint: pc.FCM.Endpoint, CAFile: pc.CAFile, Timeout: pushTimeout})
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("push.fcm: %w", err)
		}
		if err := d.Register(push.ProviderFCM, n); err != nil {
			d.Close()
			return nil, err
		}
	}
	if pc.Webhook.URL != "" {
		n, err := webhook.New(webhook.Options{URL: pc.Webhook.URL, SecretFile: pc.Webhook.SecretFile, CAFile: pc.CAFile, Timeout: pushTimeout})
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("push.webhook: %w", err)
		}
		if err := d.SetFallback(n); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// pushConfigured reports whether any push provider is configured.
func pushConfigured(cfg *Config) bool {
	pc := cfg.Push
	if pc.APNs.KeyFile != "" || len(pc.APNs.Certificates) > 0 || pc.Webhook.URL != "" {
		return true
	}
	for _, p := range pc.FCM.Projects {
		if p.CredentialsFile != "" {
			return true
		}
	}
	return false
}
