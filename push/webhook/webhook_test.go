package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/push/pushtest"
	"github.com/sipwake/sipwake/push/webhook"
)

// receiver is a webhook endpoint that records what it gets.
type receiver struct {
	mu      sync.Mutex
	bodies  [][]byte
	headers []http.Header
	status  int
	header  http.Header
	hang    chan struct{}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.bodies = append(r.bodies, body)
	r.headers = append(r.headers, req.Header.Clone())
	status, hang := r.status, r.hang
	for k, v := range r.header {
		w.Header()[k] = v
	}
	r.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-req.Context().Done():
		}
	}
	if status == 0 {
		status = http.StatusNoContent
	}
	if status == http.StatusMovedPermanently {
		w.Header().Set("Location", "/elsewhere")
	}
	w.WriteHeader(status)
}

func (r *receiver) set(status int, header http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status, r.header = status, header
}

func (r *receiver) last(t *testing.T) ([]byte, http.Header) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bodies) == 0 {
		t.Fatal("the webhook received nothing")
	}
	return r.bodies[len(r.bodies)-1], r.headers[len(r.headers)-1]
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

func serve(t *testing.T) (*receiver, *httptest.Server) {
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	return rec, srv
}

func writeFile(t *testing.T, data string) string {
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newNotifier(t *testing.T, o webhook.Options) *webhook.Notifier {
	t.Helper()
	n, err := webhook.New(o)
	if err != nil {
		t.Fatalf("webhook.New: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func note() *push.Notification {
	return &push.Notification{
		Target: push.Target{Provider: "webpush", Token: "https://push.example/sub/abcdef123456", Param: "vapid"},
		Type:   push.TypeAlert,
		Payload: push.Payload{Event: push.EventCallMissed, CallID: "c-9@pbx", AOR: "sip:1001@pbx.test",
			FromURI: "sip:1002@pbx.test"},
		Alert:      &push.Alert{Title: "1002", Body: "Missed call"},
		Expiration: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		CollapseID: "missed-c-9",
	}
}

func TestBodyAndSignature(t *testing.T) {
	rec, srv := serve(t)
	n := newNotifier(t, webhook.Options{URL: srv.URL + "/push", SecretFile: writeFile(t, "  s3cret \nsecond line\n")})
	before := time.Now().Unix()
	if _, err := n.Notify(ctx(t), note()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	body, h := rec.last(t)
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	want := map[string]any{
		"sipwake": map[string]any{"event": "call_missed", "call_id": "c-9@pbx", "uuid": push.UUIDFromCallID("c-9@pbx"),
			"aor": "sip:1001@pbx.test", "from_uri": "sip:1002@pbx.test"},
		"target":      map[string]any{"provider": "webpush", "token": "https://push.example/sub/abcdef123456", "param": "vapid"},
		"type":        "alert",
		"alert":       map[string]any{"title": "1002", "body": "Missed call"},
		"expires_at":  "2030-01-02T03:04:05Z",
		"collapse_id": "missed-c-9",
	}
	ts, _ := got["timestamp"].(float64)
	delete(got, "timestamp")
	if gj, wj := mustJSON(t, got), mustJSON(t, want); gj != wj {
		t.Errorf("body\n got %s\nwant %s", gj, wj)
	}
	if int64(ts) < before || int64(ts) > time.Now().Unix() {
		t.Errorf("timestamp %v not now", ts)
	}
	if h.Get(webhook.HeaderTimestamp) != strconv.FormatInt(int64(ts), 10) {
		t.Errorf("%s = %q, body timestamp %v", webhook.HeaderTimestamp, h.Get(webhook.HeaderTimestamp), ts)
	}
	// What a receiver does, independently of the package.
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write(body)
	if sig := h.Get(webhook.HeaderSignature); sig != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
		t.Errorf("signature %q does not verify with the first line of the secret file", sig)
	}
	if !webhook.Verify([]byte("s3cret"), body, h.Get(webhook.HeaderSignature)) {
		t.Errorf("Verify refused a good signature")
	}
	tampered := strings.Replace(string(body), "call_missed", "call", 1)
	if webhook.Verify([]byte("s3cret"), []byte(tampered), h.Get(webhook.HeaderSignature)) ||
		webhook.Verify([]byte("other"), body, h.Get(webhook.HeaderSignature)) {
		t.Errorf("Verify accepted a tampered body or a wrong secret")
	}
	if h.Get("Content-Type") != "application/json" {
		t.Errorf("content-type %q", h.Get("Content-Type"))
	}
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUnsignedAndPerTypeToken(t *testing.T) {
	rec, srv := serve(t)
	n := newNotifier(t, webhook.Options{URL: srv.URL})
	nt := note()
	nt.Type, nt.Alert, nt.Expiration, nt.CollapseID = push.TypeVoIP, nil, time.Time{}, ""
	nt.Target = push.Target{Provider: "apns", Token: "fallback", Tokens: map[string]string{"voip": "voiptok"}}
	nt.Payload.Event = push.EventCall
	if _, err := n.Notify(ctx(t), nt); err != nil {
		t.Fatal(err)
	}
	body, h := rec.last(t)
	if h.Get(webhook.HeaderSignature) != "" || h.Get(webhook.HeaderTimestamp) != "" {
		t.Errorf("unsigned webhook carries signature headers")
	}
	var b webhook.Body
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	if b.Target.Token != "voiptok" || b.Type != push.TypeVoIP || b.Alert != nil || b.ExpiresAt != "" || b.CollapseID != "" {
		t.Errorf("body %s", body)
	}
	if strings.Contains(string(body), `"param"`) {
		t.Errorf("empty param should be left out: %s", body)
	}
}

func TestStatuses(t *testing.T) {
	rec, srv := serve(t)
	n := newNotifier(t, webhook.Options{URL: srv.URL})
	retry := http.Header{"Retry-After": []string{"17"}}
	for _, tc := range []struct {
		status     int
		header     http.Header
		reason     string
		permanent  bool
		retryAfter time.Duration
	}{
		{200, nil, "", false, 0},
		{202, nil, "", false, 0},
		{204, nil, "", false, 0},
		{410, nil, push.ReasonUnregistered, true, 0},
		{429, retry, push.ReasonRateLimited, false, 17 * time.Second},
		{500, nil, push.ReasonServerError, false, 0},
		{503, retry, push.ReasonServerError, false, 17 * time.Second},
		{401, nil, push.ReasonAuth, false, 0},
		{403, nil, push.ReasonAuth, false, 0},
		{400, nil, push.ReasonBadRequest, false, 0},
		{404, nil, push.ReasonBadRequest, false, 0},
		{301, nil, push.ReasonBadRequest, false, 0},
	} {
		rec.set(tc.status, tc.header)
		res, err := n.Notify(ctx(t), note())
		if res.Status != tc.status {
			t.Errorf("%d: result status %d", tc.status, res.Status)
		}
		if tc.reason == "" {
			if err != nil {
				t.Errorf("%d: %v", tc.status, err)
			}
			continue
		}
		var pe *push.Error
		if !errors.As(err, &pe) || pe.Reason != tc.reason || pe.Permanent != tc.permanent ||
			pe.RetryAfter != tc.retryAfter || pe.Status != tc.status || pe.Provider != "webpush" {
			t.Errorf("%d: err = %#v, want %s permanent=%v retry=%v", tc.status, err, tc.reason, tc.permanent, tc.retryAfter)
		}
	}
	if got := rec.count(); got != 12 {
		t.Errorf("receiver got %d requests, want 12 (no redirect followed)", got)
	}
}

func TestTimeoutAndTLS(t *testing.T) {
	rec, srv := serve(t)
	rec.hang = make(chan struct{})
	defer close(rec.hang)
	n := newNotifier(t, webhook.Options{URL: srv.URL, Timeout: 200 * time.Millisecond})
	if _, err := n.Notify(ctx(t), note()); push.ReasonOf(err) != push.ReasonTimeout {
		t.Errorf("hanging webhook: err = %v, want timeout", err)
	}

	ca := pushtest.NewCA(t)
	tlsRec := &receiver{}
	ts := httptest.NewUnstartedServer(tlsRec)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{ca.ServerCertificate(t)}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	if _, err := newNotifier(t, webhook.Options{URL: ts.URL}).Notify(ctx(t), note()); push.ReasonOf(err) != push.ReasonNetwork {
		t.Errorf("untrusted certificate: err = %v, want network", err)
	}
	if _, err := newNotifier(t, webhook.Options{URL: ts.URL, CAFile: ca.WriteFile(t)}).Notify(ctx(t), note()); err != nil {
		t.Errorf("with CAFile: %v", err)
	}
	if tlsRec.count() != 1 {
		t.Errorf("TLS receiver got %d requests, want 1", tlsRec.count())
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts webhook.Options
		want string
	}{
		{"no url", webhook.Options{}, "url"},
		{"not a url", webhook.Options{URL: "push.example.com/hook"}, "url"},
		{"missing secret", webhook.Options{URL: "https://h/", SecretFile: "/nonexistent"}, "secret_file"},
		{"empty secret", webhook.Options{URL: "https://h/", SecretFile: writeFile(t, "\n\n")}, "secret_file"},
		{"missing ca", webhook.Options{URL: "https://h/", CAFile: "/nonexistent"}, "ca file"},
	} {
		_, err := webhook.New(tc.opts)
		if err == nil || !strings.HasPrefix(err.Error(), "webhook: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want a webhook error about %s", tc.name, err, tc.want)
		}
	}
}
