package pushtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// APNsRequest is one push the fake APNs received.
type APNsRequest struct {
	// Token is the device token from the path /3/device/{token}.
	Token string
	// Header holds every request header (apns-push-type, apns-topic,
	// apns-priority, apns-expiration, apns-collapse-id, authorization…).
	Header http.Header
	// Bearer is the provider token (JWT) of token authentication.
	Bearer string
	// CertUID is the subject UID of the client certificate, when the
	// client authenticated with one ("" when it had none or no UID).
	CertUID string
	// ClientCert reports whether a client certificate was presented.
	ClientCert bool
	// Body is the raw JSON payload; Payload is it decoded.
	Body    []byte
	Payload map[string]any
	// Proto is the HTTP protocol the request came over ("HTTP/2.0").
	Proto string
	// RemoteAddr is the client's address: one per connection.
	RemoteAddr string
	// Status is what the fake answered (0 while a hung request waits).
	Status int
	// Reason is the APNs reason it answered with, if any.
	Reason string
}

// PushType is the apns-push-type header.
func (r APNsRequest) PushType() string { return r.Header.Get("apns-push-type") }

// Topic is the apns-topic header.
func (r APNsRequest) Topic() string { return r.Header.Get("apns-topic") }

// Priority is the apns-priority header.
func (r APNsRequest) Priority() string { return r.Header.Get("apns-priority") }

// Expiration is the apns-expiration header.
func (r APNsRequest) Expiration() string { return r.Header.Get("apns-expiration") }

// CollapseID is the apns-collapse-id header.
func (r APNsRequest) CollapseID() string { return r.Header.Get("apns-collapse-id") }

// Sipwake is the payload's top-level "sipwake" object.
func (r APNsRequest) Sipwake() map[string]any {
	m, _ := r.Payload["sipwake"].(map[string]any)
	return m
}

// APS is the payload's "aps" object.
func (r APNsRequest) APS() map[string]any {
	m, _ := r.Payload["aps"].(map[string]any)
	return m
}

// APNs is a fake Apple Push Notification service (HTTP/2 provider API).
// It authenticates pushes by provider token (ES256 JWT signed with the
// key WriteKey writes, kid KeyID, iss TeamID, iat under an hour old) or
// by a client certificate its CA issued.
type APNs struct {
	// URL is the base URL, https://127.0.0.1:port.
	URL string
	// KeyID and TeamID are the kid and iss the provider token must carry.
	KeyID  string
	TeamID string

	key     *ecdsa.PrivateKey
	ca      *CA
	replies *replies
	rec     *recorder[APNsRequest]
	ids     atomic.Int64
}

// Payload size limits APNs enforces (bytes).
const (
	apnsMaxPayload     = 4096
	apnsMaxVoIPPayload = 5120
)

// NewAPNs starts a fake APNs with certificates from ca (a new CA when
// nil), closed at the end of the test.
func NewAPNs(t testing.TB, ca *CA) *APNs {
	t.Helper()
	if ca == nil {
		ca = NewCA(t)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("pushtest: apns key: %v", err)
	}
	return startAPNs(t, ca, key, "PUSHTEST01", "TEAMTEST01")
}

// NewAPNsSandbox starts a second fake APNs that shares prod's CA, signing
// key, KeyID and TeamID, to stand for the sandbox beside prod: one
// Notifier can then push to both.
func NewAPNsSandbox(t testing.TB, prod *APNs) *APNs {
	t.Helper()
	return startAPNs(t, prod.ca, prod.key, prod.KeyID, prod.TeamID)
}

func startAPNs(t testing.TB, ca *CA, key *ecdsa.PrivateKey, keyID, teamID string) *APNs {
	t.Helper()
	a := &APNs{
		KeyID:   keyID,
		TeamID:  teamID,
		key:     key,
		ca:      ca,
		replies: newReplies(),
		rec:     newRecorder[APNsRequest](),
	}
	srv := startTLS(t, ca, a, true)
	a.URL = srv.URL
	t.Cleanup(func() {
		a.Release()
		srv.Close()
	})
	return a
}

// WriteKey writes the fake's signing key as an Apple .p8 file (PKCS #8
// PEM) in t.TempDir() and returns its path.
func (a *APNs) WriteKey(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(a.key)
	if err != nil {
		t.Fatalf("pushtest: p8: %v", err)
	}
	return writeFile(t, "AuthKey_"+a.KeyID+".p8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// WriteCertificate issues a client certificate for certificate
// authentication (subject UID uid, Apple topics extension when topics are
// given) and writes it with its key as one PEM file in t.TempDir().
func (a *APNs) WriteCertificate(t testing.TB, uid string, topics ...string) string {
	t.Helper()
	_, pemData := a.ca.ClientCertificate(t, uid, topics...)
	return writeFile(t, "apns-cert.pem", pemData)
}

// ReplyToken makes every push to device token tok answer r.
func (a *APNs) ReplyToken(tok string, r Reply) { a.replies.forToken(tok, r) }

// ReplyNext makes the next n pushes (to tokens without their own reply)
// answer r.
func (a *APNs) ReplyNext(n int, r Reply) { a.replies.queue(n, r) }

// ReplyAll sets the answer of pushes that no other rule covers.
func (a *APNs) ReplyAll(r Reply) { a.replies.all(r) }

// Release lets every hung request (and every later Hang reply) finish
// with its programmed answer.
func (a *APNs) Release() { a.replies.releaseAll() }

// Requests returns the pushes received so far, including refused ones.
func (a *APNs) Requests() []APNsRequest {
	items, _ := a.rec.snapshot()
	return items
}

// WaitRequests waits until n pushes arrived and returns the first n; it
// fails the test after timeout. Call it from the test goroutine.
func (a *APNs) WaitRequests(t testing.TB, n int, timeout time.Duration) []APNsRequest {
	t.Helper()
	return a.rec.wait(t, n, timeout, "apns")
}

// Reset forgets the recorded requests.
func (a *APNs) Reset() { a.rec.reset() }

// Bearers returns the distinct provider tokens seen, in order of first
// use.
func (a *APNs) Bearers() []string {
	var out []string
	for _, r := range a.Requests() {
		if r.Bearer != "" && !slices.Contains(out, r.Bearer) {
			out = append(out, r.Bearer)
		}
	}
	return out
}

var apnsPushTypes = []string{"alert", "background", "voip", "complication", "fileprovider", "mdm", "location", "liveactivity", "pushtotalk"}

// ServeHTTP answers one push as APNs would, or as programmed.
func (a *APNs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := APNsRequest{Header: r.Header.Clone(), Proto: r.Proto, RemoteAddr: r.RemoteAddr}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	req.Body = body
	status, reason := a.check(r, &req)
	rep := Reply{}
	if status == 0 {
		rep = a.replies.pick(req.Token)
		status, reason = rep.status(), rep.Reason
	}
	req.Status, req.Reason = status, reason
	a.rec.add(req)
	if rep.Hang {
		a.replies.hang(r.Context())
	}
	id := r.Header.Get("apns-id")
	if id == "" {
		id = fmt.Sprintf("00000000-0000-4000-8000-%012d", a.ids.Add(1))
	}
	w.Header().Set("apns-id", id)
	rep.writeRetryAfter(w)
	if status == http.StatusOK {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	out := map[string]any{"reason": reason}
	if status == http.StatusGone {
		out["timestamp"] = time.Now().UnixMilli()
	}
	_ = json.NewEncoder(w).Encode(out)
}

// check validates the request as APNs would; a zero status means valid.
func (a *APNs) check(r *http.Request, req *APNsRequest) (int, string) {
	if r.ProtoMajor != 2 {
		return http.StatusBadRequest, "BadProtocol"
	}
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "MethodNotAllowed"
	}
	tok, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok {
		return http.StatusNotFound, "BadPath"
	}
	req.Token = tok
	if tok == "" {
		return http.StatusBadRequest, "MissingDeviceToken"
	}
	var topics []string
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		req.ClientCert = true
		topics = certTopics(r.TLS.PeerCertificates[0], &req.CertUID)
	} else if status, reason := a.checkJWT(r, req); status != 0 {
		return status, reason
	}
	topic := r.Header.Get("apns-topic")
	switch {
	case topic == "" && !req.ClientCert:
		return http.StatusBadRequest, "MissingTopic"
	case topic != "" && len(topics) > 0 && !slices.Contains(topics, topic):
		return http.StatusBadRequest, "TopicDisallowed"
	}
	pt := r.Header.Get("apns-push-type")
	if pt != "" && !slices.Contains(apnsPushTypes, pt) {
		return http.StatusBadRequest, "InvalidPushType"
	}
	if p := r.Header.Get("apns-priority"); p != "" && p != "5" && p != "10" && p != "1" {
		return http.StatusBadRequest, "BadPriority"
	}
	if len(req.Body) == 0 {
		return http.StatusBadRequest, "PayloadEmpty"
	}
	limit := apnsMaxPayload
	if pt == "voip" {
		limit = apnsMaxVoIPPayload
	}
	if len(req.Body) > limit {
		return http.StatusRequestEntityTooLarge, "PayloadTooLarge"
	}
	if err := json.Unmarshal(req.Body, &req.Payload); err != nil {
		return http.StatusBadRequest, "BadPayload"
	}
	if id := r.Header.Get("apns-collapse-id"); len(id) > 64 {
		return http.StatusBadRequest, "BadCollapseId"
	}
	return 0, ""
}

func (a *APNs) checkJWT(r *http.Request, req *APNsRequest) (int, string) {
	auth := r.Header.Get("Authorization")
	bearer, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		bearer, ok = strings.CutPrefix(auth, "Bearer ")
	}
	if !ok || bearer == "" {
		return http.StatusForbidden, "MissingProviderToken"
	}
	req.Bearer = bearer
	jwt, err := decodeJWT(bearer)
	if err != nil || !jwt.verifyES256(&a.key.PublicKey) ||
		jwt.str(jwt.header, "kid") != a.KeyID || jwt.str(jwt.claims, "iss") != a.TeamID {
		return http.StatusForbidden, "InvalidProviderToken"
	}
	iat := time.Unix(jwt.num("iat"), 0)
	if time.Since(iat) > time.Hour || time.Until(iat) > time.Minute {
		return http.StatusForbidden, "ExpiredProviderToken"
	}
	return 0, ""
}
