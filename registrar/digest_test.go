package registrar

import (
	"strings"
	"testing"
)

// The RFC 2617 §3.5 and RFC 7616 §3.9.1 examples: the response computed
// from an HA1 must match the published ones.
func TestDigestPublishedExamples(t *testing.T) {
	for _, tc := range []struct {
		name, header, user, password, method, uri, cnonce, want string
	}{
		{
			name:   "rfc2617 md5 qop=auth",
			header: `Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"`,
			user:   "Mufasa", password: "Circle Of Life", method: "GET", uri: "/dir/index.html",
			cnonce: "0a4f113b", want: "6629fae49393a05397450978507c4ef1",
		},
		{
			name:   "rfc7616 sha-256",
			header: `Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"`,
			user:   "Mufasa", password: "Circle of Life", method: "GET", uri: "/dir/index.html",
			cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", want: "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
		},
		{
			name:   "rfc7616 md5",
			header: `Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"`,
			user:   "Mufasa", password: "Circle of Life", method: "GET", uri: "/dir/index.html",
			cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", want: "8ca523f5e9506fed4657c9700eebdbec",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := parseChallenge(tc.header)
			if err != nil {
				t.Fatal(err)
			}
			ha1, err := HA1(ch.algorithm, tc.user, ch.realm, tc.password)
			if err != nil {
				t.Fatal(err)
			}
			got := ch.authorization(tc.user, ha1, tc.method, tc.uri, 1, tc.cnonce)
			if !strings.Contains(got, `response="`+tc.want+`"`) {
				t.Fatalf("authorization %s\nwant response %s", got, tc.want)
			}
			for _, part := range []string{"nc=00000001", `cnonce="` + tc.cnonce + `"`, "qop=auth", `opaque="`} {
				if !strings.Contains(got, part) {
					t.Errorf("authorization lacks %s: %s", part, got)
				}
			}
		})
	}
}

func TestDigestNoQOP(t *testing.T) {
	// RFC 2069 style (Kamailio without qop): response = H(HA1:nonce:HA2).
	ch, err := parseChallenge(`Digest realm="pbx.test", nonce="abc"`)
	if err != nil {
		t.Fatal(err)
	}
	ha1, _ := HA1("", "1001", "pbx.test", "pw")
	got := ch.authorization("1001", ha1, "REGISTER", "sip:pbx.test", 1, "")
	ha2, _ := HA1("", "REGISTER", "sip", "pbx.test") // H("REGISTER:sip:pbx.test")
	want, _ := HA1("", ha1, "abc", ha2)
	if !strings.Contains(got, `response="`+want+`"`) || strings.Contains(got, "qop") || strings.Contains(got, "cnonce") {
		t.Fatalf("got %s, want response %s and no qop", got, want)
	}
}

func TestParseChallengeRefuses(t *testing.T) {
	for _, h := range []string{
		`Basic realm="x"`,
		`Digest realm="x"`, // no nonce
		`Digest realm="x", nonce="n", qop="auth-int"`,
		`Digest realm="x", nonce="n", algorithm=SHA-512-256`,
	} {
		if _, err := parseChallenge(h); err == nil {
			t.Errorf("parseChallenge(%q) accepted", h)
		}
	}
}
