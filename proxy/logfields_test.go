package proxy

import (
	"strings"
	"testing"
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
