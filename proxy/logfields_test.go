package proxy

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestMask(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"short", "…"},
		{"12345678", "…"},
		{"00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0", "…1de8f0"},
	}
	for _, c := range cases {
		if got := Mask(c.in); got != c.want {
			t.Errorf("Mask(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestMaskAuthorization(t *testing.T) {
	in := `Digest username="1001", realm="pbx.test", nonce="abc123nonce", uri="sip:pbx.test", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001`
	got := MaskAuthorization(in)
	for _, secret := range []string{"6629fae4", "abc123nonce", "0a4f113b"} {
		if strings.Contains(got, secret) {
			t.Errorf("masked value %q still holds %q", got, secret)
		}
	}
	for _, keep := range []string{"Digest", `username="1001"`, `realm="pbx.test"`} {
		if !strings.Contains(got, keep) {
			t.Errorf("masked value %q lost %q", got, keep)
		}
	}
}

// TestRequestLogFields: a transaction's logger carries call_id, method,
// cseq, src and transport on every line it writes.
func TestRequestLogFields(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	m, err := sip.ParseMessage([]byte("REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1\r\n" +
		"From: <sip:1001@pbx.test>;tag=a\r\nTo: <sip:1001@pbx.test>\r\nCall-ID: cid-1\r\nCSeq: 7 REGISTER\r\nContent-Length: 0\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Request{Msg: m.(*sip.Request), Source: "10.0.0.1:5060", Transport: "UDP", srv: &Server{log: zap.New(core)}}
	r.Log().Info("one")
	r.Log().Warn("two")
	if logs.Len() != 2 {
		t.Fatalf("%d lines", logs.Len())
	}
	for _, e := range logs.All() {
		got := e.ContextMap()
		want := map[string]any{FieldCallID: "cid-1", FieldMethod: "REGISTER", FieldCSeq: uint32(7), FieldSrc: "10.0.0.1:5060", FieldTransport: "udp"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %v (%T), want %v", e.Message, k, got[k], got[k], v)
			}
		}
	}
}
