package fcm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"

	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/push/internal/pushhttp"
)

// DefaultEndpoint is the FCM HTTP v1 base URL.
const DefaultEndpoint = "https://fcm.googleapis.com/v1"

// Scope is the OAuth2 scope of an FCM sender.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// maxData is FCM's limit on a data message's keys and values, in bytes.
const maxData = 4096

// Project is one Firebase project pushes can be sent for.
type Project struct {
	// ProjectID is the Firebase project id, the pn-param of its devices;
	// empty means the credentials file's project_id.
	ProjectID string
	// CredentialsFile is the project's service-account JSON file.
	CredentialsFile string
}

// Options configure a Notifier (config keys push.fcm.* and
// push.ca_file).
type Options struct {
	// Projects are the Firebase projects served; at least one.
	Projects []Project
	// Endpoint is the FCM v1 base URL including /v1; empty means
	// DefaultEndpoint.
	Endpoint string
	// CAFile is a PEM bundle trusted besides the system roots, for FCM
	// and for the token endpoints named in the credentials files.
	CAFile string
	// Timeout bounds one push (access token included); 0 means 10s.
	Timeout time.Duration
}

// project is a configured project with its cached access tokens.
type project struct {
	id      string
	sendURL string
	conf    *jwt.Config
	ctx     context.Context // carries the HTTP client for token requests

	mu sync.Mutex
	ts oauth2.TokenSource
}

func (p *project) tokenSource() oauth2.TokenSource {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ts
}

// forget drops the cached access token after FCM refused it, so that the
// next push asks for a new one; ts is the source that served the refused
// token (a concurrent push may have replaced it already).
func (p *project) forget(ts oauth2.TokenSource) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ts == ts {
		p.ts = p.conf.TokenSource(p.ctx)
	}
}

// Notifier sends pushes to FCM. It is safe for concurrent use.
type Notifier struct {
	timeout   time.Duration
	client    *http.Client
	transport *http.Transport
	projects  map[string]*project
	only      *project // the project of targets without pn-param, when there is one project
}

var _ push.Notifier = (*Notifier)(nil)

// New reads the credentials files and prepares the HTTP client. It does
// not connect: the first push fetches an access token and sends.
func New(opts Options) (*Notifier, error) {
	if len(opts.Projects) == 0 {
		return nil, errors.New("fcm: no projects")
	}
	endpoint := opts.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("fcm: endpoint %q is not an http(s) URL", endpoint)
	}
	endpoint = strings.TrimSuffix(endpoint, "/")
	tlsConf, err := pushhttp.TLSConfig(opts.CAFile)
	if err != nil {
		return nil, fmt.Errorf("fcm: %w", err)
	}
	n := &Notifier{timeout: opts.Timeout, projects: map[string]*project{}}
	if n.timeout <= 0 {
		n.timeout = pushhttp.DefaultTimeout
	}
	n.transport = pushhttp.NewTransport(tlsConf, false)
	n.client = &http.Client{Transport: n.transport, Timeout: n.timeout}
	tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient, n.client)
	for i, p := range opts.Projects {
		if p.CredentialsFile == "" {
			return nil, fmt.Errorf("fcm: projects[%d]: credentials_file is required", i)
		}
		sa, err := readServiceAccount(p.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("fcm: projects[%d]: credentials_file: %w", i, err)
		}
		id := p.ProjectID
		if id == "" {
			id = sa.ProjectID
		}
		if id == "" {
			return nil, fmt.Errorf("fcm: projects[%d]: no project_id, in the config or the credentials file", i)
		}
		if _, dup := n.projects[id]; dup {
			return nil, fmt.Errorf("fcm: projects[%d]: project %s configured twice", i, id)
		}
		proj := &project{
			id:      id,
			sendURL: endpoint + "/projects/" + url.PathEscape(id) + "/messages:send",
			ctx:     tokenCtx,
			conf: &jwt.Config{
				Email:        sa.ClientEmail,
				PrivateKey:   []byte(sa.PrivateKey),
				PrivateKeyID: sa.PrivateKeyID,
				Scopes:       []string{Scope},
				TokenURL:     sa.TokenURI,
			},
		}
		proj.ts = proj.conf.TokenSource(tokenCtx)
		n.projects[id] = proj
	}
	if len(n.projects) == 1 {
		for _, p := range n.projects {
			n.only = p
		}
	}
	return n, nil
}

// Close closes the idle connections.
func (n *Notifier) Close() error {
	n.transport.CloseIdleConnections()
	return nil
}

// message is the FCM v1 request body.
type message struct {
	Message struct {
		Token   string            `json:"token"`
		Data    map[string]string `json:"data"`
		Android android           `json:"android"`
	} `json:"message"`
}

type android struct {
	Priority    string `json:"priority"`
	TTL         string `json:"ttl,omitempty"`
	CollapseKey string `json:"collapse_key,omitempty"`
}

// encode builds the data-only message of n; now is when it is sent.
func encode(n *push.Notification, token string, now time.Time) ([]byte, int, error) {
	var m message
	m.Message.Token = token
	fields := n.Payload.Fields()
	data := make(map[string]string, len(fields)+2)
	size := 0
	add := func(k, v string) {
		data["sipwake."+k] = v
		size += len("sipwake.") + len(k) + len(v)
	}
	for k, v := range fields {
		add(k, v)
	}
	if n.Alert != nil {
		if n.Alert.Title != "" {
			add("alert_title", n.Alert.Title)
		}
		if n.Alert.Body != "" {
			add("alert_body", n.Alert.Body)
		}
	}
	m.Message.Data = data
	m.Message.Android = android{Priority: "HIGH", CollapseKey: n.CollapseID}
	if !n.Expiration.IsZero() {
		m.Message.Android.TTL = TTL(n.Expiration, now)
	}
	body, err := json.Marshal(m)
	return body, size, err
}

// TTL is the android.ttl of a push that must be dropped at exp: the whole
// seconds left (never more than the time to exp), "0s" when exp passed.
func TTL(exp, now time.Time) string {
	secs := int64(exp.Sub(now) / time.Second)
	if secs < 0 {
		secs = 0
	}
	return fmt.Sprintf("%ds", secs)
}

// Notify sends n to FCM and waits for the answer. A refusal is a
// *push.Error classified by FCM's status and error details.
func (n *Notifier) Notify(ctx context.Context, note *push.Notification) (push.Result, error) {
	const provider = push.ProviderFCM
	fail := func(reason, detail string) (push.Result, error) {
		return push.Result{}, &push.Error{Provider: provider, Reason: reason, Detail: detail}
	}
	if note == nil {
		return fail(push.ReasonBadRequest, "no notification")
	}
	if note.Target.Provider != push.ProviderFCM {
		return fail(push.ReasonNoProvider, "not an fcm target")
	}
	proj := n.projects[note.Target.Param]
	if proj == nil && note.Target.Param == "" {
		proj = n.only
	}
	if proj == nil {
		return fail(push.ReasonNoProvider, "project "+note.Target.Param+" not configured")
	}
	tok := note.Target.TokenFor(note.Type)
	if tok == "" {
		return fail(push.ReasonBadRequest, "no registration token")
	}
	body, size, err := encode(note, tok, time.Now())
	if err != nil {
		return push.Result{}, &push.Error{Provider: provider, Reason: push.ReasonBadRequest, Err: fmt.Errorf("fcm: encode message: %w", err)}
	}
	if size > maxData {
		return fail(push.ReasonPayloadTooLong, fmt.Sprintf("%d bytes of data, limit %d", size, maxData))
	}
	ctx, cancel := pushhttp.WithTimeout(ctx, n.timeout)
	defer cancel()
	ts := proj.tokenSource()
	access, err := token(ctx, ts)
	if err != nil {
		return push.Result{}, tokenError(ctx, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, proj.sendURL, bytes.NewReader(body))
	if err != nil {
		return push.Result{}, &push.Error{Provider: provider, Reason: push.ReasonBadRequest, Err: fmt.Errorf("fcm: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	access.SetAuthHeader(req)
	res, err := n.client.Do(req)
	if err != nil {
		return push.Result{}, pushhttp.TransportError(ctx, provider, fmt.Errorf("fcm: %w", err))
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return push.Result{Status: res.StatusCode}, pushhttp.TransportError(ctx, provider, fmt.Errorf("fcm: read answer: %w", err))
	}
	result := push.Result{Status: res.StatusCode}
	if res.StatusCode == http.StatusOK {
		var ok struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(raw, &ok)
		result.ID = ok.Name
		return result, nil
	}
	e := classify(res.StatusCode, raw, pushhttp.ParseRetryAfter(res.Header.Get("Retry-After"), time.Now()))
	if res.StatusCode == http.StatusUnauthorized {
		proj.forget(ts)
	}
	return result, e
}

// token gets an access token from ts, giving up at ctx's end (the
// request itself runs on until the HTTP client's timeout).
func token(ctx context.Context, ts oauth2.TokenSource) (*oauth2.Token, error) {
	type answer struct {
		tok *oauth2.Token
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		tok, err := ts.Token()
		ch <- answer{tok, err}
	}()
	select {
	case a := <-ch:
		return a.tok, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// tokenError classifies a failure to get an access token: a refusal by
// the token endpoint is ReasonAuth (4xx), ReasonRateLimited or
// ReasonServerError; no answer is ReasonTimeout or ReasonNetwork.
func tokenError(ctx context.Context, err error) *push.Error {
	wrapped := fmt.Errorf("fcm: access token: %w", err)
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		status := re.Response.StatusCode
		e := &push.Error{Provider: push.ProviderFCM, Status: status, Detail: re.ErrorCode, Err: wrapped,
			RetryAfter: pushhttp.ParseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())}
		switch {
		case status == http.StatusTooManyRequests:
			e.Reason = push.ReasonRateLimited
		case status >= 500:
			e.Reason = push.ReasonServerError
		default:
			e.Reason = push.ReasonAuth
		}
		return e
	}
	return pushhttp.TransportError(ctx, push.ProviderFCM, wrapped)
}

// apiError is the Google API error FCM answers with.
type apiError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// FCM error codes (google.firebase.fcm.v1.FcmError).
const (
	codeUnregistered      = "UNREGISTERED"
	codeInvalidArgument   = "INVALID_ARGUMENT"
	codeSenderIDMismatch  = "SENDER_ID_MISMATCH"
	codeQuotaExceeded     = "QUOTA_EXCEEDED"
	codeUnavailable       = "UNAVAILABLE"
	codeInternal          = "INTERNAL"
	codeThirdPartyAuthErr = "THIRD_PARTY_AUTH_ERROR"
)

// classify turns an FCM refusal into a *push.Error.
func classify(status int, body []byte, retryAfter time.Duration) *push.Error {
	var ae apiError
	_ = json.Unmarshal(body, &ae)
	code, tokenField := "", false
	for _, d := range ae.Error.Details {
		if d.ErrorCode != "" && code == "" {
			code = d.ErrorCode
		}
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				tokenField = true
			}
		}
	}
	detail := code
	if detail == "" {
		detail = ae.Error.Status
	}
	e := &push.Error{Provider: push.ProviderFCM, Status: status, Detail: detail, RetryAfter: retryAfter}
	invalidArg := code == codeInvalidArgument || (code == "" && ae.Error.Status == codeInvalidArgument)
	aboutToken := tokenField || strings.Contains(strings.ToLower(ae.Error.Message), "registration token")
	switch {
	case code == codeUnregistered:
		e.Reason, e.Permanent = push.ReasonUnregistered, true
	case code == codeSenderIDMismatch:
		e.Reason, e.Permanent = push.ReasonTopicMismatch, true
	case invalidArg && aboutToken:
		e.Reason, e.Permanent = push.ReasonBadToken, true
	case code == codeThirdPartyAuthErr:
		e.Reason = push.ReasonAuth
	case code == codeQuotaExceeded:
		e.Reason = push.ReasonRateLimited
	case code == codeUnavailable || code == codeInternal:
		e.Reason = push.ReasonServerError
	default:
		e.Reason = pushhttp.StatusReason(status)
	}
	return e
}
