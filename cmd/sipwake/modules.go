package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/proxy/wake"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
)

// buildModules returns THE ordered chain of modules, outermost first. The
// forwarder (proxy) is the implicit last link. A module may rely on the
// ones before it, never on those after it.
func buildModules(cfg *Config, srv *proxy.Server, st store.Store, pusher wake.Pusher, log *zap.Logger, reg prometheus.Registerer) ([]proxy.Module, error) {
	var keyring *registrar.Keyring
	if cfg.Registrar.Credentials.KeyFile != "" {
		k, err := registrar.LoadKeyring(cfg.Registrar.Credentials.KeyFile, cfg.Registrar.Credentials.OldKeyFiles)
		if err != nil {
			return nil, err
		}
		keyring = k
	}
	domains := map[string]string{}
	for _, d := range cfg.Registrar.OnBehalf.TrustedDomains {
		domains[d] = registrar.AuthTrusted
	}
	var rp registrar.Pusher
	if pusher != nil {
		rp = pusher
	}
	r := cfg.Registrar
	reg2, err := registrar.New(registrar.Config{
		Mode:                registrar.Mode(r.Mode),
		MinExpires:          r.MinExpires,
		MaxExpires:          r.MaxExpires,
		DefaultExpires:      r.DefaultExpires,
		MaxBindingsPerAOR:   r.MaxBindingsPerAOR,
		Path:                cfg.Upstream.Path,
		NodeID:              cfg.NodeID,
		NodeAddress:         cfg.SIP.NodeAddress,
		UpstreamContacts:    r.UpstreamContacts,
		RefreshPush:         r.RefreshPush,
		RefreshBefore:       r.RefreshBefore,
		RefreshPushType:     r.RefreshPushType,
		RefreshPushInterval: r.RefreshPushInterval,
		InactivityTimeout:   r.InactivityTimeout,
		OnBehalf: registrar.OnBehalfConfig{
			Auth:              r.OnBehalf.Auth,
			Domains:           domains,
			MaxAuthFailures:   r.OnBehalf.MaxAuthFailures,
			WipeOnAuthFailure: r.OnBehalf.WipeOnAuthFailure,
			WipeOnInactivity:  r.OnBehalf.WipeOnInactivity,
			Concurrency:       r.OnBehalf.Concurrency,
		},
		Keyring: keyring,
		Server:  srv,
		Pusher:  rp,
	}, st, log.Named("registrar"), reg)
	if err != nil {
		return nil, err
	}
	wk, err := wake.New(wake.Config{
		NodeID:               cfg.NodeID,
		HoldTimeout:          cfg.Wake.InviteHoldTimeout,
		CallerFeedback:       cfg.Wake.CallerFeedback,
		NoAnswerStatus:       cfg.Wake.NoAnswerStatus,
		MissedCallPush:       cfg.Wake.MissedCallPush,
		IncludeCaller:        cfg.Push.IncludeCaller,
		CancelledDelivery:    cfg.Wake.CancelledCallDelivery,
		AwakePushDelay:       cfg.Wake.AwakePushDelay,
		MessageAcceptTimeout: cfg.Wake.MessageAcceptTimeout,
		MessageTTL:           cfg.Wake.MessageTTL,
		MessagePreview:       cfg.Wake.MessagePreview,
		MessageLateDelivery:  cfg.Wake.MessageLateDelivery,
		Router:               reg2,
		Server:               srv,
		Store:                st,
		Pusher:               pusher,
		Logger:               log.Named("wake"),
		Registerer:           reg,
	})
	if err != nil {
		return nil, err
	}
	return []proxy.Module{
		// 1. sanity: first, so nothing after it sees a request that is
		// malformed for a proxy (RFC 3261 §16.3), and so that draining
		// refuses new work before any module starts on it.
		proxy.NewSanity(srv),
		// 2. registrar: REGISTERs end here (relayed to the PBX by the
		// registrar itself); requests for a sipwake contact are resolved
		// to their device for the modules after it and the forwarder.
		reg2,
		// 3. wake: after the registrar, whose resolved binding (and the
		// woken devices' accepted REGISTERs) it relies on. It holds
		// initial INVITEs from the PBX for push-capable devices and
		// stores MESSAGEs for devices that cannot take them now.
		wk,
		// The forwarder follows: device → PBX, PBX → resolved device,
		// in-dialog along our route set; anything else 403/404.
	}, nil
}
