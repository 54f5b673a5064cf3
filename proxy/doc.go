// Package proxy is sipwake's SIP engine, built on sipgo.
//
// It owns the transport listeners (UDP, TCP, TLS), the transaction layer,
// the handler chain and its modules' lifecycle, and the last handler of the
// chain: a record-routing, transaction-stateful forwarder that follows
// RFC 3261 §16 (Via with rport/received per RFC 3581, Record-Route,
// loose routing, Max-Forwards, loop detection, CANCEL, ACK, 2xx
// retransmissions) and RFC 5626 flow handling (a request for a device goes
// back over the connection the device opened).
//
// The forwarder only forwards in three directions (no open relay):
//
//  1. from a device to the configured upstream PBX (out-of-dialog requests
//     whose Request-URI names a domain the PBX serves);
//  2. from a trusted source (the PBX) to a device, when a module (the
//     registrar) resolved the Request-URI to a device binding;
//  3. in-dialog requests along a Record-Route set sipwake inserted, which
//     carries a signed flow token.
//
// Anything else is answered 403 or 404.
//
// A Tap (Config.Tap) sees every message received and sent, as on the wire,
// for the SIP trace and for HEP export (package proxy/hep); MaskMessage
// hides the secrets of a message before anyone reads it.
//
// The package imports none of sipwake's other packages: modules (registrar,
// wake, ...) are handed to it as Middleware by cmd/sipwake.
package proxy
