package push_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/push/apns"
	"github.com/sipwake/sipwake/push/fcm"
	"github.com/sipwake/sipwake/push/pushtest"
	"github.com/sipwake/sipwake/push/webhook"
)

// TestDispatcherWithRealAdapters wires the real APNs, FCM and webhook
// notifiers to the fakes: APNs hangs, and FCM and the webhook still
// deliver at once.
func TestDispatcherWithRealAdapters(t *testing.T) {
	ca := pushtest.NewCA(t)
	caFile := ca.WriteFile(t)
	apple := pushtest.NewAPNs(t, ca)
	google := pushtest.NewFCM(t, ca)
	var hooked atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hooked.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(hook.Close)

	an, err := apns.New(apns.Options{KeyFile: apple.WriteKey(t), KeyID: apple.KeyID, TeamID: apple.TeamID,
		URL: apple.URL, SandboxURL: apple.URL, CAFile: caFile, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fn, err := fcm.New(fcm.Options{Projects: []fcm.Project{{ProjectID: "proj", CredentialsFile: google.WriteServiceAccount(t, "proj")}},
		Endpoint: google.Endpoint, CAFile: caFile, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	wn, err := webhook.New(webhook.Options{URL: hook.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = an.Close(); _ = fn.Close(); _ = wn.Close() })

	d := push.NewDispatcher(push.DispatcherOptions{QueueSize: 2, Workers: 1, Timeout: 5 * time.Second,
		Registerer: prometheus.NewRegistry()})
	t.Cleanup(func() { _ = d.Close() })
	for _, p := range []string{push.ProviderAPNs, push.ProviderAPNsDev} {
		if err := d.Register(p, an); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Register(push.ProviderFCM, fn); err != nil {
		t.Fatal(err)
	}
	if err := d.SetFallback(wn); err != nil {
		t.Fatal(err)
	}

	apple.ReplyAll(pushtest.Reply{Hang: true})
	call := func(provider, tok, param string) *push.Notification {
		return &push.Notification{Target: push.Target{Provider: provider, Token: tok, Param: param},
			Type: push.TypeVoIP, Payload: push.Payload{Event: push.EventCall, CallID: "c1"}}
	}
	appleDone := make(chan error, 10)
	refused := 0
	for range 5 {
		if err := d.Send(call("apns", "ab12cd34ab12cd34", "TEAM.com.example"), func(_ push.Result, err error) { appleDone <- err }); err != nil {
			if push.ReasonOf(err) != push.ReasonQueueFull {
				t.Fatalf("apns Send: %v", err)
			}
			refused++
		}
	}
	if refused == 0 {
		t.Errorf("the hanging APNs queue never filled")
	}
	apple.WaitRequests(t, 1, 5*time.Second) // the worker is stuck in APNs

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := d.Notify(ctx, call("fcm", "fcm-token", "proj")); err != nil {
		t.Fatalf("fcm behind a hanging APNs: %v", err)
	}
	if _, err := d.Notify(ctx, call("webpush", "https://push.example/x", "")); err != nil {
		t.Fatalf("webhook behind a hanging APNs: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("FCM and webhook took %v while APNs hung", took)
	}
	if google.WaitRequests(t, 1, time.Second)[0].Message.Token != "fcm-token" || hooked.Load() != 1 {
		t.Errorf("fcm or webhook did not receive the push")
	}
	apple.Release()
	for range 5 - refused {
		select {
		case err := <-appleDone:
			if err != nil {
				t.Errorf("apns push after release: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("apns pushes not done after release")
		}
	}
}
