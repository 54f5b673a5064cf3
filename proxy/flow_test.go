package proxy

import (
	"encoding/base64"
	"testing"
)

func TestFlowTokenRoundTripAndTamper(t *testing.T) {
	ft := flowTokens{key: []byte("0123456789abcdef0123456789abcdef")}
	cases := []Flow{
		{Transport: "UDP", Remote: "192.0.2.10:5060"},
		{Transport: "TCP", Remote: "127.0.0.1:40912"},
		{Transport: "TLS", Remote: "[2001:db8::1]:5061"},
	}
	for _, f := range cases {
		tok := ft.encode(f, "call-1")
		if tok == "" {
			t.Fatalf("encode(%v) empty", f)
		}
		got, err := ft.decode(tok, "call-1")
		if err != nil || got != f {
			t.Errorf("decode(encode(%v)) = %v, %v", f, got, err)
		}
		if _, err := ft.decode(tok, "call-2"); err == nil {
			t.Errorf("token of call-1 accepted for call-2")
		}
		raw, _ := base64.RawURLEncoding.DecodeString(tok)
		raw[5] ^= 0x01 // another address
		if _, err := ft.decode(base64.RawURLEncoding.EncodeToString(raw), "call-1"); err == nil {
			t.Errorf("tampered token accepted")
		}
		other := flowTokens{key: []byte("another key, another node........")}
		if _, err := other.decode(tok, "call-1"); err == nil {
			t.Errorf("token accepted under another key")
		}
	}
	for _, bad := range []string{"", "x", "!!!!", "aGVsbG8"} {
		if _, err := ft.decode(bad, "c"); err == nil {
			t.Errorf("decode(%q) accepted", bad)
		}
	}
	if ft.encode(Flow{Transport: "UDP", Remote: "not-an-address"}, "c") != "" {
		t.Errorf("encode of a non-address flow should be empty")
	}
}

func FuzzFlowTokenDecode(f *testing.F) {
	ft := flowTokens{key: []byte("k")}
	f.Add(ft.encode(Flow{Transport: "TCP", Remote: "127.0.0.1:1"}, "c"), "c")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, tok, cid string) {
		_, _ = ft.decode(tok, cid) // must not panic
	})
}
