package apns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/push/apns"
	"github.com/sipwake/sipwake/push/pushtest"
)

const (
	bundle   = "com.example.phone"
	param    = "ABCDE12345." + bundle
	voipTok  = "aaaa1111bbbb2222cccc3333dddd4444eeee5555ffff6666aaaa1111bbbb2222"
	alertTok = "0000111122223333444455556666777788889999aaaabbbbccccddddeeeeffff"
	wait     = 5 * time.Second
)

// fakes is a production and a sandbox APNs sharing one CA and key.
type fakes struct {
	ca      *pushtest.CA
	prod    *pushtest.APNs
	sandbox *pushtest.APNs
	caFile  string
	keyFile string
}

func newFakes(t *testing.T) *fakes {
	t.Helper()
	ca := pushtest.NewCA(t)
	prod := pushtest.NewAPNs(t, ca)
	return &fakes{
		ca: ca, prod: prod, sandbox: pushtest.NewAPNsSandbox(t, prod),
		caFile: ca.WriteFile(t), keyFile: prod.WriteKey(t),
	}
}

func (f *fakes) tokenOptions() apns.Options {
	return apns.Options{
		KeyFile: f.keyFile, KeyID: f.prod.KeyID, TeamID: f.prod.TeamID,
		URL: f.prod.URL, SandboxURL: f.sandbox.URL, CAFile: f.caFile, Timeout: 3 * time.Second,
	}
}

func newNotifier(t *testing.T, opts apns.Options) *apns.Notifier {
	t.Helper()
	n, err := apns.New(opts)
	if err != nil {
		t.Fatalf("apns.New: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func callNote(provider string) *push.Notification {
	return &push.Notification{
		Target: push.Target{Provider: provider, Token: voipTok, Param: param},
		Type:   push.TypeVoIP,
		Payload: push.Payload{Event: push.EventCall, CallID: "a84b4c76e66710@pc33.example.com",
			AOR: "sip:1001@pbx.test", FromURI: "sip:1002@pbx.test", FromName: "Bob"},
		Expiration: time.Now().Add(30 * time.Second).Truncate(time.Second),
		CollapseID: push.CollapseID("a84b4c76e66710@pc33.example.com"),
	}
}

func TestEncodings(t *testing.T) {
	f := newFakes(t)
	n := newNotifier(t, f.tokenOptions())
	exp := time.Now().Add(time.Minute).Truncate(time.Second)
	multi := push.Target{Provider: "apns", Param: param + ".voip", Token: "ignored",
		Tokens: map[string]string{"voip": voipTok, "remote": alertTok}}
	tests := []struct {
		name        string
		note        push.Notification
		token       string
		pushType    string
		topic       string
		priority    string
		expiration  string
		collapse    string
		aps         map[string]any
		sipwakeKeys []string
	}{
		{
			name:  "voip call",
			note:  *callNote("apns"),
			token: voipTok, pushType: "voip", topic: bundle + ".voip", priority: "10",
			expiration:  strconv.FormatInt(callNote("apns").Expiration.Unix(), 10),
			collapse:    push.CollapseID("a84b4c76e66710@pc33.example.com"),
			aps:         map[string]any{},
			sipwakeKeys: []string{"aor", "call_id", "event", "from_name", "from_uri", "uuid"},
		},
		{
			name: "alert missed call with per-type token",
			note: push.Notification{Target: multi, Type: push.TypeAlert,
				Payload:    push.Payload{Event: push.EventCallMissed, CallID: "c1", FromURI: "sip:1002@pbx.test"},
				Alert:      &push.Alert{Title: "Bob", Body: "Missed call"},
				Expiration: exp, CollapseID: "missed-c1"},
			token: alertTok, pushType: "alert", topic: bundle, priority: "10",
			expiration: strconv.FormatInt(exp.Unix(), 10), collapse: "missed-c1",
			aps: map[string]any{"alert": map[string]any{"title": "Bob", "body": "Missed call"},
				"mutable-content": float64(1)},
			sipwakeKeys: []string{"call_id", "event", "from_uri", "uuid"},
		},
		{
			name: "alert message default text",
			note: push.Notification{Target: push.Target{Provider: "apns", Token: alertTok, Param: param},
				Type: push.TypeAlert, Payload: push.Payload{Event: push.EventMessage, FromName: "Alice", Body: "hi"}},
			token: alertTok, pushType: "alert", topic: bundle, priority: "10",
			aps: map[string]any{"alert": map[string]any{"title": "Alice", "body": "hi"},
				"mutable-content": float64(1)},
			sipwakeKeys: []string{"body", "event", "from_name"},
		},
		{
			name: "background register",
			note: push.Notification{Target: push.Target{Provider: "apns", Token: alertTok, Param: param},
				Type: push.TypeBackground, Payload: push.Payload{Event: push.EventRegister, AOR: "sip:1001@pbx.test"}},
			token: alertTok, pushType: "background", topic: bundle, priority: "5",
			aps:         map[string]any{"content-available": float64(1)},
			sipwakeKeys: []string{"aor", "event"},
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := n.Notify(ctx(t), &tc.note)
			if err != nil {
				t.Fatalf("Notify: %v", err)
			}
			if res.Status != 200 || res.ID == "" {
				t.Errorf("result = %+v, want 200 with an apns-id", res)
			}
			r := f.prod.WaitRequests(t, i+1, wait)[i]
			if r.Token != tc.token {
				t.Errorf("token = %q, want %q", r.Token, tc.token)
			}
			if r.Proto != "HTTP/2.0" {
				t.Errorf("proto = %s, want HTTP/2.0", r.Proto)
			}
			for _, h := range []struct{ name, got, want string }{
				{"apns-push-type", r.PushType(), tc.pushType},
				{"apns-topic", r.Topic(), tc.topic},
				{"apns-priority", r.Priority(), tc.priority},
				{"apns-expiration", r.Expiration(), tc.expiration},
				{"apns-collapse-id", r.CollapseID(), tc.collapse},
			} {
				if h.got != h.want {
					t.Errorf("%s = %q, want %q", h.name, h.got, h.want)
				}
			}
			if fmt.Sprint(r.APS()) != fmt.Sprint(tc.aps) {
				t.Errorf("aps = %v, want %v", r.APS(), tc.aps)
			}
			sw := r.Sipwake()
			var keys []string
			for k, v := range sw {
				keys = append(keys, k)
				if _, ok := v.(string); !ok {
					t.Errorf("sipwake.%s = %v is not a string", k, v)
				}
			}
			slices.Sort(keys)
			if !slices.Equal(keys, tc.sipwakeKeys) {
				t.Errorf("sipwake keys = %v, want %v", keys, tc.sipwakeKeys)
			}
			if sw["event"] != string(tc.note.Payload.Event) {
				t.Errorf("sipwake.event = %v", sw["event"])
			}
			if id := tc.note.Payload.CallID; id != "" && sw["uuid"] != push.UUIDFromCallID(id) {
				t.Errorf("sipwake.uuid = %v, want %s", sw["uuid"], push.UUIDFromCallID(id))
			}
		})
	}
}

func TestVoIPOnlyForIncomingCalls(t *testing.T) {
	f := newFakes(t)
	n := newNotifier(t, f.tokenOptions())
	for _, ev := range []push.Event{push.EventCallMissed, push.EventMessage, push.EventCallCancelled, push.EventRegister, ""} {
		note := callNote("apns")
		note.Payload.Event = ev
		_, err := n.Notify(ctx(t), note)
		var pe *push.Error
		if !errors.As(err, &pe) || pe.Reason != push.ReasonBadRequest || pe.Permanent {
			t.Errorf("event %q: err = %v, want a non-permanent bad_request", ev, err)
		}
	}
	if got := len(f.prod.Requests()); got != 0 {
		t.Errorf("APNs received %d pushes, want none", got)
	}
}

func TestErrorClassification(t *testing.T) {
	f := newFakes(t)
	n := newNotifier(t, f.tokenOptions())
	tests := []struct {
		reply      pushtest.Reply
		reason     string
		permanent  bool
		retryAfter time.Duration
	}{
		{pushtest.APNsUnregistered, push.ReasonUnregistered, true, 0},
		{pushtest.Reply{Status: 410, Reason: "ExpiredToken"}, push.ReasonUnregistered, true, 0},
		{pushtest.APNsBadDeviceToken, push.ReasonBadToken, true, 0},
		{pushtest.APNsDeviceTokenNotForTopic, push.ReasonTopicMismatch, true, 0},
		{pushtest.APNsTooManyRequests, push.ReasonRateLimited, false, 30 * time.Second},
		{pushtest.Reply{Status: 429, Reason: "TooManyProviderTokenUpdates"}, push.ReasonRateLimited, false, 0},
		{pushtest.APNsInternalServerError, push.ReasonServerError, false, 0},
		{pushtest.Reply{Status: 503, Reason: "ServiceUnavailable", RetryAfter: 7 * time.Second}, push.ReasonServerError, false, 7 * time.Second},
		{pushtest.Reply{Status: 403, Reason: "InvalidProviderToken"}, push.ReasonAuth, false, 0},
		{pushtest.Reply{Status: 403, Reason: "BadCertificateEnvironment"}, push.ReasonAuth, false, 0},
		{pushtest.Reply{Status: 400, Reason: "BadExpirationDate"}, push.ReasonBadRequest, false, 0},
		{pushtest.Reply{Status: 400, Reason: "TopicDisallowed"}, push.ReasonBadRequest, false, 0},
		{pushtest.Reply{Status: 413, Reason: "PayloadTooLarge"}, push.ReasonPayloadTooLong, false, 0},
		{pushtest.Reply{Status: 405, Reason: "MethodNotAllowed"}, push.ReasonBadRequest, false, 0},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprintf("%d_%s", tc.reply.Status, tc.reply.Reason), func(t *testing.T) {
			tok := fmt.Sprintf("%064x", i+1)
			f.prod.ReplyToken(tok, tc.reply)
			note := callNote("apns")
			note.Target.Token = tok
			res, err := n.Notify(ctx(t), note)
			var pe *push.Error
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *push.Error", err)
			}
			if pe.Reason != tc.reason || pe.Permanent != tc.permanent || pe.RetryAfter != tc.retryAfter {
				t.Errorf("got reason %s permanent %v retry-after %v, want %s %v %v",
					pe.Reason, pe.Permanent, pe.RetryAfter, tc.reason, tc.permanent, tc.retryAfter)
			}
			if pe.Status != tc.reply.Status || res.Status != tc.reply.Status || pe.Detail != tc.reply.Reason {
				t.Errorf("status %d/%d detail %q, want %d %q", pe.Status, res.Status, pe.Detail, tc.reply.Status, tc.reply.Reason)
			}
			if pe.Provider != "apns" || push.IsPermanent(err) != tc.permanent {
				t.Errorf("provider %q IsPermanent %v", pe.Provider, push.IsPermanent(err))
			}
			if !strings.HasPrefix(err.Error(), "push: apns: "+tc.reason) {
				t.Errorf("message %q", err.Error())
			}
		})
	}
}

func TestTimeoutAndNetworkErrors(t *testing.T) {
	f := newFakes(t)
	opts := f.tokenOptions()
	opts.Timeout = 300 * time.Millisecond
	n := newNotifier(t, opts)
	f.prod.ReplyAll(pushtest.Reply{Hang: true})
	start := time.Now()
	_, err := n.Notify(ctx(t), callNote("apns"))
	if push.ReasonOf(err) != push.ReasonTimeout {
		t.Errorf("hanging APNs: err = %v, want timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Notify took %v with a 300ms timeout", d)
	}
	// The caller's own deadline counts as well.
	f.prod.ReplyAll(pushtest.Reply{Hang: true})
	c, cancel := context.WithTimeout(ctx(t), 100*time.Millisecond)
	defer cancel()
	opts.Timeout = time.Minute
	if _, err := newNotifier(t, opts).Notify(c, callNote("apns")); push.ReasonOf(err) != push.ReasonTimeout {
		t.Errorf("caller deadline: err = %v, want timeout", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + l.Addr().String()
	l.Close()
	opts = f.tokenOptions()
	opts.URL = dead
	_, err = newNotifier(t, opts).Notify(ctx(t), callNote("apns"))
	var pe *push.Error
	if !errors.As(err, &pe) || pe.Reason != push.ReasonNetwork || pe.Permanent || pe.Status != 0 {
		t.Errorf("closed port: err = %v, want network", err)
	}
	if err != nil && strings.Contains(err.Error(), voipTok) {
		t.Errorf("the error names the device token: %v", err)
	}
}

func TestTLSNeedsTheCA(t *testing.T) {
	f := newFakes(t)
	opts := f.tokenOptions()
	opts.CAFile = ""
	_, err := newNotifier(t, opts).Notify(ctx(t), callNote("apns"))
	if push.ReasonOf(err) != push.ReasonNetwork {
		t.Errorf("without CAFile: err = %v, want a network (certificate) error", err)
	}
	if len(f.prod.Requests()) != 0 {
		t.Errorf("a push went through to an untrusted server")
	}
}

func TestAuthRefused(t *testing.T) {
	f := newFakes(t)
	opts := f.tokenOptions()
	opts.KeyID = "WRONGKEY00"
	_, err := newNotifier(t, opts).Notify(ctx(t), callNote("apns"))
	var pe *push.Error
	if !errors.As(err, &pe) || pe.Reason != push.ReasonAuth || pe.Detail != "InvalidProviderToken" || pe.Permanent {
		t.Errorf("err = %v, want auth InvalidProviderToken", err)
	}
	other := pushtest.NewAPNs(t, f.ca) // a key APNs does not know
	opts = f.tokenOptions()
	opts.KeyFile = other.WriteKey(t)
	_, err = newNotifier(t, opts).Notify(ctx(t), callNote("apns"))
	if push.ReasonOf(err) != push.ReasonAuth {
		t.Errorf("foreign key: err = %v, want auth", err)
	}
}

func TestProviderTokenReused(t *testing.T) {
	f := newFakes(t)
	n := newNotifier(t, f.tokenOptions())
	const pushes = 30
	var wg sync.WaitGroup
	errs := make(chan error, pushes)
	for i := range pushes {
		wg.Go(func() {
			note := callNote("apns")
			if i%2 == 1 {
				note = callNote("apns.dev")
			}
			if _, err := n.Notify(ctx(t), note); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Notify: %v", err)
	}
	got := append(f.prod.Bearers(), f.sandbox.Bearers()...)
	if len(f.prod.Requests())+len(f.sandbox.Requests()) != pushes {
		t.Fatalf("fakes got %d+%d pushes, want %d", len(f.prod.Requests()), len(f.sandbox.Requests()), pushes)
	}
	if len(got) != 2 || got[0] != got[1] {
		t.Fatalf("provider tokens seen = %d distinct per host %v, want one shared", len(got), len(got))
	}

	// Still inside the renewal window at 49 minutes: same token.
	n.AgeProviderToken(49 * time.Minute)
	if _, err := n.Notify(ctx(t), callNote("apns")); err != nil {
		t.Fatal(err)
	}
	if b := f.prod.Bearers(); len(b) != 1 {
		t.Errorf("token renewed at 49 minutes: %d tokens", len(b))
	}
	// At 51 minutes it must have been renewed, and APNs accepts the new one.
	n.AgeProviderToken(2 * time.Minute)
	for range 3 {
		if _, err := n.Notify(ctx(t), callNote("apns")); err != nil {
			t.Fatal(err)
		}
	}
	if b := f.prod.Bearers(); len(b) != 2 {
		t.Errorf("after 51 minutes: %d distinct tokens, want 2 (one renewal)", len(b))
	}
}

func TestConnectionReused(t *testing.T) {
	f := newFakes(t)
	n := newNotifier(t, f.tokenOptions())
	for range 10 {
		if _, err := n.Notify(ctx(t), callNote("apns")); err != nil {
			t.Fatal(err)
		}
	}
	addrs := map[string]bool{}
	for _, r := range f.prod.WaitRequests(t, 10, wait) {
		addrs[r.RemoteAddr] = true
	}
	if len(addrs) != 1 {
		t.Errorf("10 pushes used %d connections, want 1", len(addrs))
	}
}

func TestSandboxAndProduction(t *testing.T) {
	f := newFakes(t)
	n := newNotifier(t, f.tokenOptions())
	for _, tc := range []struct {
		provider string
		want     *pushtest.APNs
		other    *pushtest.APNs
	}{
		{"apns", f.prod, f.sandbox},
		{"apns.dev", f.sandbox, f.prod},
	} {
		f.prod.Reset()
		f.sandbox.Reset()
		if _, err := n.Notify(ctx(t), callNote(tc.provider)); err != nil {
			t.Fatalf("%s: %v", tc.provider, err)
		}
		tc.want.WaitRequests(t, 1, wait)
		if got := len(tc.other.Requests()); got != 0 {
			t.Errorf("%s: the other host got %d pushes", tc.provider, got)
		}
	}
	// A target of another provider is refused without a request.
	note := callNote("fcm")
	if _, err := n.Notify(ctx(t), note); push.ReasonOf(err) != push.ReasonNoProvider {
		t.Errorf("fcm target: err = %v, want no_provider", err)
	}
}

func TestCertificateAuth(t *testing.T) {
	f := newFakes(t)
	voipCert := f.prod.WriteCertificate(t, bundle+".voip")
	universal := f.prod.WriteCertificate(t, "com.example.other", "com.example.other", "com.example.other.voip")
	n := newNotifier(t, apns.Options{
		Certificates: []string{voipCert, universal},
		URL:          f.prod.URL, SandboxURL: f.sandbox.URL, CAFile: f.caFile, Timeout: 3 * time.Second,
	})
	if _, err := n.Notify(ctx(t), callNote("apns")); err != nil {
		t.Fatalf("voip with the voip certificate: %v", err)
	}
	r := f.prod.WaitRequests(t, 1, wait)[0]
	if !r.ClientCert || r.CertUID != bundle+".voip" || r.Bearer != "" || r.Topic() != bundle+".voip" {
		t.Errorf("request: cert %v uid %q bearer %q topic %q", r.ClientCert, r.CertUID, r.Bearer, r.Topic())
	}
	note := callNote("apns.dev")
	note.Target.Param = "ABCDE12345.com.example.other"
	if _, err := n.Notify(ctx(t), note); err != nil {
		t.Fatalf("voip with the universal certificate: %v", err)
	}
	if r := f.sandbox.WaitRequests(t, 1, wait)[0]; r.CertUID != "com.example.other" || r.Topic() != "com.example.other.voip" {
		t.Errorf("sandbox request: uid %q topic %q", r.CertUID, r.Topic())
	}
	// No certificate serves the alert topic and there is no token.
	alert := callNote("apns")
	alert.Type = push.TypeAlert
	_, err := n.Notify(ctx(t), alert)
	var pe *push.Error
	if !errors.As(err, &pe) || pe.Reason != push.ReasonNoProvider || pe.Permanent {
		t.Errorf("alert without a certificate for %s: err = %v, want no_provider", bundle, err)
	}

	// A certificate naming no topic serves every topic; a certificate
	// naming the topic wins over the provider token.
	anyCert := f.prod.WriteCertificate(t, "")
	opts := f.tokenOptions()
	opts.Certificates = []string{voipCert}
	both := newNotifier(t, opts)
	f.prod.Reset()
	if _, err := both.Notify(ctx(t), callNote("apns")); err != nil {
		t.Fatal(err)
	}
	if _, err := both.Notify(ctx(t), alert); err != nil {
		t.Fatal(err)
	}
	rs := f.prod.WaitRequests(t, 2, wait)
	if !rs[0].ClientCert || rs[0].Bearer != "" {
		t.Errorf("voip push should use the voip certificate: %+v", rs[0].CertUID)
	}
	if rs[1].Bearer == "" {
		t.Errorf("alert push should use the provider token")
	}
	fallback := newNotifier(t, apns.Options{Certificates: []string{anyCert}, URL: f.prod.URL, CAFile: f.caFile})
	if _, err := fallback.Notify(ctx(t), alert); err != nil {
		t.Errorf("certificate without topic: %v", err)
	}
}

func TestCertTopics(t *testing.T) {
	f := newFakes(t)
	for _, tc := range []struct {
		uid    string
		topics []string
		want   []string
	}{
		{bundle, nil, []string{bundle}},
		{bundle + ".voip", nil, []string{bundle + ".voip"}},
		{"com.x", []string{"com.x", "com.x.voip", "com.x.complication"}, []string{"com.x", "com.x.voip", "com.x.complication"}},
		{"", nil, nil},
	} {
		got, err := apns.CertTopics(f.prod.WriteCertificate(t, tc.uid, tc.topics...))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("uid %q topics %v: got %v, want %v", tc.uid, tc.topics, got, tc.want)
		}
	}
}

func TestRefusedBeforeSending(t *testing.T) {
	f := newFakes(t)
	n := newNotifier(t, f.tokenOptions())
	big := callNote("apns")
	big.Payload.FromName = strings.Repeat("x", 5200)
	noTok := callNote("apns")
	noTok.Target.Token = ""
	noParam := callNote("apns")
	noParam.Target.Param = ""
	badType := callNote("apns")
	badType.Type = "sms"
	data := callNote("apns")
	data.Type = push.TypeData
	for _, tc := range []struct {
		name   string
		note   *push.Notification
		reason string
	}{
		{"too large", big, push.ReasonPayloadTooLong},
		{"no token", noTok, push.ReasonBadRequest},
		{"no topic with token auth", noParam, push.ReasonBadRequest},
		{"unknown type", badType, push.ReasonBadRequest},
		{"data type", data, push.ReasonBadRequest},
		{"nil", nil, push.ReasonBadRequest},
	} {
		if _, err := n.Notify(ctx(t), tc.note); push.ReasonOf(err) != tc.reason || push.IsPermanent(err) {
			t.Errorf("%s: err = %v, want %s", tc.name, err, tc.reason)
		}
	}
	if len(f.prod.Requests()) != 0 {
		t.Errorf("refused pushes reached APNs")
	}
}

func TestNewErrors(t *testing.T) {
	f := newFakes(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := f.tokenOptions()
	for _, tc := range []struct {
		name string
		mod  func(*apns.Options)
		want string
	}{
		{"no credentials", func(o *apns.Options) { *o = apns.Options{} }, "no credentials"},
		{"no key id", func(o *apns.Options) { o.KeyID = "" }, "key_id"},
		{"no team id", func(o *apns.Options) { o.TeamID = "" }, "team_id"},
		{"no key file", func(o *apns.Options) { o.KeyFile = "" }, "key_file"},
		{"missing key file", func(o *apns.Options) { o.KeyFile = "/nonexistent.p8" }, "key_file"},
		{"not a p8", func(o *apns.Options) { o.KeyFile = garbage }, "key_file"},
		{"bad url", func(o *apns.Options) { o.URL = "http://127.0.0.1:1" }, "url"},
		{"bad sandbox url", func(o *apns.Options) { o.SandboxURL = "api.push.apple.com" }, "sandbox_url"},
		{"missing ca", func(o *apns.Options) { o.CAFile = "/nonexistent.pem" }, "ca file"},
		{"ca without certificate", func(o *apns.Options) { o.CAFile = garbage }, "no PEM certificate"},
		{"bad certificate", func(o *apns.Options) { o.Certificates = []string{garbage} }, "certificate"},
	} {
		o := ok
		tc.mod(&o)
		_, err := apns.New(o)
		if err == nil || !strings.HasPrefix(err.Error(), "apns: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want an apns error about %s", tc.name, err, tc.want)
		}
	}
	if _, err := apns.New(ok); err != nil {
		t.Errorf("valid options: %v", err)
	}
}
