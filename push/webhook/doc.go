// Package webhook hands pushes to the operator's own push service: each
// push is a JSON POST to one URL, signed with HMAC-SHA256 when a secret
// is configured. It serves the providers sipwake has no native notifier
// for (webpush, or apns/fcm when their credentials live elsewhere).
//
// The body is
//
//	{"sipwake": {"event": "call", "call_id": "…", …},
//	 "target": {"provider": "webpush", "token": "…", "param": "…"},
//	 "type": "voip", "timestamp": 1767225600, …}
//
// and, with a secret, the headers X-Sipwake-Timestamp (Unix seconds, the
// same as "timestamp") and X-Sipwake-Signature: sha256=<hex HMAC-SHA256
// of the body under the secret>. A 2xx answer is success, 410 means the
// token is dead, 429 and 5xx are transient (Retry-After honoured).
package webhook
