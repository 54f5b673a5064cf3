package registrar

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// FuzzParsePush feeds arbitrary Contact header values through sipgo's parser
// and then through everything this package does with a Contact, checking
// that nothing panics and that the contracts hold: a target always has a
// supported provider, a token and types; errors are classified and never
// echo input except an unknown provider's name; StripPush leaves no push
// parameter and nothing else out.
func FuzzParsePush(f *testing.F) {
	for _, tc := range pushCases {
		f.Add(tc.contact)
	}
	for _, s := range []string{
		`*`,
		`<sip:a@b>;pn-provider`,
		`sip:a@b;pn-provider=apns;pn-prid=x:voip;pn-param=T.b.voip`,
		`<sip:a@b;pn-prid=%;pn-provider=fcm;pn-param=%%>`,
		`<sip:a@b;pn-prid=a:voip&b:remote&c:voip;pn-provider=apns;pn-param=T.b.voip&remote&voip>`,
		`<sip:a@b;pn-prid=:&:;pn-provider=apns.dev;pn-param=T..&>`,
		`<sip:a@b;PN-TYPE=apple;APP-ID=.dev;PN-TOK="x">;pn-tok=y`,
		`"x" <sip:a@b>;pn-provider="fcm";pn-prid=" ";pn-param=""`,
		`<sip:a@b?pn-prid=x>;pn-provider=fcm`,
		`<tel:+1555;pn-provider=apns>;pn-prid=x`,
		`<sip:a@[::1]:5060;pn-provider=webpush;pn-prid=https%3A%2F%2Fx%2Fy>, <sip:b@c;pn-provider>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		for _, c := range fuzzContacts(value) {
			checkContact(t, c.Address.UriParams, c.Params, c.Address)
		}
		// The same text as a bare parameter list, on both sides.
		var params sip.HeaderParams
		if parseParamsSafely(value, &params) {
			checkContact(t, params, params, sip.Uri{Scheme: "sip", User: "u", Host: "h", UriParams: params})
			checkContact(t, nil, params, sip.Uri{})
		}
	})
}

// fuzzContacts parses value as a Contact header with sipgo. A panic inside
// sipgo is not this package's to fix here (sipgo fuzzes its own parser):
// such inputs are skipped.
func fuzzContacts(value string) (out []*sip.ContactHeader) {
	defer func() {
		if recover() != nil {
			out = nil
		}
	}()
	hs, _ := sip.HeadersParser(sip.DefaultHeadersParser()).ParseHeader(nil, []byte("Contact: "+value))
	for _, h := range hs {
		if c, ok := h.(*sip.ContactHeader); ok && c != nil {
			out = append(out, c)
		}
	}
	return out
}

func parseParamsSafely(value string, p *sip.HeaderParams) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_, err := sip.UnmarshalHeaderParams(value, ';', '?', p)
	return err == nil
}

var validTypes = []string{PushTypeVoIP, PushTypeRemote, PushTypeData}

func checkContact(t *testing.T, uriParams, hdrParams sip.HeaderParams, contact sip.Uri) {
	t.Helper()
	uriBefore, hdrBefore := uriParams.Clone(), hdrParams.Clone()

	target, query, err := ParsePush(uriParams, hdrParams)
	if !slices.Equal(uriParams, uriBefore) || !slices.Equal(hdrParams, hdrBefore) {
		t.Fatalf("ParsePush modified its input")
	}
	switch {
	case err != nil:
		if target != nil || query {
			t.Fatalf("error %v with target %v, query %v", err, target, query)
		}
		var pe *PushParamError
		if !errors.As(err, &pe) {
			t.Fatalf("error %v is not a *PushParamError", err)
		}
		code, reason := StatusFor(err)
		switch {
		case errors.Is(err, ErrUnknownProvider):
			if code != 555 || pe.Param != ParamProvider && pe.Param != ParamType || len(pe.Value) > 32 {
				t.Fatalf("unknown provider error %#v -> %d", pe, code)
			}
		case errors.Is(err, ErrBadPushParams):
			// Only constants: the message cannot carry a token.
			if code != 400 || err.Error() != ErrBadPushParams.Error()+": "+pe.Param+" "+pe.Problem ||
				!slices.Contains([]string{ParamProvider, ParamPRID, ParamParam, ParamPURR, ParamType, ParamTok, ParamAppID}, pe.Param) {
				t.Fatalf("bad params error %q -> %d", err, code)
			}
		default:
			t.Fatalf("unclassified error %v", err)
		}
		if strings.ContainsAny(reason, "\r\n") {
			t.Fatalf("reason phrase %q", reason)
		}
	case target != nil:
		if query {
			t.Fatalf("target with query")
		}
		if !slices.Contains(SupportedProviders(), target.Provider) {
			t.Fatalf("provider %q", target.Provider)
		}
		if target.Token == "" || strings.ContainsAny(target.Token, " \t\r\n\x00") {
			t.Fatalf("token %q", target.Token)
		}
		if len(target.Types) == 0 {
			t.Fatalf("no types")
		}
		for _, typ := range target.Types {
			if !slices.Contains(validTypes, typ) {
				t.Fatalf("type %q", typ)
			}
		}
		if target.Tokens != nil {
			if len(target.Tokens) != len(target.Types) || target.Tokens[target.Types[0]] != target.Token {
				t.Fatalf("tokens %v types %v token %q", target.Tokens, target.Types, target.Token)
			}
		}
		for k, v := range target.Legacy {
			if k != asciiLower(k) || !isTokenString(k) || k == ParamPRID || k == ParamTok || strings.ContainsAny(v, "\r\n") {
				t.Fatalf("legacy %q=%q", k, v)
			}
		}
		if id := DeviceIdentity("", target, contact); !strings.HasPrefix(id, "pn:") || strings.Contains(id, target.Token) && len(target.Token) > 8 {
			t.Fatalf("identity %q for a push target", id)
		}
		_ = FeatureCaps([]string{target.Provider}, 0)
	}

	// StripPush removes every push parameter and only those.
	for _, params := range []sip.HeaderParams{uriBefore, hdrBefore} {
		keep := 0
		for _, kv := range params {
			if !IsPushParam(kv.K) {
				keep++
			}
		}
		stripped := StripPush(params.Clone())
		if len(stripped) != keep {
			t.Fatalf("StripPush kept %d of %d", len(stripped), keep)
		}
		for _, kv := range stripped {
			k := strings.ToLower(strings.TrimSpace(kv.K))
			if IsPushParam(kv.K) || strings.HasPrefix(k, "pn-") || k == "app-id" {
				t.Fatalf("StripPush left %q", kv.K)
			}
		}
		if tg, q, e := ParsePush(stripped, nil); tg != nil || q || e != nil {
			t.Fatalf("push parameters survive StripPush: %v %v %v", tg, q, e)
		}
	}

	// Identity helpers never panic on whatever the Contact holds.
	_, _ = NormalizeAOR(contact)
	if v, ok := hdrParams.Get("+sip.instance"); ok {
		if id := DeviceIdentity(v, nil, contact); id == "" {
			t.Fatalf("empty identity")
		}
	}
	if id := DeviceIdentity("", nil, contact); !strings.HasPrefix(id, "contact:") {
		t.Fatalf("contact identity %q", id)
	}
}
