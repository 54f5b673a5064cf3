package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sipwake/sipwake/proxy/wake"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
)

// The admin API (INTERFACE.md "Ops and admin HTTP"): JSON over plain HTTP on admin.listen,
// a bearer token when admin.token_file is set. Every error is {"error": "..."} with a
// fitting status. Push tokens only ever leave it masked (push.Mask: the last 6 characters).
//
//	GET    /v1/bindings[?aor=AOR][&provider=P]   {"bindings": [binding...]}
//	GET    /v1/bindings/{aor}                    {"bindings": [...]}; 404 when the AOR has none
//	DELETE /v1/bindings/{aor}[?instance=ID]      {"aor", "instance"?, "deleted": n}; 404 when nothing was deleted
//	POST   /v1/push/test                         {"results": [pushTestResult...]}; 503 without push
//	GET    /v1/calls/held                        {"calls": [wake.HeldInfo...]}
//	GET    /v1/messages/pending                  {"messages": []}
//	GET    /v1/log/level, PUT /v1/log/level      {"level": "info"}
//	GET    /v1/accounts, PUT|DELETE /v1/accounts/{aor}, POST /v1/accounts/rekey,
//	GET    /v1/registrations[?aor=AOR]           see admin_accounts.go
//	GET|PUT|DELETE /v1/trace                     SIP trace switches, see admin_trace.go
//
// The AOR in a path is written plainly (/v1/bindings/sip:1003@pbx.test) or percent-encoded
// (/v1/bindings/sip%3A1003%40pbx.test); "1003@pbx.test" without a scheme means sip:. It is
// normalised as the registrar files it (registrar.NormalizeAOR).

// Admin API limits.
const (
	// adminMaxBody bounds a request body.
	adminMaxBody = 64 << 10
	// adminPushTimeout bounds one test push (the provider's answer included).
	adminPushTimeout = 15 * time.Second
	// adminTestPushTTL is how long a provider keeps an undelivered alert test push.
	adminTestPushTTL = 5 * time.Minute
	// adminTestCallTTL is how long a provider keeps an undelivered VoIP test push.
	adminTestCallTTL = 30 * time.Second
	// adminTestTitle is the visible title of a test push.
	adminTestTitle = "sipwake test push"
	// adminTestBody is the visible text of a test push.
	adminTestBody = "Sent by an operator to check push delivery; no call or message is waiting."
)

// adminDeps is what the admin API reads and changes.
type adminDeps struct {
	// Store holds the bindings. Required.
	Store store.Store
	// Held lists the calls held on this node; nil means none.
	Held func() []wake.HeldInfo
	// Push sends one push and waits for the provider's verdict; nil means push is not
	// configured (POST /v1/push/test answers 503).
	Push push.Notifier
	// Level is the run-time log level; the zero value means it cannot be changed (the
	// log level endpoints answer 503).
	Level zap.AtomicLevel
	// Registrar keeps the on-behalf accounts; nil means the process runs without the
	// registrar module (the accounts endpoints answer 501).
	Registrar *registrar.Registrar
	// Trace holds this node's SIP trace switches; nil means none can be set (the trace
	// endpoints answer 503).
	Trace traceSwitches
}

// adminServer serves the admin API on admin.listen. Its lifecycle is opsServer's:
// construct, Start (binds), Addr, Shutdown.
type adminServer struct {
	token   []byte // empty: no token required
	deps    adminDeps
	log     *zap.Logger
	handler http.Handler

	httpListener
}

// readAdminToken reads admin.token_file: its first line, surrounding white space removed.
// An empty token is an error, so that a mistaken file never turns authentication off.
func readAdminToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	tok := strings.TrimSpace(line)
	if tok == "" {
		return "", fmt.Errorf("admin.token_file: %s: first line is empty", path)
	}
	return tok, nil
}

// newAdminServer builds the admin API server; nothing listens until Start. token is the
// bearer token every request must carry (empty: none, allowed only on a loopback
// address). deps.Store is required.
func newAdminServer(addr string, token string, deps adminDeps, log *zap.Logger) (*adminServer, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if deps.Store == nil {
		return nil, errors.New("admin: no store")
	}
	if token == "" && !isLoopbackListen(addr) {
		return nil, fmt.Errorf("admin: listen %s is not a loopback address and no token is set (admin.token_file)", addr)
	}
	if strings.ContainsFunc(token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, errors.New("admin: token holds white space or control characters")
	}
	s := &adminServer{token: []byte(token), deps: deps, log: log,
		httpListener: httpListener{name: "admin", listen: addr, writeTimeout: adminPushTimeout + 15*time.Second}}
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

// Handler returns the HTTP handler (authentication included).
func (s *adminServer) Handler() http.Handler {
	return s.handler
}

// Start binds admin.listen and serves in a goroutine. A bind error is returned, so once
// Start returns nil the port is bound; Addr tells which. ctx bounds the bind only.
func (s *adminServer) Start(ctx context.Context) error {
	if err := s.start(ctx, s.handler, s.log); err != nil {
		return err
	}
	s.log.Info("admin listening", zap.String("addr", s.Addr().String()), zap.Bool("token", len(s.token) > 0))
	return nil
}

// adminError is every error answer's body.
type adminError struct {
	Error string `json:"error"`
}

func writeAdminJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeAdminError(w http.ResponseWriter, code int, format string, args ...any) {
	writeAdminJSON(w, code, adminError{Error: fmt.Sprintf(format, args...)})
}

// authorized reports whether r carries the configured bearer token (or none is needed).
func (s *adminServer) authorized(r *http.Request) bool {
	if len(s.token) == 0 {
		return true
	}
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(cred)), s.token) == 1
}

// serveHTTP authenticates, then routes. The routes are few and fixed; routing by hand
// keeps 404 and 405 answers JSON like every other error.
func (s *adminServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sipwake admin"`)
		writeAdminError(w, http.StatusUnauthorized, "missing or wrong bearer token (admin.token_file)")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, adminMaxBody)
	path := r.URL.EscapedPath()
	var methods map[string]http.HandlerFunc
	switch {
	case path == "/v1/bindings":
		methods = map[string]http.HandlerFunc{http.MethodGet: s.listBindings}
	case strings.HasPrefix(path, "/v1/bindings/"):
		methods = map[string]http.HandlerFunc{http.MethodGet: s.showBindings, http.MethodDelete: s.deleteBindings}
	case path == "/v1/push/test":
		methods = map[string]http.HandlerFunc{http.MethodPost: s.pushTest}
	case path == "/v1/calls/held":
		methods = map[string]http.HandlerFunc{http.MethodGet: s.heldCalls}
	case path == "/v1/messages/pending":
		methods = map[string]http.HandlerFunc{http.MethodGet: s.pendingMessages}
	case path == "/v1/log/level":
		methods = map[string]http.HandlerFunc{http.MethodGet: s.getLogLevel, http.MethodPut: s.putLogLevel}
	case path == "/v1/accounts":
		methods = map[string]http.HandlerFunc{http.MethodGet: s.listAccounts}
	case path == "/v1/accounts/rekey":
		methods = map[string]http.HandlerFunc{http.MethodPost: s.rekeyAccounts}
	case strings.HasPrefix(path, "/v1/accounts/"):
		methods = map[string]http.HandlerFunc{http.MethodPut: s.putAccount, http.MethodDelete: s.deleteAccount}
	case path == "/v1/registrations":
		methods = map[string]http.HandlerFunc{http.MethodGet: s.listRegistrations}
	case path == "/v1/trace":
		methods = map[string]http.HandlerFunc{http.MethodGet: s.listTraces, http.MethodPut: s.putTrace, http.MethodDelete: s.clearTraces}
	default:
		writeAdminError(w, http.StatusNotFound, "no such endpoint: %s", r.URL.Path)
		return
	}
	h, ok := methods[r.Method]
	if !ok {
		allow := make([]string, 0, len(methods))
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			if methods[m] != nil {
				allow = append(allow, m)
			}
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeAdminError(w, http.StatusMethodNotAllowed, "method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", "))
		return
	}
	h(w, r)
}

// parseAOR normalises an AOR given by an operator as the registrar files it. A value
// without a scheme ("1003@pbx.test") is read as a sip: URI.
func parseAOR(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty aor")
	}
	if i := strings.IndexByte(s, ':'); (i < 0 || strings.IndexByte(s[:i], '@') >= 0) && strings.Contains(s, "@") {
		s = "sip:" + s
	}
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil {
		return "", fmt.Errorf("aor %q: %v", s, err)
	}
	aor, err := registrar.NormalizeAOR(u)
	if err != nil {
		return "", fmt.Errorf("aor %q: %w", s, err)
	}
	return aor, nil
}

// pathAOR is the normalised AOR of a /v1/bindings/{aor} path: the rest of the escaped
// path, percent-decoded once.
func pathAOR(r *http.Request, prefix string) (string, error) {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), prefix)
	raw, err := pathUnescape(rest)
	if err != nil {
		return "", fmt.Errorf("aor in path: %v", err)
	}
	return parseAOR(raw)
}

// pathUnescape decodes %XX escapes only (a '+' stays a '+', as in a path).
func pathUnescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("broken escape %q", s[i:])
		}
		v, err := hex.DecodeString(s[i+1 : i+3])
		if err != nil {
			return "", fmt.Errorf("broken escape %q", s[i:i+3])
		}
		b = append(b, v[0])
		i += 2
	}
	return string(b), nil
}

// storeError answers a failed store call: 404 for store.ErrNotFound, 503 otherwise (the
// backend is down or closed).
func (s *adminServer) storeError(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeAdminError(w, http.StatusNotFound, "%s: not found", what)
		return
	}
	s.log.Warn("admin store call failed", zap.String("op", what), zap.Error(err))
	writeAdminError(w, http.StatusServiceUnavailable, "%s: %v", what, err)
}

// adminBinding is a binding as the admin API shows it. It never carries a full push
// token, nor the contact token of sipwake's masqueraded contact.
type adminBinding struct {
	AOR             string     `json:"aor"`
	Instance        string     `json:"instance"`
	SIPInstance     string     `json:"sip_instance,omitempty"`
	RegID           int        `json:"reg_id,omitempty"`
	Contact         string     `json:"contact"`
	Transport       string     `json:"transport"`
	Source          string     `json:"source"`
	Node            string     `json:"node"`
	ExpiresAt       time.Time  `json:"expires_at"`
	LastSeen        time.Time  `json:"last_seen,omitzero"`
	UpstreamExpires time.Time  `json:"upstream_expires_at,omitzero"`
	UserAgent       string     `json:"user_agent"`
	Push            *adminPush `json:"push,omitempty"`
}

// adminPush is a binding's push target with its tokens masked.
type adminPush struct {
	Provider string            `json:"provider"`
	Token    string            `json:"token"`
	Param    string            `json:"param,omitempty"`
	Types    []string          `json:"types"`
	Tokens   map[string]string `json:"tokens,omitempty"` // per push type, masked
}

func toAdminBinding(b store.Binding) adminBinding {
	ab := adminBinding{
		AOR: b.AOR, Instance: b.Instance, SIPInstance: b.SIPInstance, RegID: b.RegID,
		Contact: b.Contact, Transport: b.Transport, Source: b.Source, Node: b.Flow.Node,
		ExpiresAt: b.Expires.UTC(), LastSeen: b.LastSeen.UTC(), UpstreamExpires: b.Upstream.Expires.UTC(),
		UserAgent: b.UserAgent,
	}
	if p := b.Push; p != nil {
		ap := &adminPush{Provider: p.Provider, Token: push.Mask(p.Token), Param: p.Param, Types: append([]string{}, p.Types...)}
		if len(p.Tokens) > 0 {
			ap.Tokens = make(map[string]string, len(p.Tokens))
			for k, v := range p.Tokens {
				ap.Tokens[k] = push.Mask(v)
			}
		}
		ab.Push = ap
	}
	return ab
}

// adminBindings is the body of the binding listings.
type adminBindings struct {
	Bindings []adminBinding `json:"bindings"`
}

func toAdminBindings(bs []store.Binding, provider string) adminBindings {
	out := adminBindings{Bindings: make([]adminBinding, 0, len(bs))}
	for _, b := range bs {
		if provider != "" && (b.Push == nil || !strings.EqualFold(b.Push.Provider, provider)) {
			continue
		}
		out.Bindings = append(out.Bindings, toAdminBinding(b))
	}
	return out
}

func (s *adminServer) listBindings(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var opt store.ListOptions
	if a := q.Get("aor"); a != "" {
		aor, err := parseAOR(a)
		if err != nil {
			writeAdminError(w, http.StatusBadRequest, "%v", err)
			return
		}
		opt.AOR = aor
	}
	bs, err := s.deps.Store.ListBindings(r.Context(), opt)
	if err != nil {
		s.storeError(w, "list bindings", err)
		return
	}
	writeAdminJSON(w, http.StatusOK, toAdminBindings(bs, q.Get("provider")))
}

func (s *adminServer) showBindings(w http.ResponseWriter, r *http.Request) {
	aor, err := pathAOR(r, "/v1/bindings/")
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	bs, err := s.deps.Store.Bindings(r.Context(), aor)
	if err != nil {
		s.storeError(w, "bindings of "+aor, err)
		return
	}
	if len(bs) == 0 {
		writeAdminError(w, http.StatusNotFound, "no live binding for %s", aor)
		return
	}
	writeAdminJSON(w, http.StatusOK, toAdminBindings(bs, ""))
}

// adminDeleted is the body of DELETE /v1/bindings/{aor}.
type adminDeleted struct {
	AOR      string `json:"aor"`
	Instance string `json:"instance,omitempty"`
	Deleted  int    `json:"deleted"`
}

func (s *adminServer) deleteBindings(w http.ResponseWriter, r *http.Request) {
	aor, err := pathAOR(r, "/v1/bindings/")
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	res := adminDeleted{AOR: aor, Instance: r.URL.Query().Get("instance")}
	if res.Instance != "" {
		if err := s.deps.Store.DeleteBinding(r.Context(), aor, res.Instance); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				writeAdminError(w, http.StatusNotFound, "no live binding %s of %s", res.Instance, aor)
				return
			}
			s.storeError(w, "delete binding", err)
			return
		}
		res.Deleted = 1
	} else {
		n, err := s.deps.Store.DeleteAOR(r.Context(), aor)
		if err != nil {
			s.storeError(w, "delete bindings", err)
			return
		}
		if n == 0 {
			writeAdminError(w, http.StatusNotFound, "no live binding for %s", aor)
			return
		}
		res.Deleted = n
	}
	s.log.Info("bindings deleted by admin", zap.String("aor", aor), zap.String("instance", res.Instance), zap.Int("count", res.Deleted))
	writeAdminJSON(w, http.StatusOK, res)
}

// pushTestRequest is the body of POST /v1/push/test: either an AOR (every push-capable
// binding of it, or one instance) or an explicit target.
type pushTestRequest struct {
	AOR      string `json:"aor"`
	Instance string `json:"instance"`
	Provider string `json:"provider"`
	Token    string `json:"token"`
	Param    string `json:"param"`
	// Type is "alert" (default) or "voip".
	Type string `json:"type"`
}

// pushTestResult is one target's verdict.
type pushTestResult struct {
	AOR       string `json:"aor,omitempty"`
	Instance  string `json:"instance,omitempty"`
	Provider  string `json:"provider"`
	Token     string `json:"token"` // masked
	Type      string `json:"type"`
	Sent      bool   `json:"sent"` // false when no push was attempted (see error)
	OK        bool   `json:"ok"`
	Status    int    `json:"status"`
	ID        string `json:"id,omitempty"` // the provider's id for the push (apns-id, FCM name)
	Reason    string `json:"reason"`
	Permanent bool   `json:"permanent"`
	Error     string `json:"error"`
}

// pushTestResults is the body of POST /v1/push/test.
type pushTestResults struct {
	Results []pushTestResult `json:"results"`
}

// knownProviders are the providers a test push may name.
var knownProviders = map[string]bool{
	push.ProviderAPNs: true, push.ProviderAPNsDev: true, push.ProviderFCM: true,
	push.ProviderWebPush: true, push.ProviderWebhook: true,
}

// pushTestJob is one test push to send, or a reason not to send it.
type pushTestJob struct {
	res    pushTestResult
	note   *push.Notification
	tokens []string // every token of the target, to scrub from error texts
}

func (s *adminServer) pushTest(w http.ResponseWriter, r *http.Request) {
	if s.deps.Push == nil {
		writeAdminError(w, http.StatusServiceUnavailable, "push is not configured (push.apns, push.fcm or push.webhook)")
		return
	}
	var req pushTestRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeAdminError(w, http.StatusBadRequest, "request body: %v", err)
		return
	}
	typ := push.TypeAlert
	switch req.Type {
	case "", string(push.TypeAlert):
	case string(push.TypeVoIP):
		typ = push.TypeVoIP
	default:
		writeAdminError(w, http.StatusBadRequest, "type %q: want alert or voip", req.Type)
		return
	}
	var jobs []pushTestJob
	switch {
	case req.AOR != "" && (req.Token != "" || req.Provider != "" || req.Param != ""):
		writeAdminError(w, http.StatusBadRequest, "give either aor (and instance) or provider, token and param, not both")
		return
	case req.AOR != "":
		aor, err := parseAOR(req.AOR)
		if err != nil {
			writeAdminError(w, http.StatusBadRequest, "%v", err)
			return
		}
		bs, err := s.deps.Store.Bindings(r.Context(), aor)
		if err != nil {
			s.storeError(w, "bindings of "+aor, err)
			return
		}
		found := false
		for i := range bs {
			b := &bs[i]
			if req.Instance != "" && b.Instance != req.Instance {
				continue
			}
			found = true
			if b.Push == nil || b.Push.Token == "" {
				continue
			}
			jobs = append(jobs, bindingTestJob(b, typ))
		}
		switch {
		case !found && req.Instance != "":
			writeAdminError(w, http.StatusNotFound, "no live binding %s of %s", req.Instance, aor)
			return
		case !found:
			writeAdminError(w, http.StatusNotFound, "no live binding for %s", aor)
			return
		case len(jobs) == 0:
			writeAdminError(w, http.StatusNotFound, "no binding of %s has a push target", aor)
			return
		}
	case req.Instance != "":
		writeAdminError(w, http.StatusBadRequest, "instance needs aor")
		return
	case req.Token != "":
		if !knownProviders[req.Provider] {
			writeAdminError(w, http.StatusBadRequest, "provider %q: want one of apns, apns.dev, fcm, webpush, webhook", req.Provider)
			return
		}
		t := push.Target{Provider: req.Provider, Token: req.Token, Param: req.Param}
		if typ == push.TypeVoIP && !t.IsAPNs() {
			writeAdminError(w, http.StatusBadRequest, "type voip is for apns and apns.dev targets only")
			return
		}
		jobs = append(jobs, targetTestJob(t, "", typ))
	default:
		writeAdminError(w, http.StatusBadRequest, "give aor, or provider and token (and param)")
		return
	}

	results := make([]pushTestResult, len(jobs))
	var wg sync.WaitGroup
	for i := range jobs {
		if jobs[i].note == nil {
			results[i] = jobs[i].res
			continue
		}
		wg.Go(func() { results[i] = s.sendTest(r.Context(), &jobs[i]) })
	}
	wg.Wait()
	writeAdminJSON(w, http.StatusOK, pushTestResults{Results: results})
}

// bindingTestJob builds the test push of push type typ for binding b. An APNs device gets
// an alert only when it accepts remote pushes and a VoIP push only when it gave a VoIP
// token, as the wake module decides; a non-Apple device never gets a VoIP push.
func bindingTestJob(b *store.Binding, typ push.Type) pushTestJob {
	t := push.Target{Provider: b.Push.Provider, Token: b.Push.Token, Param: b.Push.Param, Tokens: b.Push.Tokens, Legacy: b.Push.Legacy}
	job := targetTestJob(t, b.AOR, typ)
	job.res.Instance = b.Instance
	has := func(x string) bool {
		for _, y := range b.Push.Types {
			if y == x {
				return true
			}
		}
		return false
	}
	var skip string
	switch {
	case typ == push.TypeVoIP && !t.IsAPNs():
		skip = "not sent: voip pushes exist only for apple devices"
	case typ == push.TypeVoIP && !has(registrar.PushTypeVoIP):
		skip = "not sent: the device gave no voip push token"
	case typ == push.TypeAlert && t.IsAPNs() && !has(registrar.PushTypeRemote):
		skip = "not sent: the device accepts only voip pushes (try type voip)"
	}
	if skip != "" {
		job.note = nil
		job.res.Error = skip
	}
	return job
}

// targetTestJob builds the test push of type typ to t. An alert test push is an iOS alert
// (or a data message elsewhere) with event "register": an app that handles it at all
// registers again, which is harmless. A VoIP test push is an incoming-call push with a
// fresh Call-ID that belongs to no call.
func targetTestJob(t push.Target, aor string, typ push.Type) pushTestJob {
	now := time.Now()
	n := &push.Notification{Target: t, Type: typ}
	if typ == push.TypeVoIP {
		callID := newTestCallID()
		n.Payload = push.Payload{Event: push.EventCall, CallID: callID, AOR: aor}
		n.Expiration = now.Add(adminTestCallTTL)
		n.CollapseID = push.CollapseID(callID)
	} else {
		if !t.IsAPNs() {
			n.Type = push.TypeData
		}
		n.Payload = push.Payload{Event: push.EventRegister, AOR: aor}
		n.Alert = &push.Alert{Title: adminTestTitle, Body: adminTestBody}
		n.Expiration = now.Add(adminTestPushTTL)
		n.CollapseID = "sipwake-test"
	}
	tokens := []string{t.Token}
	for _, v := range t.Tokens {
		tokens = append(tokens, v)
	}
	return pushTestJob{
		res: pushTestResult{
			AOR: aor, Provider: t.Provider, Token: push.Mask(t.TokenFor(typ)), Type: string(n.Type),
		},
		note:   n,
		tokens: tokens,
	}
}

// newTestCallID returns a Call-ID no real call has.
func newTestCallID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "sipwake-test-" + hex.EncodeToString(b[:])
}

// sendTest sends one test push and returns its verdict, with every token scrubbed from
// the error text.
func (s *adminServer) sendTest(ctx context.Context, job *pushTestJob) pushTestResult {
	ctx, cancel := context.WithTimeout(ctx, adminPushTimeout)
	defer cancel()
	res := job.res
	res.Sent = true
	out, err := s.deps.Push.Notify(ctx, job.note)
	res.Status, res.ID = out.Status, out.ID
	if err == nil {
		res.OK = true
		if res.Status == 0 {
			res.Status = http.StatusOK
		}
	} else {
		res.Reason = push.ReasonOf(err)
		res.Permanent = push.IsPermanent(err)
		var pe *push.Error
		if errors.As(err, &pe) && pe.Status != 0 {
			res.Status = pe.Status
		}
		msg := err.Error()
		for _, tok := range job.tokens {
			if tok != "" {
				msg = strings.ReplaceAll(msg, tok, push.Mask(tok))
			}
		}
		res.Error = msg
	}
	s.log.Info("test push sent", zap.String("aor", res.AOR), zap.String("instance", res.Instance),
		zap.String("pn_provider", res.Provider), zap.String("pn_token", res.Token), zap.String("push_type", res.Type),
		zap.Bool("ok", res.OK), zap.Int("status", res.Status), zap.String("reason", res.Reason))
	return res
}

// adminHeld is the body of GET /v1/calls/held.
type adminHeld struct {
	Calls []wake.HeldInfo `json:"calls"`
}

func (s *adminServer) heldCalls(w http.ResponseWriter, _ *http.Request) {
	out := adminHeld{Calls: []wake.HeldInfo{}}
	if s.deps.Held != nil {
		if h := s.deps.Held(); len(h) > 0 {
			out.Calls = h
		}
	}
	writeAdminJSON(w, http.StatusOK, out)
}

// adminPending is the body of GET /v1/messages/pending.
type adminPending struct {
	Messages []adminMessage `json:"messages"`
}

// adminMessage is a stored MESSAGE as the admin API shows it: never its
// body.
type adminMessage struct {
	ID        string    `json:"id"`
	AOR       string    `json:"aor"`
	Sender    string    `json:"sender,omitempty"`
	Received  time.Time `json:"received"`
	ExpiresAt time.Time `json:"expires_at"`
	Pending   int       `json:"pending"`
	Delivered int       `json:"delivered"`
	Attempts  int       `json:"attempts"`
}

func (s *adminServer) pendingMessages(w http.ResponseWriter, r *http.Request) {
	f := store.MessageFilter{}
	if aor := r.URL.Query().Get("aor"); aor != "" {
		norm, err := parseAOR(aor)
		if err != nil {
			writeAdminError(w, http.StatusBadRequest, "aor: %v", err)
			return
		}
		f.AOR = norm
	}
	ms, err := s.deps.Store.ListMessages(r.Context(), f)
	if err != nil {
		s.storeError(w, "stored messages", err)
		return
	}
	out := adminPending{Messages: make([]adminMessage, 0, len(ms))}
	for _, m := range ms {
		out.Messages = append(out.Messages, adminMessage{ID: m.ID, AOR: m.AOR, Sender: m.Sender, Received: m.Received.UTC(),
			ExpiresAt: m.Expires.UTC(), Pending: len(m.Pending), Delivered: len(m.Delivered), Attempts: m.Attempts})
	}
	writeAdminJSON(w, http.StatusOK, out)
}

// adminLevel is the body of the log level endpoints.
type adminLevel struct {
	Level string `json:"level"`
}

func (s *adminServer) levelSet() bool { return s.deps.Level != (zap.AtomicLevel{}) }

func (s *adminServer) getLogLevel(w http.ResponseWriter, _ *http.Request) {
	if !s.levelSet() {
		writeAdminError(w, http.StatusServiceUnavailable, "the log level cannot be changed in this process")
		return
	}
	writeAdminJSON(w, http.StatusOK, adminLevel{Level: s.deps.Level.Level().String()})
}

func (s *adminServer) putLogLevel(w http.ResponseWriter, r *http.Request) {
	if !s.levelSet() {
		writeAdminError(w, http.StatusServiceUnavailable, "the log level cannot be changed in this process")
		return
	}
	var req adminLevel
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeAdminError(w, http.StatusBadRequest, "request body: %v", err)
		return
	}
	var lvl zapcore.Level
	switch req.Level {
	case "debug", "info", "warn", "error":
		_ = lvl.UnmarshalText([]byte(req.Level))
	default:
		writeAdminError(w, http.StatusBadRequest, "level %q: want debug, info, warn or error", req.Level)
		return
	}
	old := s.deps.Level.Level()
	// Logged at info under whichever of the two levels lets it through.
	logChange := func() {
		s.log.Info("log level changed", zap.String("from", old.String()), zap.String("to", lvl.String()))
	}
	if lvl > old {
		logChange()
		s.deps.Level.SetLevel(lvl)
	} else {
		s.deps.Level.SetLevel(lvl)
		logChange()
	}
	writeAdminJSON(w, http.StatusOK, adminLevel{Level: lvl.String()})
}
