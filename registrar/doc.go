// Package registrar handles REGISTER for sipwake.
//
// In pass-through mode a device's REGISTER is relayed to the PBX with its
// push parameters stripped and its Contact replaced by a sipwake contact
// carrying an opaque binding token (plus a Path header); the PBX's
// challenges and the device's credentials pass through unchanged. Only when
// the PBX answers 2xx is the binding stored, with its push target; the 2xx
// to the device carries the device's own Contact and the expiry granted.
//
// The module also resolves requests the PBX sends to a sipwake contact:
// the token finds the binding, and the request goes to the device over its
// flow.
//
// Push parameters (RFC 8599 and the Linphone legacy set) are parsed here;
// tokens are secrets and never reach the PBX or the logs in full.
package registrar
