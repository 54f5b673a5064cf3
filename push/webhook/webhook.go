package webhook

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/push/internal/pushhttp"
)

// Header names of a signed webhook.
const (
	HeaderSignature = "X-Sipwake-Signature"
	HeaderTimestamp = "X-Sipwake-Timestamp"
)

// Options configure a Notifier (config keys push.webhook.* and
// push.ca_file).
type Options struct {
	// URL receives the POSTs (http or https).
	URL string
	// SecretFile holds the signing secret on its first line; empty means
	// unsigned requests.
	SecretFile string
	// CAFile is a PEM bundle trusted besides the system roots.
	CAFile string
	// Timeout bounds one request; 0 means 10s.
	Timeout time.Duration
}

// Notifier posts pushes to the webhook. It is safe for concurrent use.
type Notifier struct {
	url       string
	secret    []byte
	timeout   time.Duration
	client    *http.Client
	transport *http.Transport
}

var _ push.Notifier = (*Notifier)(nil)

// New checks opts and reads the secret. It does not connect.
func New(opts Options) (*Notifier, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("webhook: url %q is not an http(s) URL", opts.URL)
	}
	n := &Notifier{url: opts.URL, timeout: opts.Timeout}
	if n.timeout <= 0 {
		n.timeout = pushhttp.DefaultTimeout
	}
	if opts.SecretFile != "" {
		if n.secret, err = readSecret(opts.SecretFile); err != nil {
			return nil, fmt.Errorf("webhook: secret_file: %w", err)
		}
	}
	tlsConf, err := pushhttp.TLSConfig(opts.CAFile)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	n.transport = pushhttp.NewTransport(tlsConf, false)
	n.client = &http.Client{
		Transport: n.transport,
		Timeout:   n.timeout,
		// A redirect would re-send the signed body elsewhere: refuse.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return n, nil
}

// readSecret returns the first line of path, without surrounding space.
func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("empty file")
	}
	line := bytes.TrimSpace(sc.Bytes())
	if len(line) == 0 {
		return nil, errors.New("empty first line")
	}
	return bytes.Clone(line), nil
}

// Close closes the idle connections.
func (n *Notifier) Close() error {
	n.transport.CloseIdleConnections()
	return nil
}

// Body is the JSON a webhook receives.
type Body struct {
	// Sipwake is the flat payload every encoding shares.
	Sipwake map[string]string `json:"sipwake"`
	// Target is the device.
	Target Target `json:"target"`
	// Type is voip, alert or background.
	Type push.Type `json:"type"`
	// Alert is the visible text of an alert push, when the caller set one.
	Alert *Alert `json:"alert,omitempty"`
	// ExpiresAt (RFC 3339) is when the push is no longer worth delivering.
	ExpiresAt string `json:"expires_at,omitempty"`
	// CollapseID groups pushes that replace each other.
	CollapseID string `json:"collapse_id,omitempty"`
	// Timestamp is when sipwake sent the request (Unix seconds); it is
	// covered by the signature, unlike the header.
	Timestamp int64 `json:"timestamp"`
}

// Alert is the visible text of an alert push.
type Alert struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

// Target is the device a webhook push is for.
type Target struct {
	Provider string `json:"provider"`
	Token    string `json:"token"`
	Param    string `json:"param,omitempty"`
}

// Sign returns the X-Sipwake-Signature value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether signature (an X-Sipwake-Signature value) is
// body's under secret, in constant time: what a receiver checks.
func Verify(secret, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}

// Notify posts n and waits for the answer.
func (n *Notifier) Notify(ctx context.Context, note *push.Notification) (push.Result, error) {
	provider := push.ProviderWebhook
	if note != nil && note.Target.Provider != "" {
		provider = note.Target.Provider
	}
	if note == nil {
		return push.Result{}, &push.Error{Provider: provider, Reason: push.ReasonBadRequest, Detail: "no notification"}
	}
	now := time.Now()
	b := Body{
		Sipwake: note.Payload.Fields(),
		Target: Target{Provider: note.Target.Provider, Token: note.Target.TokenFor(note.Type),
			Param: note.Target.Param},
		Type:       note.Type,
		CollapseID: note.CollapseID,
		Timestamp:  now.Unix(),
	}
	if note.Alert != nil {
		b.Alert = &Alert{Title: note.Alert.Title, Body: note.Alert.Body}
	}
	if !note.Expiration.IsZero() {
		b.ExpiresAt = note.Expiration.UTC().Format(time.RFC3339)
	}
	body, err := json.Marshal(b)
	if err != nil {
		return push.Result{}, &push.Error{Provider: provider, Reason: push.ReasonBadRequest, Err: fmt.Errorf("webhook: encode: %w", err)}
	}
	ctx, cancel := pushhttp.WithTimeout(ctx, n.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(body))
	if err != nil {
		return push.Result{}, &push.Error{Provider: provider, Reason: push.ReasonBadRequest, Err: fmt.Errorf("webhook: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sipwake-webhook")
	if n.secret != nil {
		req.Header.Set(HeaderTimestamp, strconv.FormatInt(b.Timestamp, 10))
		req.Header.Set(HeaderSignature, Sign(n.secret, body))
	}
	res, err := n.client.Do(req)
	if err != nil {
		return push.Result{}, pushhttp.TransportError(ctx, provider, fmt.Errorf("webhook: %w", err))
	}
	defer res.Body.Close()
	// Drain a little so the connection can be reused; the answer's body
	// is not kept: a receiver might echo the token.
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4<<10))
	result := push.Result{Status: res.StatusCode, ID: res.Header.Get("X-Request-Id")}
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return result, nil
	}
	e := &push.Error{Provider: provider, Status: res.StatusCode,
		RetryAfter: pushhttp.ParseRetryAfter(res.Header.Get("Retry-After"), time.Now())}
	if res.StatusCode == http.StatusGone {
		e.Reason, e.Permanent = push.ReasonUnregistered, true
	} else {
		e.Reason = pushhttp.StatusReason(res.StatusCode)
	}
	return result, e
}
