package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
)

// Flow identifies a device's connection (RFC 5626 §5.2 flow): the
// transport and the device's remote address as seen by this node.
type Flow struct {
	Transport string // UDP, TCP or TLS
	Remote    string // "ip:port"
}

// errBadFlowToken is returned for tokens that were not issued by this
// proxy or are bound to another dialog.
var errBadFlowToken = errors.New("proxy: bad flow token")

// flowTokens signs and verifies flow tokens. A token is placed in the user
// part of the Record-Route URIs sipwake inserts, so that in-dialog requests
// find their way back to the device's connection, and it is bound to the
// dialog's Call-ID so it cannot steer requests of another call.
type flowTokens struct {
	key []byte
}

const flowMACLen = 12

// encode returns the token for flow f in the call with the given Call-ID.
// Format (base64url, no padding): transport byte, 16-byte IP, 2-byte port,
// 12-byte HMAC-SHA256 over those and the Call-ID.
func (ft *flowTokens) encode(f Flow, callID string) string {
	ap, err := netip.ParseAddrPort(f.Remote)
	if err != nil {
		return ""
	}
	var raw [1 + 16 + 2 + flowMACLen]byte
	raw[0] = transportByte(f.Transport)
	ip := ap.Addr().As16()
	copy(raw[1:17], ip[:])
	raw[17] = byte(ap.Port() >> 8)
	raw[18] = byte(ap.Port())
	copy(raw[19:], ft.mac(raw[:19], callID))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// decode verifies tok against callID and returns its flow.
func (ft *flowTokens) decode(tok, callID string) (Flow, error) {
	var raw [1 + 16 + 2 + flowMACLen]byte
	if base64.RawURLEncoding.DecodedLen(len(tok)) != len(raw) {
		return Flow{}, errBadFlowToken
	}
	if _, err := base64.RawURLEncoding.Decode(raw[:], []byte(tok)); err != nil {
		return Flow{}, errBadFlowToken
	}
	if !hmac.Equal(raw[19:], ft.mac(raw[:19], callID)) {
		return Flow{}, errBadFlowToken
	}
	tr := transportName(raw[0])
	if tr == "" {
		return Flow{}, errBadFlowToken
	}
	addr := netip.AddrFrom16([16]byte(raw[1:17])).Unmap()
	port := uint16(raw[17])<<8 | uint16(raw[18])
	return Flow{Transport: tr, Remote: netip.AddrPortFrom(addr, port).String()}, nil
}

func (ft *flowTokens) mac(payload []byte, callID string) []byte {
	m := hmac.New(sha256.New, ft.key)
	m.Write(payload)
	m.Write([]byte(callID))
	return m.Sum(nil)[:flowMACLen]
}

func transportByte(t string) byte {
	switch strings.ToUpper(t) {
	case "UDP":
		return 1
	case "TCP":
		return 2
	case "TLS":
		return 3
	case "WS":
		return 4
	case "WSS":
		return 5
	}
	return 0
}

func transportName(b byte) string {
	switch b {
	case 1:
		return "UDP"
	case 2:
		return "TCP"
	case 3:
		return "TLS"
	case 4:
		return "WS"
	case 5:
		return "WSS"
	}
	return ""
}
