package registrar

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func TestFeatureCaps(t *testing.T) {
	for _, tc := range []struct {
		name      string
		providers []string
		refresh   time.Duration
		want      string
	}{
		{"one provider", []string{"apns"}, 0, `*;+sip.pns="apns"`},
		{"one provider with pnsreg", []string{"apns"}, 120 * time.Second, `*;+sip.pns="apns";+sip.pnsreg="120"`},
		{"capability query answer", SupportedProviders(), 0, `*;+sip.pns="apns,apns.dev,fcm,webpush"`},
		{"lower-cased and de-duplicated", []string{"APNS", "apns", "Fcm", "fcm"}, 0, `*;+sip.pns="apns,fcm"`},
		{"invalid names skipped", []string{"", `fc"m`, "a,b", "!x", "web push", "fcm"}, 0, `*;+sip.pns="fcm"`},
		{"nothing to say", nil, 0, ""},
		{"only invalid names", []string{"", ";"}, 0, ""},
		{"pnsreg alone", nil, 90 * time.Second, `*;+sip.pnsreg="90"`},
		{"pnsreg rounds down", []string{"fcm"}, 130*time.Second + 900*time.Millisecond, `*;+sip.pns="fcm";+sip.pnsreg="130"`},
		{"pnsreg at least one second", []string{"fcm"}, 500 * time.Millisecond, `*;+sip.pns="fcm";+sip.pnsreg="1"`},
		{"negative refresh ignored", []string{"fcm"}, -time.Second, `*;+sip.pns="fcm"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := FeatureCaps(tc.providers, tc.refresh)
			if got != tc.want {
				t.Fatalf("FeatureCaps = %q, want %q", got, tc.want)
			}
			if got != "" {
				checkFeatureCapsGrammar(t, got)
			}
		})
	}
}

// checkFeatureCapsGrammar checks a value against RFC 6809's fc-value:
// "*" *(SEMI "+" fcap-name [EQUAL LDQUOT value RDQUOT]).
func checkFeatureCapsGrammar(t *testing.T, v string) {
	t.Helper()
	rest, ok := strings.CutPrefix(v, "*")
	if !ok {
		t.Fatalf("%q does not start with *", v)
	}
	for rest != "" {
		rest, ok = strings.CutPrefix(rest, ";+")
		if !ok {
			t.Fatalf("%q: indicator does not start with ;+", v)
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 || !isTokenString(rest[:eq]) || len(rest) < eq+3 || rest[eq+1] != '"' {
			t.Fatalf("%q: malformed indicator", v)
		}
		end := strings.IndexByte(rest[eq+2:], '"')
		if end < 0 {
			t.Fatalf("%q: unterminated value", v)
		}
		for _, item := range strings.Split(rest[eq+2:eq+2+end], ",") {
			if !isTokenString(item) {
				t.Fatalf("%q: value item %q is not a token", v, item)
			}
		}
		rest = rest[eq+2+end+1:]
	}
}

func TestHasPNSReg(t *testing.T) {
	for value, want := range map[string]bool{
		`<sip:a@192.0.2.1;transport=tcp>;+sip.pnsreg;+sip.instance="<urn:uuid:1>"`: true,
		`<sip:a@192.0.2.1>;+SIP.PNSREG`:                                            true,
		`<sip:a@192.0.2.1>; +sip.pnsreg ;expires=3600`:                             true,
		`<sip:a@192.0.2.1>;+sip.instance="<urn:uuid:1>"`:                           false,
		`<sip:a@192.0.2.1;pn-provider=apns>`:                                       false,
	} {
		c := parseContact(t, value)
		if got := HasPNSReg(c.Params); got != want {
			t.Errorf("HasPNSReg(%q) = %v, want %v", value, got, want)
		}
	}
	if HasPNSReg(sip.HeaderParams(nil)) {
		t.Errorf("HasPNSReg(nil) = true")
	}
}
