package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/proxy/wake"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/embedded"
)

// Device tokens of the seeded bindings: long enough that push.Mask keeps only a tail, so
// a full token in any answer is a leak.
const (
	tokAPNsRemote = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1r3m0t3"
	tokAPNsVoIP   = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2v01p99"
	tokFCM        = "fcm-c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3:APA91bHfcmtok"
	tokVoIPOnly   = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4onlyvp"
	tokDead       = "e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5dead00"
	tokAdHoc      = "f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6adhoc1"
	adminToken    = "s3cret-admin-token"
)

// adminSecrets must never appear in full in an admin API answer or CLI output.
var adminSecrets = []string{tokAPNsRemote, tokAPNsVoIP, tokFCM, tokVoIPOnly, tokDead, tokAdHoc}

const (
	instAPNs    = "urn:uuid:0a0a0a0a-1111-4222-8333-444444444444"
	instFCM     = "pn:0123456789abcdef0123456789abcdef"
	instNoPush  = "contact:sip:1003@10.0.0.9:5060"
	instVoIPOne = "urn:uuid:0b0b0b0b-1111-4222-8333-444444444444"
	instDead    = "urn:uuid:0c0c0c0c-1111-4222-8333-444444444444"
)

// fakeNotifier records every push and answers with the error configured for its token.
type fakeNotifier struct {
	mu   sync.Mutex
	sent []push.Notification
	fail map[string]error
}

func (f *fakeNotifier) Notify(ctx context.Context, n *push.Notification) (push.Result, error) {
	if err := ctx.Err(); err != nil {
		return push.Result{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, *n)
	if err := f.fail[n.Target.TokenFor(n.Type)]; err != nil {
		var pe *push.Error
		if errors.As(err, &pe) {
			return push.Result{Status: pe.Status}, err
		}
		return push.Result{}, err
	}
	return push.Result{ID: "push-id-1", Status: http.StatusOK}, nil
}

func (f *fakeNotifier) take() []push.Notification {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.sent
	f.sent = nil
	return out
}

// openAdminStore opens an embedded store in a temporary directory, seeded with the test
// bindings, and closes it at the end of the test.
func openAdminStore(t *testing.T) store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := embedded.Open(ctx, embedded.Options{Path: filepath.Join(t.TempDir(), "sipwake.db"), NodeID: "node-a", SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("store close: %v", err)
		}
	})
	now := time.Now()
	exp := now.Add(time.Hour).Truncate(time.Second)
	seed := []store.Binding{
		{AOR: "sip:1003@pbx.test", Instance: instAPNs, SIPInstance: "<" + instAPNs + ">", Contact: "sip:1003@198.51.100.7:50123;transport=tcp",
			Source: "198.51.100.7:50123", Transport: "tcp", Flow: store.Flow{Node: "node-a", Conn: "198.51.100.7:50123"},
			Push: &store.PushTarget{Provider: push.ProviderAPNs, Token: tokAPNsVoIP, Param: "TEAM1.com.example.phone",
				Types: []string{registrar.PushTypeVoIP, registrar.PushTypeRemote}, Tokens: map[string]string{"voip": tokAPNsVoIP, "remote": tokAPNsRemote}},
			Token: "ctok1", Expires: exp, UserAgent: "ExamplePhone/1.0 iOS", LastSeen: now.Add(-3 * time.Minute)},
		{AOR: "sip:1003@pbx.test", Instance: instFCM, Contact: "sip:1003@203.0.113.5:5060", Source: "203.0.113.5:5060", Transport: "udp",
			Flow: store.Flow{Node: "node-b"}, Push: &store.PushTarget{Provider: push.ProviderFCM, Token: tokFCM, Param: "proj-1", Types: []string{registrar.PushTypeData}},
			Token: "ctok2", Expires: exp, UserAgent: "ExamplePhone/1.0 Android", LastSeen: now.Add(-2 * time.Minute)},
		{AOR: "sip:1003@pbx.test", Instance: instNoPush, Contact: "sip:1003@10.0.0.9:5060", Source: "10.0.0.9:5060", Transport: "udp",
			Flow: store.Flow{Node: "node-a"}, Token: "ctok3", Expires: exp, UserAgent: "Desk", LastSeen: now.Add(-time.Minute)},
		{AOR: "sip:2000@pbx.test", Instance: instVoIPOne, Contact: "sip:2000@198.51.100.8:40000;transport=tls", Source: "198.51.100.8:40000", Transport: "tls",
			Flow: store.Flow{Node: "node-a"}, Push: &store.PushTarget{Provider: push.ProviderAPNsDev, Token: tokVoIPOnly, Param: "TEAM1.com.example.phone.voip", Types: []string{registrar.PushTypeVoIP}},
			Token: "ctok4", Expires: exp, LastSeen: now},
		{AOR: "sip:3000@pbx.test", Instance: instDead, Contact: "sip:3000@198.51.100.9:40000", Source: "198.51.100.9:40000", Transport: "tcp",
			Flow: store.Flow{Node: "node-a"}, Push: &store.PushTarget{Provider: push.ProviderAPNs, Token: tokDead, Param: "TEAM1.com.example.phone", Types: []string{registrar.PushTypeRemote}},
			Token: "ctok5", Expires: exp, LastSeen: now},
		{AOR: "sip:john%20doe@pbx.test", Instance: "contact:sip:john@192.0.2.1", Contact: "sip:john@192.0.2.1", Source: "192.0.2.1:5060", Transport: "udp",
			Token: "ctok6", Expires: exp, LastSeen: now},
	}
	for _, b := range seed {
		if _, err := st.PutBinding(ctx, b, 10); err != nil {
			t.Fatalf("seed %s %s: %v", b.AOR, b.Instance, err)
		}
	}
	return st
}

// adminFixture is a running admin server and what it serves.
type adminFixture struct {
	srv    *adminServer
	base   string
	token  string
	store  store.Store
	push   *fakeNotifier
	level  zap.AtomicLevel
	held   []wake.HeldInfo
	heldMu sync.Mutex
}

type adminOpt func(*adminDeps)

func withoutPush(d *adminDeps) { d.Push = nil }

// startAdmin starts an admin server on 127.0.0.1:0 over a seeded embedded store and a
// fake notifier, and stops it at the end of the test.
func startAdmin(t *testing.T, token string, opts ...adminOpt) *adminFixture {
	t.Helper()
	return startAdminLog(t, token, zap.NewNop(), opts...)
}

// startAdminLog is startAdmin with the admin server logging to log.
func startAdminLog(t *testing.T, token string, log *zap.Logger, opts ...adminOpt) *adminFixture {
	t.Helper()
	f := &adminFixture{token: token, store: openAdminStore(t), push: &fakeNotifier{}, level: zap.NewAtomicLevelAt(zapcore.InfoLevel)}
	f.push.fail = map[string]error{
		tokDead: &push.Error{Provider: push.ProviderAPNs, Status: http.StatusGone, Reason: push.ReasonUnregistered,
			Detail: "Unregistered for token " + tokDead, Permanent: true},
	}
	deps := adminDeps{
		Store: f.store,
		Held: func() []wake.HeldInfo {
			f.heldMu.Lock()
			defer f.heldMu.Unlock()
			return append([]wake.HeldInfo(nil), f.held...)
		},
		Push:  f.push,
		Level: f.level,
	}
	for _, o := range opts {
		o(&deps)
	}
	s, err := newAdminServer("127.0.0.1:0", token, deps, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("admin Shutdown: %v", err)
		}
	})
	f.srv, f.base = s, "http://"+s.Addr().String()
	return f
}

var adminHTTP = &http.Client{Timeout: 20 * time.Second}

// do sends one request with the fixture's token and returns status and body. Every
// answer must be JSON and must not hold any full device token.
func (f *adminFixture) do(t *testing.T, method, path, body string) (int, string, http.Header) {
	t.Helper()
	return f.doToken(t, method, path, body, f.token)
}

func (f *adminFixture) doToken(t *testing.T, method, path, body, token string) (int, string, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := adminHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusNoContent {
		if len(data) != 0 {
			t.Errorf("%s %s: 204 with a body: %q", method, path, data)
		}
	} else {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", method, path, ct)
		}
		if !json.Valid(data) {
			t.Errorf("%s %s: body is not JSON: %q", method, path, data)
		}
	}
	assertNoSecrets(t, method+" "+path, string(data))
	return resp.StatusCode, string(data), resp.Header
}

func assertNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, sec := range adminSecrets {
		if strings.Contains(s, sec) {
			t.Errorf("%s: answer holds the full token %s…", what, sec[:8])
		}
	}
}

// wantError checks an error answer: status and a message containing want.
func wantError(t *testing.T, what string, code int, body string, wantCode int, want string) {
	t.Helper()
	var e adminError
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("%s: %v in %q", what, err, body)
	}
	if code != wantCode || e.Error == "" || !strings.Contains(e.Error, want) {
		t.Errorf("%s = %d %q, want %d with %q", what, code, e.Error, wantCode, want)
	}
}

func TestAdminAuth(t *testing.T) {
	f := startAdmin(t, adminToken)
	for _, tc := range []struct {
		name, path, token string
	}{
		{"no token", "/v1/bindings", ""},
		{"wrong token", "/v1/bindings", "s3cret-admin-tokeX"},
		{"prefix of token", "/v1/bindings", "s3cret"},
		{"unknown path", "/v1/nope", ""},
	} {
		code, body, hdr := f.doToken(t, http.MethodGet, tc.path, "", tc.token)
		wantError(t, tc.name, code, body, http.StatusUnauthorized, "bearer token")
		if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q", tc.name, hdr.Get("WWW-Authenticate"))
		}
	}
	// Another scheme with the right credentials is refused too.
	req, _ := http.NewRequest(http.MethodGet, f.base+"/v1/bindings", nil)
	req.Header.Set("Authorization", "Basic "+adminToken)
	resp, err := adminHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Basic scheme = %d", resp.StatusCode)
	}
	if code, _, _ := f.do(t, http.MethodGet, "/v1/bindings", ""); code != http.StatusOK {
		t.Errorf("right token = %d", code)
	}
	// The scheme is case-insensitive (RFC 9110 §11.1).
	req, _ = http.NewRequest(http.MethodGet, f.base+"/v1/calls/held", nil)
	req.Header.Set("Authorization", "bearer "+adminToken)
	if resp, err = adminHTTP.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("lower-case scheme = %d", resp.StatusCode)
	}

	open := startAdmin(t, "")
	if code, _, _ := open.do(t, http.MethodGet, "/v1/bindings", ""); code != http.StatusOK {
		t.Errorf("no token configured = %d", code)
	}
}

func TestAdminRouting(t *testing.T) {
	f := startAdmin(t, "")
	for _, tc := range []struct {
		method, path string
		code         int
		allow        string
	}{
		{http.MethodGet, "/", http.StatusNotFound, ""},
		{http.MethodGet, "/v1/nope", http.StatusNotFound, ""},
		{http.MethodGet, "/v1/bindingsx", http.StatusNotFound, ""},
		{http.MethodPost, "/v1/bindings", http.StatusMethodNotAllowed, "GET"},
		{http.MethodPut, "/v1/bindings/sip:1003@pbx.test", http.StatusMethodNotAllowed, "GET, DELETE"},
		{http.MethodGet, "/v1/push/test", http.StatusMethodNotAllowed, "POST"},
		{http.MethodDelete, "/v1/log/level", http.StatusMethodNotAllowed, "GET, PUT"},
		{http.MethodPost, "/v1/calls/held", http.StatusMethodNotAllowed, "GET"},
		{http.MethodPut, "/v1/accounts/sip:1003@pbx.test", http.StatusNotImplemented, ""},
		{http.MethodGet, "/v1/accounts", http.StatusNotImplemented, ""},
		{http.MethodPost, "/v1/accounts/rekey", http.StatusNotImplemented, ""},
		{http.MethodGet, "/v1/accounts/sip:1003@pbx.test", http.StatusMethodNotAllowed, "PUT, DELETE"},
		{http.MethodPut, "/v1/accounts", http.StatusMethodNotAllowed, "GET"},
		{http.MethodGet, "/v1/accounts/rekey", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPost, "/v1/registrations", http.StatusMethodNotAllowed, "GET"},
	} {
		code, body, hdr := f.do(t, tc.method, tc.path, "")
		wantError(t, tc.method+" "+tc.path, code, body, tc.code, "")
		if hdr.Get("Allow") != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, hdr.Get("Allow"), tc.allow)
		}
	}
}

func TestAdminBindings(t *testing.T) {
	f := startAdmin(t, adminToken)

	list := func(query string) []map[string]any {
		t.Helper()
		code, body, _ := f.do(t, http.MethodGet, "/v1/bindings"+query, "")
		if code != http.StatusOK {
			t.Fatalf("GET /v1/bindings%s = %d %s", query, code, body)
		}
		var out struct{ Bindings []map[string]any }
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatal(err)
		}
		return out.Bindings
	}
	instances := func(bs []map[string]any) string {
		var s []string
		for _, b := range bs {
			s = append(s, b["instance"].(string))
		}
		return strings.Join(s, ",")
	}

	all := list("")
	if len(all) != 6 {
		t.Fatalf("listed %d bindings, want 6", len(all))
	}
	if got, want := instances(list("?aor=sip:1003@pbx.test")), strings.Join([]string{instNoPush, instFCM, instAPNs}, ","); got != want {
		t.Errorf("?aor= instances %s, want %s (sorted by instance)", got, want)
	}
	if got := instances(list("?aor=" + url.QueryEscape("1003@PBX.test"))); !strings.Contains(got, instFCM) {
		t.Errorf("?aor without scheme, upper-case host: %s", got)
	}
	if got := instances(list("?provider=fcm")); got != instFCM {
		t.Errorf("?provider=fcm: %s", got)
	}
	if got := instances(list("?aor=sip:1003@pbx.test&provider=apns")); got != instAPNs {
		t.Errorf("?aor&provider=apns: %s", got)
	}
	if got := list("?aor=sip:9999@pbx.test"); len(got) != 0 {
		t.Errorf("unknown aor listed %d", len(got))
	}
	code, body, _ := f.do(t, http.MethodGet, "/v1/bindings?aor=tel:%2B123", "")
	wantError(t, "?aor=tel:", code, body, http.StatusBadRequest, "not a sip or sips uri")

	// One binding's JSON, field by field.
	var apns, noPush map[string]any
	for _, b := range all {
		switch b["instance"] {
		case instAPNs:
			apns = b
		case instNoPush:
			noPush = b
		}
	}
	for k, want := range map[string]string{
		"aor": "sip:1003@pbx.test", "contact": "sip:1003@198.51.100.7:50123;transport=tcp", "transport": "tcp",
		"source": "198.51.100.7:50123", "node": "node-a", "user_agent": "ExamplePhone/1.0 iOS", "sip_instance": "<" + instAPNs + ">",
	} {
		if apns[k] != want {
			t.Errorf("binding %s = %v, want %q", k, apns[k], want)
		}
	}
	if exp, err := time.Parse(time.RFC3339, apns["expires_at"].(string)); err != nil || time.Until(exp) < 50*time.Minute {
		t.Errorf("expires_at %v: %v", apns["expires_at"], err)
	}
	p, _ := apns["push"].(map[string]any)
	if p["provider"] != "apns" || p["token"] != push.Mask(tokAPNsVoIP) || p["param"] != "TEAM1.com.example.phone" {
		t.Errorf("push = %v", p)
	}
	if !strings.HasSuffix(p["token"].(string), tokAPNsVoIP[len(tokAPNsVoIP)-6:]) {
		t.Errorf("push.token %v does not end with the token's last 6 characters", p["token"])
	}
	if types, _ := p["types"].([]any); len(types) != 2 || types[0] != "voip" || types[1] != "remote" {
		t.Errorf("push.types = %v", p["types"])
	}
	if toks, _ := p["tokens"].(map[string]any); toks["remote"] != push.Mask(tokAPNsRemote) {
		t.Errorf("push.tokens = %v", p["tokens"])
	}
	if _, ok := noPush["push"]; ok {
		t.Errorf("a binding without push target has push: %v", noPush["push"])
	}
	for _, k := range []string{"token", "flow", "upstream"} {
		if _, ok := apns[k]; ok {
			t.Errorf("binding JSON carries internal field %q", k)
		}
	}

	// GET /v1/bindings/{aor}: plain, percent-encoded, unnormalised.
	for _, path := range []string{
		"/v1/bindings/sip:1003@pbx.test",
		"/v1/bindings/sip%3A1003%40pbx.test",
		"/v1/bindings/sips:1003@PBX.TEST;transport=tls",
		"/v1/bindings/1003@pbx.test",
		"/v1/bindings/sip:%31003@pbx.test",   // %31 is "1", decoded as a path
		"/v1/bindings/sip:%2531003@pbx.test", // the user "%31003" is canonicalised to "1003"
	} {
		code, body, _ := f.do(t, http.MethodGet, path, "")
		var out adminBindings
		if err := json.Unmarshal([]byte(body), &out); err != nil || code != http.StatusOK || len(out.Bindings) != 3 {
			t.Errorf("GET %s = %d, %d bindings (%v)", path, code, len(out.Bindings), err)
		}
	}
	// An AOR whose user holds an escape: the client percent-encodes the whole AOR.
	code, body, _ = f.do(t, http.MethodGet, "/v1/bindings/"+url.PathEscape("sip:john%20doe@pbx.test"), "")
	if code != http.StatusOK || !strings.Contains(body, `"sip:john%20doe@pbx.test"`) {
		t.Errorf("escaped user = %d %s", code, body)
	}
	code, body, _ = f.do(t, http.MethodGet, "/v1/bindings/sip:9999@pbx.test", "")
	wantError(t, "unknown aor", code, body, http.StatusNotFound, "no live binding for sip:9999@pbx.test")
	for _, path := range []string{"/v1/bindings/tel:+123", "/v1/bindings/sip:pbx.test", "/v1/bindings/"} {
		code, body, _ = f.do(t, http.MethodGet, path, "")
		wantError(t, path, code, body, http.StatusBadRequest, "aor")
	}
}

func TestAdminDeleteBindings(t *testing.T) {
	f := startAdmin(t, adminToken)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	code, body, _ := f.do(t, http.MethodDelete, "/v1/bindings/sip%3A1003%40pbx.test?instance="+url.QueryEscape(instFCM), "")
	if code != http.StatusOK || body != `{"aor":"sip:1003@pbx.test","instance":"`+instFCM+`","deleted":1}`+"\n" {
		t.Fatalf("DELETE one = %d %s", code, body)
	}
	if bs, _ := f.store.Bindings(ctx, "sip:1003@pbx.test"); len(bs) != 2 {
		t.Fatalf("after deleting one instance, %d bindings remain", len(bs))
	}
	code, body, _ = f.do(t, http.MethodDelete, "/v1/bindings/sip:1003@pbx.test?instance="+url.QueryEscape(instFCM), "")
	wantError(t, "DELETE same instance again", code, body, http.StatusNotFound, instFCM)

	code, body, _ = f.do(t, http.MethodDelete, "/v1/bindings/sip:1003@pbx.test", "")
	if code != http.StatusOK || body != `{"aor":"sip:1003@pbx.test","deleted":2}`+"\n" {
		t.Fatalf("DELETE aor = %d %s", code, body)
	}
	if bs, _ := f.store.Bindings(ctx, "sip:1003@pbx.test"); len(bs) != 0 {
		t.Fatalf("after deleting the aor, %d bindings remain", len(bs))
	}
	code, body, _ = f.do(t, http.MethodDelete, "/v1/bindings/sip:1003@pbx.test", "")
	wantError(t, "DELETE empty aor", code, body, http.StatusNotFound, "no live binding")
	if bs, _ := f.store.Bindings(ctx, "sip:2000@pbx.test"); len(bs) != 1 {
		t.Errorf("another aor lost its binding")
	}
}

func TestAdminPushTest(t *testing.T) {
	f := startAdmin(t, adminToken)
	results := func(body string) []pushTestResult {
		t.Helper()
		code, out, _ := f.do(t, http.MethodPost, "/v1/push/test", body)
		if code != http.StatusOK {
			t.Fatalf("POST %s = %d %s", body, code, out)
		}
		var res pushTestResults
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		return res.Results
	}

	t.Run("aor alert", func(t *testing.T) {
		rs := results(`{"aor":"sip:1003@pbx.test"}`)
		if len(rs) != 2 {
			t.Fatalf("results %+v, want 2 (the binding without push is skipped)", rs)
		}
		if r := rs[0]; r.Instance != instAPNs || r.Provider != "apns" || r.Token != push.Mask(tokAPNsRemote) || r.Type != "alert" ||
			!r.Sent || !r.OK || r.Status != 200 || r.ID != "push-id-1" || r.AOR != "sip:1003@pbx.test" {
			t.Errorf("apns result %+v", r)
		}
		if r := rs[1]; r.Instance != instFCM || r.Provider != "fcm" || r.Token != push.Mask(tokFCM) || r.Type != "data" || !r.OK {
			t.Errorf("fcm result %+v", r)
		}
		sent := f.push.take()
		if len(sent) != 2 {
			t.Fatalf("%d pushes sent", len(sent))
		}
		for _, n := range sent {
			if n.Payload.Event != push.EventRegister || n.Payload.AOR != "sip:1003@pbx.test" || n.Payload.CallID != "" ||
				n.Alert == nil || n.Alert.Title != "sipwake test push" || n.Type == push.TypeVoIP ||
				time.Until(n.Expiration) > adminTestPushTTL || time.Until(n.Expiration) < time.Minute {
				t.Errorf("test push %+v", n)
			}
			if n.Target.IsAPNs() && (n.Type != push.TypeAlert || n.Target.TokenFor(n.Type) != tokAPNsRemote || n.Target.Topic(n.Type) != "com.example.phone") {
				t.Errorf("apns test push %+v", n)
			}
		}
	})

	t.Run("voip", func(t *testing.T) {
		rs := results(`{"aor":"sip:1003@pbx.test","type":"voip"}`)
		if len(rs) != 2 || !rs[0].OK || rs[0].Type != "voip" || rs[0].Token != push.Mask(tokAPNsVoIP) {
			t.Fatalf("results %+v", rs)
		}
		if r := rs[1]; r.Sent || r.OK || !strings.Contains(r.Error, "apple") {
			t.Errorf("fcm device asked for voip: %+v", r)
		}
		sent := f.push.take()
		if len(sent) != 1 {
			t.Fatalf("%d pushes sent, want 1", len(sent))
		}
		n := sent[0]
		if n.Type != push.TypeVoIP || n.Payload.Event != push.EventCall || !strings.HasPrefix(n.Payload.CallID, "sipwake-test-") ||
			n.Target.TokenFor(n.Type) != tokAPNsVoIP || n.CollapseID != push.CollapseID(n.Payload.CallID) || time.Until(n.Expiration) > adminTestCallTTL {
			t.Errorf("voip test push %+v", n)
		}
		// A fresh Call-ID each time.
		results(`{"aor":"sip:1003@pbx.test","instance":"` + instAPNs + `","type":"voip"}`)
		if again := f.push.take(); len(again) != 1 || again[0].Payload.CallID == n.Payload.CallID {
			t.Errorf("second voip test push %+v", again)
		}
	})

	t.Run("voip-only device gets no alert", func(t *testing.T) {
		rs := results(`{"aor":"sip:2000@pbx.test"}`)
		if len(rs) != 1 || rs[0].Sent || rs[0].OK || !strings.Contains(rs[0].Error, "only voip") {
			t.Errorf("results %+v", rs)
		}
		if sent := f.push.take(); len(sent) != 0 {
			t.Errorf("sent %+v", sent)
		}
	})

	t.Run("dead token", func(t *testing.T) {
		rs := results(`{"aor":"sip:3000@pbx.test","instance":"` + instDead + `"}`)
		if len(rs) != 1 {
			t.Fatalf("results %+v", rs)
		}
		r := rs[0]
		if !r.Sent || r.OK || !r.Permanent || r.Status != 410 || r.Reason != "unregistered" || !strings.Contains(r.Error, push.Mask(tokDead)) {
			t.Errorf("result %+v", r)
		}
		f.push.take()
		// A test push does not prune the token.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if bs, err := f.store.Bindings(ctx, "sip:3000@pbx.test"); err != nil || len(bs) != 1 || bs[0].Push == nil {
			t.Errorf("binding after a failed test push: %+v %v", bs, err)
		}
	})

	t.Run("explicit target", func(t *testing.T) {
		rs := results(`{"provider":"apns.dev","token":"` + tokAdHoc + `","param":"TEAM1.com.example.phone"}`)
		if len(rs) != 1 || !rs[0].OK || rs[0].Provider != "apns.dev" || rs[0].Token != push.Mask(tokAdHoc) || rs[0].AOR != "" || rs[0].Type != "alert" {
			t.Errorf("results %+v", rs)
		}
		sent := f.push.take()
		if len(sent) != 1 || sent[0].Target.Token != tokAdHoc || !sent[0].Target.Sandbox() || sent[0].Type != push.TypeAlert {
			t.Errorf("sent %+v", sent)
		}
		rs = results(`{"provider":"apns","token":"` + tokAdHoc + `","param":"TEAM1.com.example.phone","type":"voip"}`)
		if sent := f.push.take(); len(rs) != 1 || !rs[0].OK || len(sent) != 1 || sent[0].Type != push.TypeVoIP || sent[0].Target.Topic(push.TypeVoIP) != "com.example.phone.voip" {
			t.Errorf("voip explicit: %+v %+v", rs, sent)
		}
		rs = results(`{"provider":"webhook","token":"` + tokAdHoc + `"}`)
		if sent := f.push.take(); len(rs) != 1 || len(sent) != 1 || sent[0].Type != push.TypeData {
			t.Errorf("webhook explicit: %+v %+v", rs, sent)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			body string
			code int
			want string
		}{
			{`{}`, 400, "give aor"},
			{`{"aor":"sip:1003@pbx.test","token":"x","provider":"fcm"}`, 400, "not both"},
			{`{"instance":"` + instAPNs + `"}`, 400, "instance needs aor"},
			{`{"provider":"carrier-pigeon","token":"` + tokAdHoc + `"}`, 400, "carrier-pigeon"},
			{`{"provider":"fcm","token":"` + tokAdHoc + `","type":"voip"}`, 400, "voip"},
			{`{"aor":"sip:1003@pbx.test","type":"loud"}`, 400, "loud"},
			{`{"aor":"sip:1003@pbx.test","colour":"red"}`, 400, "colour"},
			{`not json`, 400, "request body"},
			{`{"aor":"tel:+1"}`, 400, "not a sip"},
			{`{"aor":"sip:9999@pbx.test"}`, 404, "no live binding"},
			{`{"aor":"sip:1003@pbx.test","instance":"urn:uuid:nope"}`, 404, "urn:uuid:nope"},
			{`{"aor":"sip:john%20doe@pbx.test"}`, 404, "no binding of sip:john%20doe@pbx.test has a push target"},
		} {
			code, body, _ := f.do(t, http.MethodPost, "/v1/push/test", tc.body)
			wantError(t, tc.body, code, body, tc.code, tc.want)
		}
		big := `{"aor":"` + strings.Repeat("a", adminMaxBody) + `"}`
		code, body, _ := f.do(t, http.MethodPost, "/v1/push/test", big)
		wantError(t, "huge body", code, body, http.StatusBadRequest, "too large")
		if sent := f.push.take(); len(sent) != 0 {
			t.Errorf("refused requests sent %d pushes", len(sent))
		}
	})

	t.Run("push not configured", func(t *testing.T) {
		g := startAdmin(t, "", withoutPush)
		code, body, _ := g.do(t, http.MethodPost, "/v1/push/test", `{"aor":"sip:1003@pbx.test"}`)
		wantError(t, "no push", code, body, http.StatusServiceUnavailable, "push is not configured")
	})
}

func TestAdminHeldAndMessages(t *testing.T) {
	f := startAdmin(t, adminToken)
	code, body, _ := f.do(t, http.MethodGet, "/v1/calls/held", "")
	if code != 200 || body != `{"calls":[]}`+"\n" {
		t.Errorf("no held calls = %d %s", code, body)
	}
	recv := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.heldMu.Lock()
	f.held = []wake.HeldInfo{{CallID: "abc@pbx", AOR: "sip:1003@pbx.test", Node: "node-a", Received: recv, Deadline: recv.Add(30 * time.Second), Devices: 2, Pushed: 2}}
	f.heldMu.Unlock()
	code, body, _ = f.do(t, http.MethodGet, "/v1/calls/held", "")
	var held adminHeld
	if err := json.Unmarshal([]byte(body), &held); err != nil || code != 200 || len(held.Calls) != 1 ||
		held.Calls[0].CallID != "abc@pbx" || held.Calls[0].Devices != 2 || !held.Calls[0].Received.Equal(recv) {
		t.Errorf("held = %d %s (%v)", code, body, err)
	}
	if !strings.Contains(body, `"call_id":"abc@pbx"`) || !strings.Contains(body, `"deadline":"2026-03-01T12:00:30Z"`) {
		t.Errorf("held JSON %s", body)
	}

	g := startAdmin(t, "", func(d *adminDeps) { d.Held = nil })
	if code, body, _ := g.do(t, http.MethodGet, "/v1/calls/held", ""); code != 200 || body != `{"calls":[]}`+"\n" {
		t.Errorf("Held nil = %d %s", code, body)
	}

	code, body, _ = f.do(t, http.MethodGet, "/v1/messages/pending", "")
	if code != 200 || body != `{"messages":[]}`+"\n" {
		t.Errorf("pending messages = %d %s", code, body)
	}
}

func TestAdminLogLevel(t *testing.T) {
	f := startAdmin(t, adminToken)
	if code, body, _ := f.do(t, http.MethodGet, "/v1/log/level", ""); code != 200 || body != `{"level":"info"}`+"\n" {
		t.Fatalf("GET level = %d %s", code, body)
	}
	for _, lvl := range []string{"debug", "error", "warn", "info"} {
		code, body, _ := f.do(t, http.MethodPut, "/v1/log/level", `{"level":"`+lvl+`"}`)
		if code != 200 || body != `{"level":"`+lvl+`"}`+"\n" || f.level.Level().String() != lvl {
			t.Fatalf("PUT %s = %d %s; level %s", lvl, code, body, f.level.Level())
		}
	}
	for _, body := range []string{`{"level":"loud"}`, `{"level":"DEBUG"}`, `{}`, `{"level":"debug","x":1}`, `[`} {
		code, out, _ := f.do(t, http.MethodPut, "/v1/log/level", body)
		wantError(t, body, code, out, http.StatusBadRequest, "")
	}
	if f.level.Level() != zapcore.InfoLevel {
		t.Errorf("refused changes moved the level to %s", f.level.Level())
	}
	g := startAdmin(t, "", func(d *adminDeps) { d.Level = zap.AtomicLevel{} })
	code, body, _ := g.do(t, http.MethodGet, "/v1/log/level", "")
	wantError(t, "no level", code, body, http.StatusServiceUnavailable, "log level")
}

func TestAdminConstructorAndLifecycle(t *testing.T) {
	st := openAdminStore(t)
	if _, err := newAdminServer("0.0.0.0:0", "", adminDeps{Store: st}, nil); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("open non-loopback listener without token: %v", err)
	}
	if _, err := newAdminServer("0.0.0.0:0", "tok", adminDeps{Store: st}, nil); err != nil {
		t.Errorf("non-loopback with token: %v", err)
	}
	if _, err := newAdminServer("127.0.0.1:0", "", adminDeps{}, nil); err == nil {
		t.Error("no store accepted")
	}
	if _, err := newAdminServer("127.0.0.1:0", "a b", adminDeps{Store: st}, nil); err == nil {
		t.Error("token with a space accepted")
	}

	s, err := newAdminServer("127.0.0.1:0", "", adminDeps{Store: st}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.Addr() != nil {
		t.Error("Addr before Start")
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown before Start: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil {
		t.Error("second Start accepted")
	}
	addr := s.Addr().String()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := adminHTTP.Get("http://" + addr + "/v1/bindings"); err == nil {
		t.Error("still serving after Shutdown")
	}
	// A taken port is a Start error.
	s2, _ := newAdminServer("127.0.0.1:0", "", adminDeps{Store: st}, nil)
	if err := s2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown(ctx)
	s3, _ := newAdminServer(s2.Addr().String(), "", adminDeps{Store: st}, nil)
	if err := s3.Start(ctx); err == nil {
		_ = s3.Shutdown(ctx)
		t.Error("Start on a taken port succeeded")
	}
}

func TestAdminTokenFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if tok, err := readAdminToken(write("t1", "  abc123 \nsecond line\n")); err != nil || tok != "abc123" {
		t.Errorf("token %q %v", tok, err)
	}
	if tok, err := readAdminToken(write("t2", "abc123")); err != nil || tok != "abc123" {
		t.Errorf("token without newline %q %v", tok, err)
	}
	if _, err := readAdminToken(write("t3", "\nabc\n")); err == nil {
		t.Error("empty first line accepted")
	}
	if _, err := readAdminToken(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

// Credentials keys of the accounts tests.
var (
	acctKeyOld   = []byte("old-credentials-key-0123456789ab")
	acctKeyNew   = []byte("new-credentials-key-0123456789ab")
	acctKeyStray = []byte("stray-credentials-key-0123456789")
)

const acctPassword = "correct horse battery staple"

// withRegistrar gives the admin server a registrar over its store whose credentials
// keyring is kr (nil: no key configured), logging to log.
func withRegistrar(t *testing.T, kr *registrar.Keyring, log *zap.Logger) adminOpt {
	return func(d *adminDeps) {
		r, err := registrar.New(registrar.Config{Keyring: kr}, d.Store, log, nil)
		if err != nil {
			t.Fatal(err)
		}
		d.Registrar = r
	}
}

func mustKeyring(t *testing.T, current []byte, old ...[]byte) *registrar.Keyring {
	t.Helper()
	kr, err := registrar.NewKeyring(current, old...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func mustHA1(t *testing.T, alg, user, realm, password string) string {
	t.Helper()
	h, err := registrar.HA1(alg, user, realm, password)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// openAccount reads aor's account from st and opens it with kr.
func openAccount(t *testing.T, st store.Store, kr *registrar.Keyring, aor string) (store.Account, registrar.Credentials) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := st.Account(ctx, aor)
	if err != nil {
		t.Fatalf("account %s: %v", aor, err)
	}
	c, err := kr.Open(a)
	if err != nil {
		t.Fatalf("open account %s: %v", aor, err)
	}
	return a, c
}

// seedRegistrations stores two upstream registration records of sip:1003@pbx.test and
// one of sip:2000@pbx.test; it returns their contact tokens.
func seedRegistrations(t *testing.T, st store.Store) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rs := []store.Registration{
		{Token: "regtok-1003-apns-7f3a9c2e5b1d", AOR: "sip:1003@pbx.test", Instance: instAPNs, OnBehalf: true, Transport: "udp",
			Expires: base.Add(time.Hour), DeviceExpires: base.Add(24 * time.Hour), LastSeen: base, RefreshAt: base.Add(50 * time.Minute),
			Due: base.Add(50 * time.Minute), State: store.RegActive},
		{Token: "regtok-1003-fcm0-4c8e2a6f0b9d", AOR: "sip:1003@pbx.test", Instance: instFCM, OnBehalf: true, Transport: "udp",
			Expires: base.Add(20 * time.Minute), DeviceExpires: base.Add(24 * time.Hour), LastSeen: base, RefreshAt: base.Add(2 * time.Minute),
			Due: base.Add(2 * time.Minute), State: store.RegBackingOff, Failures: 2},
		{Token: "regtok-2000-voip-1a2b3c4d5e6f", AOR: "sip:2000@pbx.test", Instance: instVoIPOne,
			Expires: base.Add(time.Hour), DeviceExpires: base.Add(time.Hour), LastSeen: base, Due: base.Add(40 * time.Minute), State: store.RegPushOnly},
	}
	var toks []string
	for _, r := range rs {
		if _, err := st.PutRegistration(ctx, r, false); err != nil {
			t.Fatal(err)
		}
		toks = append(toks, r.Token)
	}
	return toks
}

// assertNoneOf fails when s holds any of secrets.
func assertNoneOf(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s holds a secret (%s…)", what, sec[:6])
		}
	}
}

func TestAdminAccounts(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	lg := zap.New(core)
	kr := mustKeyring(t, acctKeyNew)
	f := startAdminLog(t, adminToken, lg, withRegistrar(t, kr, lg))
	seedRegistrations(t, f.store)

	md5 := mustHA1(t, registrar.AlgMD5, "1003", "pbx.test", acctPassword)
	sha := mustHA1(t, registrar.AlgSHA256, "1003", "pbx.test", acctPassword)
	ha1For2000 := mustHA1(t, registrar.AlgMD5, "u2000", "asterisk", "other secret")
	secrets := []string{acctPassword, md5, sha, ha1For2000, strings.ToUpper(ha1For2000)}
	do := func(method, path, body string) (int, string) {
		t.Helper()
		code, out, _ := f.do(t, method, path, body)
		assertNoneOf(t, method+" "+path, out, secrets...)
		return code, out
	}

	if code, body := do(http.MethodGet, "/v1/accounts", ""); code != 200 || body != `{"accounts":[]}`+"\n" {
		t.Errorf("no accounts = %d %s", code, body)
	}

	// By password: HA1s for the AOR's domain, both algorithms.
	code, body := do(http.MethodPut, "/v1/accounts/sip:1003@pbx.test", `{"password":"`+acctPassword+`"}`)
	if code != 200 {
		t.Fatalf("PUT password = %d %s", code, body)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"sealed", "ha1", "password", "credentials"} {
		if _, ok := raw[k]; ok {
			t.Errorf("PUT answer has a %q field: %s", k, body)
		}
	}
	var acct adminAccount
	if err := json.Unmarshal([]byte(body), &acct); err != nil {
		t.Fatal(err)
	}
	if acct.AOR != "sip:1003@pbx.test" || acct.KeyID != registrar.KeyID(acctKeyNew) ||
		strings.Join(acct.Realms, ",") != "pbx.test" || strings.Join(acct.Algorithms, ",") != "MD5,SHA-256" ||
		acct.Updated.IsZero() || time.Since(acct.Updated) > time.Minute {
		t.Errorf("PUT password answer %s", body)
	}
	// The AOR's registrations: the most troubled state, the earliest expiry.
	if acct.State != store.RegBackingOff || !acct.UpstreamExpires.Equal(time.Date(2026, 3, 1, 12, 20, 0, 0, time.UTC)) || len(acct.Registrations) != 2 {
		t.Errorf("PUT answer registrations: state %q expires %s, %d records", acct.State, acct.UpstreamExpires, len(acct.Registrations))
	}
	if !strings.Contains(body, `"upstream_expires_at":"2026-03-01T12:20:00Z"`) || !strings.Contains(body, `"updated":"`) {
		t.Errorf("PUT answer JSON %s", body)
	}
	_, c := openAccount(t, f.store, kr, "sip:1003@pbx.test")
	if h, ok := c.For("pbx.test", "MD5"); !ok || h != md5 || c.Username != "1003" {
		t.Errorf("stored MD5 HA1 wrong (user %q)", c.Username)
	}
	if h, ok := c.For("pbx.test", "SHA-256"); !ok || h != sha {
		t.Error("stored SHA-256 HA1 wrong")
	}

	// By HA1, the AOR percent-encoded and scheme-less, the digest upper case.
	code, body = do(http.MethodPut, "/v1/accounts/2000%40pbx.test",
		`{"ha1":[{"realm":"","algorithm":"md5","ha1":"`+strings.ToUpper(ha1For2000)+`"}],"username":"u2000"}`)
	if code != 200 || !strings.Contains(body, `"aor":"sip:2000@pbx.test"`) || !strings.Contains(body, `"realms":[""]`) ||
		!strings.Contains(body, `"algorithms":["MD5"]`) || !strings.Contains(body, `"state":"push_only"`) {
		t.Errorf("PUT ha1 = %d %s", code, body)
	}
	_, c = openAccount(t, f.store, kr, "sip:2000@pbx.test")
	if h, ok := c.For("asterisk", "MD5"); !ok || h != ha1For2000 || c.Username != "u2000" {
		t.Errorf("stored HA1 of sip:2000 wrong (user %q)", c.Username)
	}
	// Password with an explicit realm and user name.
	code, body = do(http.MethodPut, "/v1/accounts/sip:3000@pbx.test", `{"password":"`+acctPassword+`","username":"bob","realm":"asterisk"}`)
	if code != 200 || !strings.Contains(body, `"realms":["asterisk"]`) || strings.Contains(body, `"state"`) {
		t.Errorf("PUT password realm = %d %s", code, body)
	}
	_, c = openAccount(t, f.store, kr, "sip:3000@pbx.test")
	if h, _ := c.For("asterisk", "MD5"); h != mustHA1(t, registrar.AlgMD5, "bob", "asterisk", acctPassword) {
		t.Error("HA1 of bob@asterisk wrong")
	}

	// The list: no secret, no sealed bytes.
	code, body = do(http.MethodGet, "/v1/accounts", "")
	var list adminAccounts
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 || len(list.Accounts) != 3 {
		t.Fatalf("list = %d %s (%v)", code, body, err)
	}
	if a := list.Accounts[0]; a.AOR != "sip:1003@pbx.test" || a.State != store.RegBackingOff || strings.Join(a.Algorithms, ",") != "MD5,SHA-256" ||
		a.KeyID != registrar.KeyID(acctKeyNew) {
		t.Errorf("listed %+v", a)
	}
	if strings.Contains(body, "sealed") || strings.Contains(body, `"ha1"`) {
		t.Errorf("list shows credentials: %s", body)
	}

	// Bad input.
	for _, tc := range []struct{ path, body, want string }{
		{"/v1/accounts/sip:1003@pbx.test", `{"password":"x","ha1":[{"algorithm":"MD5","ha1":"` + md5 + `"}]}`, "not both"},
		{"/v1/accounts/sip:1003@pbx.test", `{}`, "give password, or ha1"},
		{"/v1/accounts/sip:1003@pbx.test", `{"ha1":[]}`, "give password, or ha1"},
		{"/v1/accounts/sip:1003@pbx.test", `{"password":""}`, "password is empty"},
		{"/v1/accounts/sip:1003@pbx.test", `{"ha1":[{"algorithm":"MD5","ha1":"` + md5[:31] + `"}]}`, "32 hex digits"},
		{"/v1/accounts/sip:1003@pbx.test", `{"ha1":[{"algorithm":"MD5","ha1":"` + strings.Repeat("z", 32) + `"}]}`, "32 hex digits"},
		{"/v1/accounts/sip:1003@pbx.test", `{"ha1":[{"algorithm":"SHA-256","ha1":"` + md5 + `"}]}`, "64 hex digits"},
		{"/v1/accounts/sip:1003@pbx.test", `{"ha1":[{"algorithm":"SHA-512-256","ha1":"` + md5 + `"}]}`, "unsupported algorithm"},
		{"/v1/accounts/sip:1003@pbx.test", `{"ha1":[{"ha1":"` + md5 + `"},{"algorithm":"MD5","ha1":"` + md5 + `"}]}`, "second MD5"},
		{"/v1/accounts/sip:1003@pbx.test", `{"realm":"x","ha1":[{"ha1":"` + md5 + `"}]}`, "realm goes with password"},
		{"/v1/accounts/sip:1003@pbx.test", `{"password":"x","secret":"y"}`, "unknown field"},
		{"/v1/accounts/sip:1003@pbx.test", `{"password":"x"} {}`, "more than one"},
		{"/v1/accounts/sip:1003@pbx.test", `[`, "request body"},
		{"/v1/accounts/sip:pbx.test", `{"password":"x"}`, "no user part"},
		{"/v1/accounts/", `{"password":"x"}`, "empty aor"},
	} {
		code, body := do(http.MethodPut, tc.path, tc.body)
		wantError(t, "PUT "+tc.path+" "+tc.body, code, body, http.StatusBadRequest, tc.want)
		assertNoneOf(t, "400 answer", body, md5[:31], strings.Repeat("z", 32))
	}
	// Refused requests changed nothing.
	if _, c := openAccount(t, f.store, kr, "sip:1003@pbx.test"); len(c.HA1) != 2 {
		t.Errorf("refused PUTs changed the account: %d HA1s", len(c.HA1))
	}

	// Delete: 204, then 404.
	if code, body := do(http.MethodDelete, "/v1/accounts/sip:2000@pbx.test", ""); code != http.StatusNoContent || body != "" {
		t.Errorf("DELETE = %d %q", code, body)
	}
	code, body = do(http.MethodDelete, "/v1/accounts/sip%3A2000%40pbx.test", "")
	wantError(t, "DELETE again", code, body, http.StatusNotFound, "no account for sip:2000@pbx.test")
	code, body = do(http.MethodDelete, "/v1/accounts/sip:pbx.test", "")
	wantError(t, "DELETE no user", code, body, http.StatusBadRequest, "no user part")
	if code, body := do(http.MethodGet, "/v1/accounts", ""); code != 200 || strings.Contains(body, "sip:2000@pbx.test") {
		t.Errorf("list after delete = %d %s", code, body)
	}

	// Nothing secret reached a log line.
	if logs.Len() == 0 {
		t.Fatal("nothing logged")
	}
	for _, e := range logs.All() {
		line, _ := json.Marshal(map[string]any{"msg": e.Message, "fields": e.ContextMap()})
		assertNoneOf(t, "log line "+e.Message, string(line), secrets...)
	}
	if logs.FilterMessage("account set by admin").Len() != 3 || logs.FilterMessage("account deleted by admin").Len() != 1 {
		t.Errorf("admin log lines: %d set, %d deleted", logs.FilterMessage("account set by admin").Len(), logs.FilterMessage("account deleted by admin").Len())
	}
}

func TestAdminAccountsNoKey(t *testing.T) {
	f := startAdmin(t, "", withRegistrar(t, nil, nil))
	code, body, _ := f.do(t, http.MethodPut, "/v1/accounts/sip:1003@pbx.test", `{"password":"`+acctPassword+`"}`)
	wantError(t, "PUT without key", code, body, http.StatusServiceUnavailable, "registrar.credentials.key_file")
	code, body, _ = f.do(t, http.MethodPut, "/v1/accounts/sip:1003@pbx.test", `{"ha1":[{"ha1":"`+strings.Repeat("0", 32)+`"}]}`)
	wantError(t, "PUT ha1 without key", code, body, http.StatusServiceUnavailable, "no credentials key is configured")
	// Bad input is still 400.
	code, body, _ = f.do(t, http.MethodPut, "/v1/accounts/sip:1003@pbx.test", `{}`)
	wantError(t, "PUT {} without key", code, body, http.StatusBadRequest, "")
	code, body, _ = f.do(t, http.MethodPost, "/v1/accounts/rekey", "")
	wantError(t, "rekey without key", code, body, http.StatusServiceUnavailable, "registrar.credentials.key_file")
	if code, body, _ := f.do(t, http.MethodGet, "/v1/accounts", ""); code != 200 || body != `{"accounts":[]}`+"\n" {
		t.Errorf("list without key = %d %s", code, body)
	}
	code, body, _ = f.do(t, http.MethodDelete, "/v1/accounts/sip:1003@pbx.test", "")
	wantError(t, "DELETE without key", code, body, http.StatusNotFound, "no account")

	// Without the registrar module: 501 with a clear message.
	g := startAdmin(t, "")
	code, body, _ = g.do(t, http.MethodPut, "/v1/accounts/sip:1003@pbx.test", `{"password":"x"}`)
	wantError(t, "PUT without registrar", code, body, http.StatusNotImplemented, "registrar module")
	code, body, _ = g.do(t, http.MethodDelete, "/v1/accounts/sip:1003@pbx.test", "")
	wantError(t, "DELETE without registrar", code, body, http.StatusNotImplemented, "registrar module")
}

func TestAdminAccountsRekey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kr := mustKeyring(t, acctKeyNew, acctKeyOld)
	f := startAdmin(t, adminToken, withRegistrar(t, kr, nil))

	// sip:1003 sealed under the old key, sip:2000 under a key this node does not have,
	// sip:3000 already under the new key.
	oldReg, err := registrar.New(registrar.Config{Keyring: mustKeyring(t, acctKeyOld)}, f.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := oldReg.SetPassword(ctx, "sip:1003@pbx.test", "", "", acctPassword); err != nil || a.KeyID != registrar.KeyID(acctKeyOld) {
		t.Fatalf("seal under old key: %v (%s)", err, a.KeyID)
	}
	strayReg, err := registrar.New(registrar.Config{Keyring: mustKeyring(t, acctKeyStray)}, f.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strayReg.SetPassword(ctx, "sip:2000@pbx.test", "", "", "stray"); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := f.do(t, http.MethodPut, "/v1/accounts/sip:3000@pbx.test", `{"password":"x3000"}`); code != 200 {
		t.Fatalf("PUT sip:3000 = %d %s", code, body)
	}

	code, body, _ := f.do(t, http.MethodPost, "/v1/accounts/rekey", "")
	wantError(t, "rekey with a stray account", code, body, http.StatusInternalServerError, "sip:2000@pbx.test")
	var res adminResealed
	if err := json.Unmarshal([]byte(body), &res); err != nil || res.Resealed != 1 || !strings.Contains(res.Error, "1 account(s) re-encrypted") ||
		strings.Contains(res.Error, "sip:1003") || strings.Contains(res.Error, "sip:3000") {
		t.Errorf("rekey answer %s (%v)", body, err)
	}

	keys := map[string]string{}
	code, body, _ = f.do(t, http.MethodGet, "/v1/accounts", "")
	var list adminAccounts
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 {
		t.Fatalf("list = %d %s", code, body)
	}
	for _, a := range list.Accounts {
		keys[a.AOR] = a.KeyID
	}
	if keys["sip:1003@pbx.test"] != registrar.KeyID(acctKeyNew) || keys["sip:3000@pbx.test"] != registrar.KeyID(acctKeyNew) ||
		keys["sip:2000@pbx.test"] != registrar.KeyID(acctKeyStray) {
		t.Errorf("key ids after rekey: %v", keys)
	}
	// The moved account opens with the new key alone, to the same HA1s.
	_, c := openAccount(t, f.store, mustKeyring(t, acctKeyNew), "sip:1003@pbx.test")
	if h, ok := c.For("pbx.test", "MD5"); !ok || h != mustHA1(t, registrar.AlgMD5, "1003", "pbx.test", acctPassword) {
		t.Error("re-encrypted account opens to a wrong HA1")
	}
	if _, err := mustKeyring(t, acctKeyOld).Open(mustAccount(t, f.store, "sip:1003@pbx.test")); err == nil {
		t.Error("the re-encrypted account still opens with the old key")
	}

	// Without the stray account, a rekey has nothing left to do.
	if code, _, _ := f.do(t, http.MethodDelete, "/v1/accounts/sip:2000@pbx.test", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE stray = %d", code)
	}
	if code, body, _ := f.do(t, http.MethodPost, "/v1/accounts/rekey", ""); code != 200 || body != `{"resealed":0}`+"\n" {
		t.Errorf("second rekey = %d %s", code, body)
	}
}

func mustAccount(t *testing.T, st store.Store, aor string) store.Account {
	t.Helper()
	a, err := st.Account(context.Background(), aor)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAdminRegistrations(t *testing.T) {
	f := startAdmin(t, adminToken) // no registrar: the records come from the store
	if code, body, _ := f.do(t, http.MethodGet, "/v1/registrations", ""); code != 200 || body != `{"registrations":[]}`+"\n" {
		t.Errorf("no registrations = %d %s", code, body)
	}
	toks := seedRegistrations(t, f.store)
	code, body, _ := f.do(t, http.MethodGet, "/v1/registrations", "")
	assertNoneOf(t, "registrations", body, toks...)
	var out adminRegistrations
	if err := json.Unmarshal([]byte(body), &out); err != nil || code != 200 || len(out.Registrations) != 3 {
		t.Fatalf("registrations = %d %s", code, body)
	}
	var r adminRegistration
	for _, x := range out.Registrations {
		if x.Instance == instFCM {
			r = x
		}
	}
	if r.AOR != "sip:1003@pbx.test" || r.Token != proxy.Mask(toks[1]) || !r.OnBehalf || r.State != store.RegBackingOff || r.Failures != 2 ||
		!r.ExpiresAt.Equal(time.Date(2026, 3, 1, 12, 20, 0, 0, time.UTC)) || r.DeviceExpires.IsZero() || r.LastSeen.IsZero() ||
		r.RefreshAt.IsZero() || r.Due.IsZero() {
		t.Errorf("registration %+v", r)
	}
	for _, k := range []string{`"expires_at":"2026-03-01T12:20:00Z"`, `"device_expires_at":`, `"refresh_at":`, `"due":`, `"last_seen":`, `"on_behalf":true`} {
		if !strings.Contains(body, k) {
			t.Errorf("registrations JSON lacks %s: %s", k, body)
		}
	}
	code, body, _ = f.do(t, http.MethodGet, "/v1/registrations?aor=2000@pbx.test", "")
	if code != 200 || strings.Count(body, `"aor"`) != 1 || !strings.Contains(body, `"state":"push_only"`) || !strings.Contains(body, `"on_behalf":false`) {
		t.Errorf("registrations ?aor = %d %s", code, body)
	}
	code, body, _ = f.do(t, http.MethodGet, "/v1/registrations?aor=sip:", "")
	wantError(t, "registrations bad aor", code, body, http.StatusBadRequest, "aor")
}
