// Package proxytest holds fakes and helpers for tests of sipwake's SIP
// side: a raw UDP/TCP user agent that sends exact bytes and parses what
// comes back, and request builders. It imports no sipwake package, so
// every package's tests may use it.
package proxytest
