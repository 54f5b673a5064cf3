package apns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"

	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/push/internal/pushhttp"
)

// apns2 renews the provider token once it is token.TokenTimeout seconds
// old. Apple refuses tokens older than an hour; this fails to compile
// should a new apns2 move the renewal past 50 minutes.
const _ = uint(50*60 - token.TokenTimeout)

// Apple's base URLs.
const (
	ProductionURL = apns2.HostProduction
	SandboxURL    = apns2.HostDevelopment
)

// Options configure a Notifier (config keys push.apns.* and
// push.ca_file). Give token credentials (KeyFile, KeyID, TeamID),
// Certificates, or both.
type Options struct {
	// KeyFile is the .p8 signing key of token authentication.
	KeyFile string
	// KeyID is the key's id (the JWT kid), TeamID the Apple developer
	// team (the JWT iss).
	KeyID  string
	TeamID string
	// Certificates are PEM files, each a push certificate and its
	// unencrypted key, for certificate authentication. A certificate
	// serves the topics it names (subject UID, Apple topics extension);
	// one naming none serves every topic.
	Certificates []string
	// URL and SandboxURL are the base URLs (https://host:port) of
	// production and sandbox APNs; empty means Apple's hosts.
	URL        string
	SandboxURL string
	// CAFile is a PEM bundle trusted besides the system roots.
	CAFile string
	// Timeout bounds one push; 0 means 10s.
	Timeout time.Duration
}

// credential is one way of authenticating (the provider token or one
// certificate) with its clients for production and sandbox.
type credential struct {
	name      string
	topics    []string // served topics; none = any
	prod      *apns2.Client
	sandbox   *apns2.Client
	transport *http.Transport
}

// Notifier sends pushes to APNs. It is safe for concurrent use.
type Notifier struct {
	timeout time.Duration
	token   *token.Token
	byToken *credential   // token authentication, nil when not configured
	certs   []*credential // certificate authentication, in config order
}

var _ push.Notifier = (*Notifier)(nil)

// New checks opts, loads the signing key and certificates, and prepares
// one HTTP/2 client per base URL and credential. It does not connect:
// the first push does.
func New(opts Options) (*Notifier, error) {
	hasToken := opts.KeyFile != "" || opts.KeyID != "" || opts.TeamID != ""
	if !hasToken && len(opts.Certificates) == 0 {
		return nil, errors.New("apns: no credentials: set key_file, key_id and team_id, or certificates")
	}
	prodURL, err := baseURL(opts.URL, ProductionURL)
	if err != nil {
		return nil, fmt.Errorf("apns: url: %w", err)
	}
	sandboxURL, err := baseURL(opts.SandboxURL, SandboxURL)
	if err != nil {
		return nil, fmt.Errorf("apns: sandbox_url: %w", err)
	}
	tlsConf, err := pushhttp.TLSConfig(opts.CAFile)
	if err != nil {
		return nil, fmt.Errorf("apns: %w", err)
	}
	n := &Notifier{timeout: opts.Timeout}
	if n.timeout <= 0 {
		n.timeout = pushhttp.DefaultTimeout
	}
	newCred := func(name string, conf *tls.Config) *credential {
		tr := pushhttp.NewTransport(conf, true)
		hc := &http.Client{Transport: capture{tr}, Timeout: n.timeout}
		return &credential{
			name:      name,
			transport: tr,
			prod:      &apns2.Client{Host: prodURL, HTTPClient: hc},
			sandbox:   &apns2.Client{Host: sandboxURL, HTTPClient: hc},
		}
	}
	if hasToken {
		switch {
		case opts.KeyFile == "":
			return nil, errors.New("apns: key_file is required with key_id and team_id")
		case opts.KeyID == "":
			return nil, errors.New("apns: key_id is required with key_file")
		case opts.TeamID == "":
			return nil, errors.New("apns: team_id is required with key_file")
		}
		key, err := token.AuthKeyFromFile(opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("apns: key_file %s: %w", opts.KeyFile, err)
		}
		n.token = &token.Token{AuthKey: key, KeyID: opts.KeyID, TeamID: opts.TeamID}
		if _, err := n.token.Generate(); err != nil {
			return nil, fmt.Errorf("apns: sign provider token: %w", err)
		}
		n.byToken = newCred("token", tlsConf.Clone())
		n.byToken.prod.Token = n.token
		n.byToken.sandbox.Token = n.token
	}
	now := time.Now()
	for _, path := range opts.Certificates {
		cert, topics, err := loadCertificate(path, now)
		if err != nil {
			return nil, fmt.Errorf("apns: %w", err)
		}
		conf := tlsConf.Clone()
		conf.Certificates = []tls.Certificate{cert}
		c := newCred(path, conf)
		c.topics = topics
		c.prod.Certificate, c.sandbox.Certificate = cert, cert
		n.certs = append(n.certs, c)
	}
	return n, nil
}

func baseURL(raw, def string) (string, error) {
	if raw == "" {
		return def, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("%q is not an https://host[:port] URL", raw)
	}
	return strings.TrimSuffix(raw, "/"), nil
}

// Close closes the idle connections.
func (n *Notifier) Close() error {
	for _, c := range n.creds() {
		c.transport.CloseIdleConnections()
	}
	return nil
}

func (n *Notifier) creds() []*credential {
	out := slices.Clone(n.certs)
	if n.byToken != nil {
		out = append(out, n.byToken)
	}
	return out
}

// credentialFor picks how to authenticate a push to topic: a certificate
// naming the topic, else the provider token, else a certificate naming no
// topic. An empty topic (a target without pn-param) can only be sent with
// a certificate, whose own topic APNs then uses.
func (n *Notifier) credentialFor(topic string) *credential {
	if topic == "" {
		if len(n.certs) > 0 {
			return n.certs[0]
		}
		return nil
	}
	for _, c := range n.certs {
		if slices.Contains(c.topics, topic) {
			return c
		}
	}
	if n.byToken != nil {
		return n.byToken
	}
	for _, c := range n.certs {
		if len(c.topics) == 0 {
			return c
		}
	}
	return nil
}

// Notify sends n to APNs and waits for the answer. A refusal is a
// *push.Error classified by Apple's status and reason.
func (n *Notifier) Notify(ctx context.Context, note *push.Notification) (push.Result, error) {
	provider := push.ProviderAPNs
	if note != nil && note.Target.Provider != "" {
		provider = note.Target.Provider
	}
	fail := func(reason, detail string) (push.Result, error) {
		return push.Result{}, &push.Error{Provider: provider, Reason: reason, Detail: detail}
	}
	if note == nil {
		return fail(push.ReasonBadRequest, "no notification")
	}
	if !note.Target.IsAPNs() {
		return fail(push.ReasonNoProvider, "not an apns target")
	}
	var pushType apns2.EPushType
	priority := apns2.PriorityHigh
	switch note.Type {
	case push.TypeVoIP:
		if note.Payload.Event != push.EventCall {
			return fail(push.ReasonBadRequest, "voip push for event "+string(note.Payload.Event)+": voip is only for incoming calls")
		}
		pushType = apns2.PushTypeVOIP
	case push.TypeAlert:
		pushType = apns2.PushTypeAlert
	case push.TypeBackground:
		pushType, priority = apns2.PushTypeBackground, apns2.PriorityLow
	default:
		return fail(push.ReasonBadRequest, "unknown push type "+string(note.Type))
	}
	tok := note.Target.TokenFor(note.Type)
	if tok == "" {
		return fail(push.ReasonBadRequest, "no device token")
	}
	topic := ""
	if note.Target.Param != "" {
		topic = note.Target.Topic(note.Type)
	}
	cred := n.credentialFor(topic)
	if cred == nil {
		if topic == "" {
			return fail(push.ReasonBadRequest, "no topic: the target has no pn-param")
		}
		return fail(push.ReasonNoProvider, "no certificate for topic "+topic)
	}
	payload, err := encode(note)
	if err != nil {
		return push.Result{}, &push.Error{Provider: provider, Reason: push.ReasonBadRequest, Err: fmt.Errorf("apns: encode payload: %w", err)}
	}
	limit := maxPayload
	if pushType == apns2.PushTypeVOIP {
		limit = maxVoIPPayload
	}
	if len(payload) > limit {
		return fail(push.ReasonPayloadTooLong, fmt.Sprintf("%d bytes, limit %d", len(payload), limit))
	}
	client := cred.prod
	if note.Target.Sandbox() {
		client = cred.sandbox
	}
	ctx, cancel := pushhttp.WithTimeout(ctx, n.timeout)
	defer cancel()
	got := new(captured)
	ctx = context.WithValue(ctx, capturedKey{}, got)
	res, err := client.PushWithContext(ctx, &apns2.Notification{
		DeviceToken: tok,
		Topic:       topic,
		Expiration:  note.Expiration,
		CollapseID:  note.CollapseID,
		Priority:    priority,
		PushType:    pushType,
		Payload:     payload,
	})
	if err != nil {
		if got.status > http.StatusOK {
			// A refusal came but its body was unreadable.
			e := classify(provider, got.status, "", pushhttp.ParseRetryAfter(got.retryAfter, time.Now()))
			e.Err = fmt.Errorf("apns: %w", err)
			return push.Result{Status: got.status}, e
		}
		return push.Result{}, pushhttp.TransportError(ctx, provider, fmt.Errorf("apns: %w", err))
	}
	result := push.Result{ID: res.ApnsID, Status: res.StatusCode}
	if res.StatusCode == http.StatusOK {
		return result, nil
	}
	return result, classify(provider, res.StatusCode, res.Reason, pushhttp.ParseRetryAfter(got.retryAfter, time.Now()))
}

// classify turns an APNs refusal into a *push.Error.
func classify(provider string, status int, reason string, retryAfter time.Duration) *push.Error {
	e := &push.Error{Provider: provider, Status: status, Detail: reason, RetryAfter: retryAfter}
	switch {
	case status == http.StatusGone: // Unregistered, ExpiredToken
		e.Reason, e.Permanent = push.ReasonUnregistered, true
	case status == http.StatusBadRequest && reason == apns2.ReasonBadDeviceToken:
		e.Reason, e.Permanent = push.ReasonBadToken, true
	case status == http.StatusBadRequest && reason == apns2.ReasonDeviceTokenNotForTopic:
		e.Reason, e.Permanent = push.ReasonTopicMismatch, true
	case status == http.StatusRequestEntityTooLarge || reason == apns2.ReasonPayloadTooLarge:
		e.Reason = push.ReasonPayloadTooLong
	default:
		e.Reason = pushhttp.StatusReason(status)
	}
	return e
}

// capturedKey carries a *captured in a push's context.
type capturedKey struct{}

// captured is what apns2 does not report of an answer: its status (when
// the body failed to decode) and its Retry-After header.
type captured struct {
	status     int
	retryAfter string
}

// capture is a RoundTripper that records the Retry-After header of each
// answer into the request context's *captured. RoundTrip runs on the
// goroutine of the push, so no lock is needed.
type capture struct{ base *http.Transport }

// RoundTrip sends r and notes the answer's status and Retry-After.
func (c capture) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := c.base.RoundTrip(r)
	if err == nil {
		if got, ok := r.Context().Value(capturedKey{}).(*captured); ok {
			got.status = res.StatusCode
			got.retryAfter = res.Header.Get("Retry-After")
		}
	}
	return res, err
}

// CloseIdleConnections lets apns2's Client.CloseIdleConnections work.
func (c capture) CloseIdleConnections() { c.base.CloseIdleConnections() }
