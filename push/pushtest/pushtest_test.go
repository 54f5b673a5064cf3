package pushtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

func client(t *testing.T, ca *CA, cert *tls.Certificate) *http.Client {
	conf := &tls.Config{RootCAs: ca.Pool()}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func es256(t *testing.T, key *ecdsa.PrivateKey, header, claims map[string]any) string {
	in := b64(header) + "." + b64(claims)
	h := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestAPNsChecksProviderToken(t *testing.T) {
	a := NewAPNs(t, nil)
	c := client(t, a.ca, nil)
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	good := map[string]any{"alg": "ES256", "kid": a.KeyID}
	claims := map[string]any{"iss": a.TeamID, "iat": now}
	for _, tc := range []struct {
		name   string
		bearer string
		topic  string
		status int
		reason string
	}{
		{"valid", es256(t, a.key, good, claims), "com.x", 200, ""},
		{"missing", "", "com.x", 403, "MissingProviderToken"},
		{"other key", es256(t, other, good, claims), "com.x", 403, "InvalidProviderToken"},
		{"wrong kid", es256(t, a.key, map[string]any{"alg": "ES256", "kid": "NOPE"}, claims), "com.x", 403, "InvalidProviderToken"},
		{"wrong team", es256(t, a.key, good, map[string]any{"iss": "NOPE", "iat": now}), "com.x", 403, "InvalidProviderToken"},
		{"old", es256(t, a.key, good, map[string]any{"iss": a.TeamID, "iat": now - 3700}), "com.x", 403, "ExpiredProviderToken"},
		{"no topic", es256(t, a.key, good, claims), "", 400, "MissingTopic"},
	} {
		req, _ := http.NewRequest(http.MethodPost, a.URL+"/3/device/abc", strings.NewReader(`{"aps":{}}`))
		if tc.bearer != "" {
			req.Header.Set("authorization", "bearer "+tc.bearer)
		}
		if tc.topic != "" {
			req.Header.Set("apns-topic", tc.topic)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var body struct{ Reason string }
		_ = json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		if res.StatusCode != tc.status || body.Reason != tc.reason || res.ProtoMajor != 2 {
			t.Errorf("%s: %s %d %q, want %d %q over HTTP/2", tc.name, res.Proto, res.StatusCode, body.Reason, tc.status, tc.reason)
		}
	}
	if got := len(a.Requests()); got != 7 {
		t.Errorf("recorded %d requests, want 7", got)
	}
}

func TestAPNsClientCertificate(t *testing.T) {
	ca := NewCA(t)
	a := NewAPNs(t, ca)
	cert, _ := ca.ClientCertificate(t, "com.example.app", "com.example.app", "com.example.app.voip")
	c := client(t, ca, &cert)
	for _, tc := range []struct {
		topic  string
		status int
	}{{"com.example.app.voip", 200}, {"", 200}, {"com.other", 400}} {
		req, _ := http.NewRequest(http.MethodPost, a.URL+"/3/device/abc", strings.NewReader(`{"aps":{}}`))
		if tc.topic != "" {
			req.Header.Set("apns-topic", tc.topic)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.status {
			t.Errorf("topic %q: %d, want %d", tc.topic, res.StatusCode, tc.status)
		}
	}
	if r := a.Requests()[0]; !r.ClientCert || r.CertUID != "com.example.app" {
		t.Errorf("recorded cert %v uid %q", r.ClientCert, r.CertUID)
	}
	// A certificate from another CA is refused in the handshake.
	foreign, _ := NewCA(t).ClientCertificate(t, "com.example.app")
	if _, err := client(t, ca, &foreign).Post(a.URL+"/3/device/abc", "application/json", strings.NewReader("{}")); err == nil {
		t.Errorf("a certificate from another CA was accepted")
	}
}

func TestRepliesAndHang(t *testing.T) {
	a := NewAPNs(t, nil)
	c := client(t, a.ca, nil)
	bearer := es256(t, a.key, map[string]any{"alg": "ES256", "kid": a.KeyID}, map[string]any{"iss": a.TeamID, "iat": time.Now().Unix()})
	send := func(ctx context.Context, tok string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.URL+"/3/device/"+tok, strings.NewReader(`{"aps":{}}`))
		req.Header.Set("authorization", "bearer "+bearer)
		req.Header.Set("apns-topic", "com.x")
		res, err := c.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		return res.StatusCode, res.Header.Get("Retry-After")
	}
	a.ReplyToken("dead", APNsUnregistered)
	a.ReplyNext(2, APNsTooManyRequests)
	ctx := context.Background()
	for i, want := range []struct {
		tok    string
		status int
		retry  string
	}{{"dead", 410, ""}, {"x", 429, "30"}, {"dead", 410, ""}, {"y", 429, "30"}, {"z", 200, ""}} {
		if st, ra := send(ctx, want.tok); st != want.status || ra != want.retry {
			t.Errorf("push %d to %s: %d %q, want %d %q", i, want.tok, st, ra, want.status, want.retry)
		}
	}
	a.ReplyAll(Reply{Hang: true})
	done := make(chan int, 1)
	go func() {
		st, _ := send(ctx, "h")
		done <- st
	}()
	a.WaitRequests(t, 6, 5*time.Second)
	select {
	case st := <-done:
		t.Fatalf("hung request answered %d before Release", st)
	case <-time.After(100 * time.Millisecond):
	}
	a.Release()
	select {
	case st := <-done:
		if st != 200 {
			t.Errorf("released request: %d", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Release did not free the request")
	}
}

func TestFCMTokenEndpoint(t *testing.T) {
	f := NewFCM(t, nil)
	path := f.WriteServiceAccount(t, "proj")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sa map[string]string
	if err := json.Unmarshal(data, &sa); err != nil {
		t.Fatal(err)
	}
	if sa["token_uri"] != f.TokenURL || sa["project_id"] != "proj" || sa["type"] != "service_account" {
		t.Errorf("service account %v", sa)
	}
	block, _ := pem.Decode([]byte(sa["private_key"]))
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key := k.(*rsa.PrivateKey)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Now().Unix()
	claims := func(aud, scope string, exp int64) map[string]any {
		return map[string]any{"iss": sa["client_email"], "aud": aud, "scope": scope, "iat": now, "exp": exp}
	}
	rs256 := func(k *rsa.PrivateKey, c map[string]any) string {
		in := b64(map[string]any{"alg": "RS256", "typ": "JWT", "kid": sa["private_key_id"]}) + "." + b64(c)
		h := sha256.Sum256([]byte(in))
		sig, _ := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
		return in + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool()}}}
	for _, tc := range []struct {
		name      string
		assertion string
		status    int
	}{
		{"valid", rs256(key, claims(f.TokenURL, FCMScope, now+3600)), 200},
		{"other key", rs256(other, claims(f.TokenURL, FCMScope, now+3600)), 400},
		{"wrong audience", rs256(key, claims("https://elsewhere/token", FCMScope, now+3600)), 400},
		{"no scope", rs256(key, claims(f.TokenURL, "email", now+3600)), 400},
		{"expired", rs256(key, claims(f.TokenURL, FCMScope, now-10)), 400},
	} {
		form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {tc.assertion}}
		res, err := c.PostForm(f.TokenURL, form)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, res.StatusCode, body, tc.status)
		}
		if tc.status != 200 {
			continue
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.Unmarshal(body, &tok)
		send := func(project string) int {
			req, _ := http.NewRequest(http.MethodPost, f.Endpoint+"/projects/"+project+"/messages:send",
				bytes.NewReader([]byte(`{"message":{"token":"t","data":{"a":"b"}}}`)))
			req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res.StatusCode
		}
		if st := send("proj"); st != 200 {
			t.Errorf("send with the issued token: %d", st)
		}
		if st := send("another"); st != 403 {
			t.Errorf("send to another project: %d, want 403", st)
		}
	}
	if f.TokensIssued() != 1 || f.TokenRequests() != 5 {
		t.Errorf("issued %d of %d requests, want 1 of 5", f.TokensIssued(), f.TokenRequests())
	}
}
