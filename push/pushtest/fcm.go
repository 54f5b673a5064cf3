package pushtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FCMScope is the OAuth2 scope an FCM sender needs.
const FCMScope = "https://www.googleapis.com/auth/firebase.messaging"

// FCMAndroid is the "android" block of an FCM v1 message.
type FCMAndroid struct {
	Priority    string          `json:"priority"`
	TTL         string          `json:"ttl"`
	CollapseKey string          `json:"collapse_key"`
	Data        json.RawMessage `json:"data"`
	// Notification is the Android notification block, if any.
	Notification json.RawMessage `json:"notification"`
}

// FCMMessage is the "message" object of a messages:send request.
type FCMMessage struct {
	Token        string            `json:"token"`
	Topic        string            `json:"topic"`
	Condition    string            `json:"condition"`
	Data         map[string]string `json:"data"`
	Android      *FCMAndroid       `json:"android"`
	Notification json.RawMessage   `json:"notification"`
	APNs         json.RawMessage   `json:"apns"`
	Webpush      json.RawMessage   `json:"webpush"`
}

// FCMRequest is one messages:send request the fake FCM received.
type FCMRequest struct {
	// ProjectID is the {id} of /v1/projects/{id}/messages:send.
	ProjectID string
	// Bearer is the OAuth2 access token the request carried.
	Bearer string
	// Header holds the request headers.
	Header http.Header
	// Body is the raw JSON request; Message its decoded "message".
	Body    []byte
	Message FCMMessage
	// Proto is the HTTP protocol the request came over.
	Proto string
	// RemoteAddr is the client's address: one per connection.
	RemoteAddr string
	// Status and ErrorCode are what the fake answered (Status 0 while a
	// hung request waits).
	Status    int
	ErrorCode string
}

// Ready-made FCM error replies, as FCM sends them.
var (
	FCMUnregistered      = Reply{Status: 404, Reason: "UNREGISTERED", Message: "Requested entity was not found."}
	FCMInvalidToken      = Reply{Status: 400, Reason: "INVALID_ARGUMENT", Message: "The registration token is not a valid FCM registration token", Field: "message.token"}
	FCMInvalidArgument   = Reply{Status: 400, Reason: "INVALID_ARGUMENT", Message: "Invalid value at 'message.android.ttl'", Field: "message.android.ttl"}
	FCMSenderIDMismatch  = Reply{Status: 403, Reason: "SENDER_ID_MISMATCH", Message: "SenderId mismatch"}
	FCMQuotaExceeded     = Reply{Status: 429, Reason: "QUOTA_EXCEEDED", Message: "Quota exceeded.", RetryAfter: 30 * time.Second}
	FCMUnavailable       = Reply{Status: 503, Reason: "UNAVAILABLE", Message: "The service is currently unavailable."}
	FCMInternal          = Reply{Status: 500, Reason: "INTERNAL", Message: "Internal error encountered."}
	FCMThirdPartyAuthErr = Reply{Status: 401, Reason: "THIRD_PARTY_AUTH_ERROR", Message: "Auth error from APNS or Web Push Service"}
)

// Ready-made APNs error replies.
var (
	APNsUnregistered           = Reply{Status: 410, Reason: "Unregistered"}
	APNsBadDeviceToken         = Reply{Status: 400, Reason: "BadDeviceToken"}
	APNsDeviceTokenNotForTopic = Reply{Status: 400, Reason: "DeviceTokenNotForTopic"}
	APNsTooManyRequests        = Reply{Status: 429, Reason: "TooManyRequests", RetryAfter: 30 * time.Second}
	APNsInternalServerError    = Reply{Status: 500, Reason: "InternalServerError"}
	APNsServiceUnavailable     = Reply{Status: 503, Reason: "ServiceUnavailable"}
)

type serviceAccount struct {
	projectID string
	email     string
	keyID     string
	pub       *rsa.PublicKey
}

type accessToken struct {
	account *serviceAccount
	expires time.Time
}

// FCM is a fake Firebase Cloud Messaging HTTP v1 API with its own OAuth2
// token endpoint.
type FCM struct {
	// URL is the base URL, https://127.0.0.1:port.
	URL string
	// Endpoint is the FCM v1 base URL (URL + "/v1"): the client's
	// Endpoint option.
	Endpoint string
	// TokenURL is the OAuth2 token endpoint written into service-account
	// files as token_uri.
	TokenURL string

	ca       *CA
	replies  *replies
	rec      *recorder[FCMRequest]
	msgs     atomic.Int64
	issued   atomic.Int64
	asked    atomic.Int64
	mu       sync.Mutex
	accounts map[string]*serviceAccount // by client_email
	tokens   map[string]accessToken
	lifetime time.Duration
	oauth    Reply
}

// NewFCM starts a fake FCM with certificates from ca (a new CA when nil),
// closed at the end of the test.
func NewFCM(t testing.TB, ca *CA) *FCM {
	t.Helper()
	if ca == nil {
		ca = NewCA(t)
	}
	f := &FCM{
		ca:       ca,
		replies:  newReplies(),
		rec:      newRecorder[FCMRequest](),
		accounts: map[string]*serviceAccount{},
		tokens:   map[string]accessToken{},
		lifetime: time.Hour,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.serveToken)
	mux.HandleFunc("/v1/", f.serveSend)
	srv := startTLS(t, ca, mux, false)
	f.URL = srv.URL
	f.Endpoint = srv.URL + "/v1"
	f.TokenURL = srv.URL + "/token"
	t.Cleanup(func() {
		f.Release()
		srv.Close()
	})
	return f
}

// WriteServiceAccount generates an RSA key for a new service account of
// projectID, writes its JSON credentials file (token_uri = TokenURL) in
// t.TempDir() and returns the path.
func (f *FCM) WriteServiceAccount(t testing.TB, projectID string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("pushtest: rsa key: %v", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("pushtest: rsa key: %v", err)
	}
	var kid [20]byte
	_, _ = rand.Read(kid[:])
	acct := &serviceAccount{
		projectID: projectID,
		email:     fmt.Sprintf("sipwake-%s@%s.iam.gserviceaccount.com", hex.EncodeToString(kid[:3]), projectID),
		keyID:     hex.EncodeToString(kid[:]),
		pub:       &key.PublicKey,
	}
	f.mu.Lock()
	f.accounts[acct.email] = acct
	f.mu.Unlock()
	data, err := json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  projectID,
		"private_key_id":              acct.keyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                acct.email,
		"client_id":                   "100000000000000000000",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   f.TokenURL,
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
	}, "", "  ")
	if err != nil {
		t.Fatalf("pushtest: service account: %v", err)
	}
	return writeFile(t, "service-account-"+projectID+".json", data)
}

// SetTokenLifetime sets the expires_in of access tokens issued from now
// on (default one hour).
func (f *FCM) SetTokenLifetime(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lifetime = d
}

// ReplyOAuth makes the token endpoint answer r (Status and Reason as the
// OAuth2 "error", e.g. 400 "invalid_grant") instead of issuing tokens;
// the zero Reply restores normal operation.
func (f *FCM) ReplyOAuth(r Reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.oauth = r
}

// RevokeTokens invalidates every access token issued so far: requests
// carrying one get 401 UNAUTHENTICATED.
func (f *FCM) RevokeTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.tokens)
}

// TokensIssued is how many access tokens the token endpoint issued.
func (f *FCM) TokensIssued() int { return int(f.issued.Load()) }

// TokenRequests is how many requests the token endpoint received,
// refused ones included.
func (f *FCM) TokenRequests() int { return int(f.asked.Load()) }

// ReplyToken makes every push to registration token tok answer r.
func (f *FCM) ReplyToken(tok string, r Reply) { f.replies.forToken(tok, r) }

// ReplyNext makes the next n pushes (to tokens without their own reply)
// answer r.
func (f *FCM) ReplyNext(n int, r Reply) { f.replies.queue(n, r) }

// ReplyAll sets the answer of pushes that no other rule covers.
func (f *FCM) ReplyAll(r Reply) { f.replies.all(r) }

// Release lets every hung request (and every later Hang reply) finish.
func (f *FCM) Release() { f.replies.releaseAll() }

// Requests returns the messages:send requests received so far.
func (f *FCM) Requests() []FCMRequest {
	items, _ := f.rec.snapshot()
	return items
}

// WaitRequests waits until n messages:send requests arrived and returns
// the first n; it fails the test after timeout. Call it from the test
// goroutine.
func (f *FCM) WaitRequests(t testing.TB, n int, timeout time.Duration) []FCMRequest {
	t.Helper()
	return f.rec.wait(t, n, timeout, "fcm")
}

// Reset forgets the recorded requests.
func (f *FCM) Reset() { f.rec.reset() }

func (f *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	f.asked.Add(1)
	oauthErr := func(status int, code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	f.mu.Lock()
	override, lifetime := f.oauth, f.lifetime
	f.mu.Unlock()
	if override.Status != 0 {
		if override.Hang {
			f.replies.hang(r.Context())
		}
		override.writeRetryAfter(w)
		oauthErr(override.Status, override.Reason, override.Message)
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthErr(http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		oauthErr(http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type")
		return
	}
	jwt, err := decodeJWT(r.PostForm.Get("assertion"))
	if err != nil {
		oauthErr(http.StatusBadRequest, "invalid_grant", "Invalid JWT")
		return
	}
	f.mu.Lock()
	acct := f.accounts[jwt.str(jwt.claims, "iss")]
	f.mu.Unlock()
	now := time.Now()
	switch {
	case acct == nil:
		oauthErr(http.StatusBadRequest, "invalid_grant", "Invalid grant: account not found")
		return
	case !jwt.verifyRS256(acct.pub):
		oauthErr(http.StatusBadRequest, "invalid_grant", "Invalid JWT Signature.")
		return
	case kidOf(jwt) != "" && kidOf(jwt) != acct.keyID:
		oauthErr(http.StatusBadRequest, "invalid_grant", "Invalid key id")
		return
	case jwt.str(jwt.claims, "aud") != f.TokenURL:
		oauthErr(http.StatusBadRequest, "invalid_grant", "Invalid JWT: audience")
		return
	case !strings.Contains(" "+jwt.str(jwt.claims, "scope")+" ", " "+FCMScope+" "):
		oauthErr(http.StatusBadRequest, "invalid_scope", "Scope missing")
		return
	case jwt.num("exp") < now.Unix() || jwt.num("exp") > now.Add(time.Hour+time.Minute).Unix():
		oauthErr(http.StatusBadRequest, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
		return
	}
	n := f.issued.Add(1)
	tok := fmt.Sprintf("ya29.pushtest-%d-%s", n, hex.EncodeToString(randBytes(12)))
	f.mu.Lock()
	f.tokens[tok] = accessToken{account: acct, expires: now.Add(lifetime)}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok,
		"expires_in":   int(lifetime / time.Second),
		"token_type":   "Bearer",
	})
}

func kidOf(j *jwtParts) string { return j.str(j.header, "kid") }

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

var (
	sendPath = regexp.MustCompile(`^/v1/projects/([^/]+)/messages:send$`)
	ttlRe    = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)
)

var grpcStatus = map[int]string{
	400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
	429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
}

func (f *FCM) serveSend(w http.ResponseWriter, r *http.Request) {
	req := FCMRequest{Header: r.Header.Clone(), Proto: r.Proto, RemoteAddr: r.RemoteAddr}
	req.Body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rep := f.check(r, &req)
	if rep.Status == 0 {
		rep = f.replies.pick(req.Message.Token)
	}
	req.Status, req.ErrorCode = rep.status(), rep.Reason
	f.rec.add(req)
	if rep.Hang {
		f.replies.hang(r.Context())
	}
	rep.writeRetryAfter(w)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	if rep.status() == http.StatusOK {
		_ = json.NewEncoder(w).Encode(map[string]string{
			"name": fmt.Sprintf("projects/%s/messages/0:%d%%pushtest", req.ProjectID, f.msgs.Add(1)),
		})
		return
	}
	w.WriteHeader(rep.status())
	_ = json.NewEncoder(w).Encode(fcmErrorBody(rep))
}

// fcmErrorBody is the Google API error object FCM answers with.
func fcmErrorBody(rep Reply) map[string]any {
	status := grpcStatus[rep.status()]
	if status == "" {
		status = "UNKNOWN"
	}
	msg := rep.Message
	if msg == "" {
		msg = http.StatusText(rep.status())
	}
	var details []any
	if rep.Reason != "" {
		details = append(details, map[string]any{
			"@type":     "type.googleapis.com/google.firebase.fcm.v1.FcmError",
			"errorCode": rep.Reason,
		})
	}
	if rep.Field != "" {
		details = append(details, map[string]any{
			"@type": "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []any{map[string]any{
				"field": rep.Field, "description": msg,
			}},
		})
	}
	e := map[string]any{"code": rep.status(), "message": msg, "status": status}
	if details != nil {
		e["details"] = details
	}
	return map[string]any{"error": e}
}

// check authenticates and validates a messages:send request as FCM
// would; the zero Reply means valid.
func (f *FCM) check(r *http.Request, req *FCMRequest) Reply {
	m := sendPath.FindStringSubmatch(r.URL.Path)
	if m == nil || r.Method != http.MethodPost {
		return Reply{Status: 404, Message: "Not Found"}
	}
	req.ProjectID = m[1]
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	req.Bearer = bearer
	f.mu.Lock()
	at, known := f.tokens[bearer]
	f.mu.Unlock()
	switch {
	case !ok || !known || time.Now().After(at.expires):
		return Reply{Status: 401, Message: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential."}
	case at.account.projectID != req.ProjectID:
		return Reply{Status: 403, Message: "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/" + req.ProjectID + "'"}
	}
	var body struct {
		ValidateOnly bool            `json:"validate_only"`
		Message      json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil || len(body.Message) == 0 {
		return Reply{Status: 400, Reason: "INVALID_ARGUMENT", Message: "Invalid JSON payload received."}
	}
	if err := json.Unmarshal(body.Message, &req.Message); err != nil {
		return Reply{Status: 400, Reason: "INVALID_ARGUMENT", Message: "Invalid JSON payload received: " + err.Error()}
	}
	msg := req.Message
	size := 0
	for k, v := range msg.Data {
		size += len(k) + len(v)
		if k == "from" || k == "notification" || k == "message_type" ||
			strings.HasPrefix(k, "google") || strings.HasPrefix(k, "gcm") {
			return Reply{Status: 400, Reason: "INVALID_ARGUMENT", Message: "Invalid data payload key: " + k, Field: "message.data"}
		}
	}
	switch {
	case msg.Token == "" && msg.Topic == "" && msg.Condition == "":
		return Reply{Status: 400, Reason: "INVALID_ARGUMENT", Message: "Recipient of the message is not set.", Field: "message"}
	case size > 4096:
		return Reply{Status: 400, Reason: "INVALID_ARGUMENT", Message: "Android message is too big", Field: "message"}
	case msg.Android != nil && msg.Android.TTL != "" && !ttlRe.MatchString(msg.Android.TTL):
		return Reply{Status: 400, Reason: "INVALID_ARGUMENT", Message: "Invalid value at 'message.android.ttl'", Field: "message.android.ttl"}
	case msg.Android != nil && msg.Android.Priority != "" && !strings.EqualFold(msg.Android.Priority, "high") &&
		!strings.EqualFold(msg.Android.Priority, "normal"):
		return Reply{Status: 400, Reason: "INVALID_ARGUMENT", Message: "Invalid value at 'message.android.priority'", Field: "message.android.priority"}
	}
	return Reply{}
}
