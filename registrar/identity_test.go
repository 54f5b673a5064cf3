package registrar

import (
	"errors"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/store"
)

// parseTo parses a To header value with sipgo, as the registrar gets it.
func parseTo(tb testing.TB, value string) sip.Uri {
	tb.Helper()
	hs, err := sip.HeadersParser(sip.DefaultHeadersParser()).ParseHeader(nil, []byte("To: "+value))
	if err != nil || len(hs) != 1 {
		tb.Fatalf("sipgo cannot parse To %q: %v", value, err)
	}
	to, ok := hs[0].(*sip.ToHeader)
	if !ok {
		tb.Fatalf("not a ToHeader: %T", hs[0])
	}
	return to.Address
}

func TestNormalizeAOR(t *testing.T) {
	for _, tc := range []struct {
		to   string
		want string
		err  error
	}{
		{to: `<sip:alice@example.com>`, want: "sip:alice@example.com"},
		{to: `"Alice" <sip:alice@Example.COM>;tag=1928301774`, want: "sip:alice@example.com"},
		{to: `<SIP:alice@EXAMPLE.com>`, want: "sip:alice@example.com"},
		{to: `<sips:alice@example.com:5061;transport=tls>`, want: "sip:alice@example.com"},
		{to: `<sip:alice@example.com:5060;user=phone?subject=x>`, want: "sip:alice@example.com"},
		{to: `<sip:alice:secret@example.com>`, want: "sip:alice@example.com"},
		{to: `<sip:Alice@example.com>`, want: "sip:Alice@example.com"}, // user is case-sensitive
		{to: `<sip:%61lice@example.com>`, want: "sip:alice@example.com"},
		{to: `<sip:%7e%2A%2d@example.com>`, want: "sip:~*-@example.com"},
		{to: `<sip:alice%40home@example.com>`, want: "sip:alice%40home@example.com"},
		{to: `<sip:alice%40Home%3a1@example.com>`, want: "sip:alice%40Home%3A1@example.com"},
		{to: `<sip:a%20b@example.com>`, want: "sip:a%20b@example.com"},
		{to: `<sip:a%2Fb@example.com>`, want: "sip:a/b@example.com"},
		{to: `<sip:%C3%A9t%C3%A9@example.com>`, want: "sip:%C3%A9t%C3%A9@example.com"},
		{to: `<sip:+15551234567;npdi@example.com;user=phone>`, want: "sip:+15551234567;npdi@example.com"},
		{to: `<sip:1003@192.0.2.7:5080>`, want: "sip:1003@192.0.2.7"},
		{to: `<sip:bob@[2001:DB8::1]:5060>`, want: "sip:bob@[2001:db8::1]"},
		{to: `sip:carol@pbx.test`, want: "sip:carol@pbx.test"},

		{to: `<tel:+15551234567>`, err: ErrUnsupportedScheme},
		{to: `<mailto:alice@example.com>`, err: ErrUnsupportedScheme},
		{to: `isbn:2983792873`, err: ErrUnsupportedScheme}, // RFC 4475 §3.3.4 unksm2
		{to: `<sip:example.com>`, err: ErrBadAOR},
		{to: `<sip:a%zz@example.com>`, err: ErrBadAOR},
		{to: `<sip:a%4@example.com>`, err: ErrBadAOR},
		{to: `<sip:alice@exa/mple.com>`, err: ErrBadAOR},
	} {
		t.Run(tc.to, func(t *testing.T) {
			got, err := NormalizeAOR(parseTo(t, tc.to))
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !errors.Is(err, ErrBadAOR) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				if code, _ := StatusFor(err); code != 400 {
					t.Errorf("StatusFor = %d, want 400", code)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("NormalizeAOR = %q, %v; want %q", got, err, tc.want)
			}
			// Idempotent: normalising the normal form changes nothing.
			again, err := NormalizeAOR(parseTo(t, "<"+got+">"))
			if err != nil || again != got {
				t.Errorf("second pass = %q, %v", again, err)
			}
		})
	}
}

func TestNormalizeAORConstructedURIs(t *testing.T) {
	// A Uri built in code (no scheme) is a SIP URI, as in sipgo.
	got, err := NormalizeAOR(sip.Uri{User: "u", Host: "H.test"})
	if err != nil || got != "sip:u@h.test" {
		t.Errorf("NormalizeAOR = %q, %v", got, err)
	}
	if _, err := NormalizeAOR(sip.Uri{Host: "*", Wildcard: true}); !errors.Is(err, ErrBadAOR) {
		t.Errorf("wildcard accepted: %v", err)
	}
	for _, host := range []string{"", "[::1", "[]", "[g::1]", "a b", "a@b", "a;b"} {
		if _, err := NormalizeAOR(sip.Uri{Scheme: "sip", User: "u", Host: host}); !errors.Is(err, ErrBadAOR) {
			t.Errorf("host %q accepted: %v", host, err)
		}
	}
}

func TestNormalizeAORAllocs(t *testing.T) {
	u := parseTo(t, "<sip:alice@example.com>")
	if allocs := testing.AllocsPerRun(100, func() { _, _ = NormalizeAOR(u) }); allocs > 1 {
		t.Errorf("NormalizeAOR allocates %v times for a canonical AOR", allocs)
	}
}

func TestDeviceIdentity(t *testing.T) {
	push := &store.PushTarget{Provider: "apns", Token: tokVoIP}
	contact := parseContact(t, `<sip:alice@192.0.2.10:5060;transport=tcp;ob>`).Address

	const uuid = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
	for _, tc := range []struct {
		name     string
		instance string
		push     *store.PushTarget
		contact  string
		want     string
	}{
		{"instance wins", `"<urn:uuid:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6>"`, push, "", uuid},
		{"instance without quotes", `<` + uuid + `>`, nil, "", uuid},
		{"instance with LWS", ` "< ` + uuid + ` >" `, nil, "", uuid},
		{"other URN kept", `"<urn:gsma:imei:35209900-176148-1>"`, nil, "", "urn:gsma:imei:35209900-176148-1"},
		{"non-URN instance is prefixed", `"<my-device>"`, nil, "", "instance:my-device"},
		{"push token hashed", ``, push, "", "pn:" + hashHex(tokVoIP)},
		{"empty instance falls through", `""`, push, "", "pn:" + hashHex(tokVoIP)},
		{"token-less target falls through", ``, &store.PushTarget{Provider: "fcm"}, `<sip:alice@192.0.2.10>`, "contact:sip:alice@192.0.2.10"},
		{"contact canonical", ``, nil, `<sip:Alice@EXAMPLE.com:5062;transport=TCP;ob;pn-provider=apns;pn-prid=x;Rinstance=9>`,
			"contact:sip:Alice@example.com:5062;ob;rinstance=9;transport=TCP"},
		{"contact param order does not matter", ``, nil, `<sip:Alice@example.com:5062;rinstance=9;pn-prid=y;ob;transport=TCP>`,
			"contact:sip:Alice@example.com:5062;ob;rinstance=9;transport=TCP"},
		{"contact user escapes", ``, nil, `<sips:%61lice@example.com?subject=x>`, "contact:sips:alice@example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := contact
			if tc.contact != "" {
				c = parseContact(t, tc.contact).Address
			}
			if got := DeviceIdentity(tc.instance, tc.push, c); got != tc.want {
				t.Errorf("DeviceIdentity = %q, want %q", got, tc.want)
			}
		})
	}

	if id := DeviceIdentity("", push, contact); strings.Contains(id, tokVoIP) || len(id) != len("pn:")+32 {
		t.Errorf("push identity %q leaks the token or has the wrong length", id)
	}
	other := DeviceIdentity("", &store.PushTarget{Provider: "apns", Token: tokRemote}, contact)
	if other == DeviceIdentity("", push, contact) {
		t.Errorf("two tokens, one identity")
	}
	long := `"<` + strings.Repeat("x", 400) + `>"`
	if id := DeviceIdentity(long, nil, contact); !strings.HasPrefix(id, "instance:") || len(id) > 64 {
		t.Errorf("long instance identity = %q", id)
	}
	if id := DeviceIdentity("\"<urn:uuid:a\r\nb>\"", nil, contact); strings.ContainsAny(id, "\r\n") {
		t.Errorf("control characters kept: %q", id)
	}
}

func TestNewBindingToken(t *testing.T) {
	seen := make(map[string]bool)
	for range 10000 {
		tok := NewBindingToken()
		if len(tok) != 26 || !IsBindingToken(tok) {
			t.Fatalf("bad token %q", tok)
		}
		if seen[tok] {
			t.Fatalf("duplicate token %q", tok)
		}
		seen[tok] = true
		u := sip.Uri{Scheme: "sip", User: tok, Host: "192.0.2.1"}
		var parsed sip.Uri
		if err := sip.ParseUri(u.String(), &parsed); err != nil || parsed.User != tok {
			t.Fatalf("token %q does not survive a SIP URI: %v", tok, err)
		}
	}
	for _, s := range []string{"", "abc", strings.Repeat("a", 25), strings.Repeat("a", 27),
		strings.Repeat("A", 26), strings.Repeat("a", 25) + "1", strings.Repeat("a", 25) + "8", strings.Repeat("a", 25) + "="} {
		if IsBindingToken(s) {
			t.Errorf("IsBindingToken(%q) = true", s)
		}
	}
}

func TestBindingTokenDerived(t *testing.T) {
	k1, k2 := []byte("key one, 32 bytes long.........."), []byte("key two, 32 bytes long..........")
	a := BindingToken(k1, "sip:1001@pbx.test", "urn:uuid:0001")
	if a != BindingToken(k1, "sip:1001@pbx.test", "urn:uuid:0001") {
		t.Fatal("same key, aor and device gave two tokens")
	}
	if !IsBindingToken(a) {
		t.Fatalf("derived token %q does not have the token shape", a)
	}
	for _, other := range []string{
		BindingToken(k2, "sip:1001@pbx.test", "urn:uuid:0001"),
		BindingToken(k1, "sip:1002@pbx.test", "urn:uuid:0001"),
		BindingToken(k1, "sip:1001@pbx.test", "urn:uuid:0002"),
		// the separator keeps aor and identity apart
		BindingToken(k1, "sip:1001@pbx.tes", "turn:uuid:0001"),
	} {
		if other == a {
			t.Errorf("distinct inputs gave the same token %q", a)
		}
	}

	// The reused HMAC states give the same tokens, in any order.
	macs := newTokenMACs(k1)
	for range 3 {
		for _, c := range [][2]string{{"sip:1001@pbx.test", "urn:uuid:0001"}, {"sip:1002@pbx.test", "\x00aor"}} {
			if got, want := macs.token(c[0], c[1]), BindingToken(k1, c[0], c[1]); got != want {
				t.Fatalf("pooled token for %q/%q: %q, want %q", c[0], c[1], got, want)
			}
		}
	}
}
