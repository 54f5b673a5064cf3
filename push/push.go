package push

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Provider names, as in RFC 8599 pn-provider.
const (
	ProviderAPNs    = "apns"
	ProviderAPNsDev = "apns.dev"
	ProviderFCM     = "fcm"
	ProviderWebPush = "webpush"
	// ProviderWebhook is the operator's own push service (push.webhook).
	ProviderWebhook = "webhook"
)

// Type is how a push is presented on the device.
type Type string

// Push types.
const (
	// TypeVoIP is an APNs PushKit push: only ever for an incoming call.
	TypeVoIP Type = "voip"
	// TypeAlert is a visible notification (iOS alert, with
	// mutable-content so the app's extension can edit it).
	TypeAlert Type = "alert"
	// TypeBackground is a silent wake-up (iOS content-available).
	TypeBackground Type = "background"
	// TypeData is a provider-neutral data message (FCM, webhook); APNs
	// refuses it.
	TypeData Type = "data"
)

// Event is the payload's "event" field.
type Event string

// Payload events (INTERFACE.md).
const (
	EventCall                  Event = "call"
	EventCallCancelled         Event = "call_cancelled"
	EventCallMissed            Event = "call_missed"
	EventCallAnsweredElsewhere Event = "call_answered_elsewhere"
	EventMessage               Event = "message"
	EventRegister              Event = "register"
	// EventLoginRequired: sipwake can no longer keep the device
	// registered at the PBX (its stored credentials were refused); the
	// user must sign in in the app.
	EventLoginRequired Event = "login_required"
)

// Target is where a push goes: built from a binding's push parameters.
type Target struct {
	// Provider is apns, apns.dev, fcm, webpush (or webhook).
	Provider string
	// Token is the device token (pn-prid).
	Token string
	// Param is pn-param: APNs "TEAMID.bundle.id[.voip]", FCM project id.
	Param string
	// Tokens maps a push type ("voip", "remote") to its token when the
	// device gave one per type (Apple "remote&voip" form).
	Tokens map[string]string
	// Legacy keeps Linphone legacy options verbatim.
	Legacy map[string]string
}

// Sandbox reports whether the target is an APNs development token.
func (t Target) Sandbox() bool { return t.Provider == ProviderAPNsDev }

// IsAPNs reports whether the target is an Apple device.
func (t Target) IsAPNs() bool {
	return t.Provider == ProviderAPNs || t.Provider == ProviderAPNsDev
}

// TokenFor returns the token to use for push type typ: the per-type token
// when the device gave one ("voip" for TypeVoIP, "remote" otherwise), else
// Token.
func (t Target) TokenFor(typ Type) string {
	key := "remote"
	if typ == TypeVoIP {
		key = "voip"
	}
	if tok := t.Tokens[key]; tok != "" {
		return tok
	}
	return t.Token
}

// Topic is the APNs topic for push type typ: the bundle id (pn-param
// without "TEAMID.", or a legacy target's app-id as it is), with ".voip" for VoIP pushes and without it for
// the others.
func (t Target) Topic(typ Type) string {
	bundle := t.Param
	// RFC 8599 pn-param is "TEAMID.bundle"; Linphone legacy app-id is the
	// bundle alone.
	if _, legacy := t.Legacy["pn-type"]; !legacy {
		if i := strings.IndexByte(bundle, '.'); i >= 0 {
			bundle = bundle[i+1:]
		}
	}
	bundle = strings.TrimSuffix(bundle, ".voip")
	if typ == TypeVoIP {
		return bundle + ".voip"
	}
	return bundle
}

// Payload is what the app receives: the flat "sipwake" object.
type Payload struct {
	Event  Event
	CallID string
	// UUID is derived from CallID (UUIDFromCallID) when empty.
	UUID     string
	AOR      string
	FromURI  string
	FromName string
	// Body is a message preview, only when the operator allows it.
	Body string
}

// Fields returns the payload as the flat string map every encoding uses;
// empty fields are left out.
func (p Payload) Fields() map[string]string {
	m := make(map[string]string, 7)
	add := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	add("event", string(p.Event))
	add("call_id", p.CallID)
	uuid := p.UUID
	if uuid == "" && p.CallID != "" {
		uuid = UUIDFromCallID(p.CallID)
	}
	add("uuid", uuid)
	add("aor", p.AOR)
	add("from_uri", p.FromURI)
	add("from_name", p.FromName)
	add("body", p.Body)
	return m
}

// Alert is the visible text of an alert push.
type Alert struct {
	Title string
	Body  string
}

// Notification is one push to one device.
type Notification struct {
	Target  Target
	Type    Type
	Payload Payload
	// Alert is shown by TypeAlert pushes.
	Alert *Alert
	// Expiration: the provider drops the push after it (APNs
	// apns-expiration, FCM android.ttl). Zero means the provider default.
	Expiration time.Time
	// CollapseID groups pushes that replace each other (APNs
	// apns-collapse-id, FCM collapse_key); CollapseID(callID) for calls.
	CollapseID string
}

// Result is a provider's acceptance of a push.
type Result struct {
	// ID is the provider's id for the push (apns-id, FCM message name).
	ID string
	// Status is the HTTP status the provider answered.
	Status int
}

// Notifier sends pushes for one or more providers.
type Notifier interface {
	// Notify sends n and waits for the provider's answer (or ctx). A
	// failure is an *Error.
	Notify(ctx context.Context, n *Notification) (Result, error)
}

// Bounded metric reasons of push errors.
const (
	ReasonUnregistered   = "unregistered"      // APNs 410, FCM UNREGISTERED
	ReasonBadToken       = "bad_device_token"  // APNs BadDeviceToken, FCM INVALID_ARGUMENT on the token
	ReasonTopicMismatch  = "topic_mismatch"    // APNs DeviceTokenNotForTopic, FCM SENDER_ID_MISMATCH
	ReasonRateLimited    = "rate_limited"      // 429
	ReasonServerError    = "server_error"      // 5xx
	ReasonTimeout        = "timeout"           // no answer in time
	ReasonNetwork        = "network"           // connection failed
	ReasonAuth           = "auth"              // our credentials were refused
	ReasonBadRequest     = "bad_request"       // the provider refused the push itself
	ReasonQueueFull      = "queue_full"        // the provider's queue was full
	ReasonNoProvider     = "no_provider"       // no notifier configured for the target
	ReasonPayloadTooLong = "payload_too_large" // over the provider's size limit
)

// Error is a failed push. Permanent errors mean the device token is dead
// and should be removed; others may succeed later (after RetryAfter when
// set).
type Error struct {
	Provider string
	// Status is the provider's HTTP status, 0 when none came.
	Status int
	// Reason is one of the Reason* constants (a bounded metric label).
	Reason string
	// Detail is the provider's own word (APNs reason, FCM status).
	Detail string
	// Permanent: the token is dead (unregistered, malformed, wrong topic).
	Permanent bool
	// RetryAfter is the provider's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Err is the underlying error, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("push: ")
	b.WriteString(e.Provider)
	b.WriteString(": ")
	b.WriteString(e.Reason)
	if e.Status != 0 {
		fmt.Fprintf(&b, " (status %d", e.Status)
		if e.Detail != "" {
			b.WriteString(" " + e.Detail)
		}
		b.WriteString(")")
	} else if e.Detail != "" {
		b.WriteString(" (" + e.Detail + ")")
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err says the token is dead.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

// RetryAfter returns the provider's Retry-After carried by err, if any.
func RetryAfter(err error) (time.Duration, bool) {
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return e.RetryAfter, true
	}
	return 0, false
}

// ReasonOf is err's bounded metric reason: "" for nil, the Error's Reason,
// ReasonTimeout for context deadlines, else ReasonNetwork.
func ReasonOf(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ReasonTimeout
	}
	return ReasonNetwork
}

// UUIDFromCallID derives a stable RFC 4122 name-based (version 5) UUID
// from a Call-ID, so every push of one call names the same CallKit call.
func UUIDFromCallID(callID string) string {
	// RFC 4122 §4.3 with a fixed namespace of our own.
	ns := [16]byte{0x6b, 0x1f, 0x7c, 0x2e, 0x51, 0x3a, 0x4d, 0x0e, 0x9a, 0x57, 0x3c, 0x12, 0x8e, 0x40, 0xd1, 0x22}
	h := sha1.New()
	h.Write(ns[:])
	h.Write([]byte(callID))
	sum := h.Sum(nil)
	var u [16]byte
	copy(u[:], sum[:16])
	u[6] = (u[6] & 0x0f) | 0x50
	u[8] = (u[8] & 0x3f) | 0x80
	x := hex.EncodeToString(u[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// CollapseID derives an APNs collapse id (at most 64 bytes) from a
// Call-ID.
func CollapseID(callID string) string {
	sum := sha256.Sum256([]byte(callID))
	return "call-" + hex.EncodeToString(sum[:16])
}

// Mask shortens a token for logs: its last 6 characters at most.
func Mask(tok string) string {
	if tok == "" {
		return ""
	}
	if len(tok) <= 8 {
		return "…"
	}
	return "…" + tok[len(tok)-6:]
}
