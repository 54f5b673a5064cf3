package registrar

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/store"
)

// Realistic tokens: APNs tokens are 64 hex digits, FCM tokens hold a colon.
const (
	tokVoIP   = "9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddccbbaa99887766554433221100"
	tokRemote = "4d3a2b1c0f9e8d7c6b5a49382716051423324150617283940a1b2c3d4e5f6071"
	tokFCM    = "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx6_Bq3Kq0vFzJr8Q"
	tokSIPp   = "0123abcdef"
)

// parseContact parses one Contact header value with sipgo's own parser, as
// the registrar will receive it.
func parseContact(tb testing.TB, value string) *sip.ContactHeader {
	tb.Helper()
	hs, err := sip.HeadersParser(sip.DefaultHeadersParser()).ParseHeader(nil, []byte("Contact: "+value))
	if err != nil || len(hs) != 1 {
		tb.Fatalf("sipgo cannot parse Contact %q: %v (%d headers)", value, err, len(hs))
	}
	c, ok := hs[0].(*sip.ContactHeader)
	if !ok {
		tb.Fatalf("not a ContactHeader: %T", hs[0])
	}
	return c
}

type pushCase struct {
	name    string
	contact string
	want    *store.PushTarget
	query   bool
	err     error // errors.Is target; nil for success
	status  int   // StatusFor code when err != nil
	secret  string
}

var pushCases = []pushCase{
	{
		name: "linphone iOS RFC 8599 voip",
		contact: `<sip:alice@192.0.2.10:52341;transport=tls;pn-prid=` + tokVoIP + `:voip;pn-provider=apns;` +
			`pn-param=ABCD1234EF.org.linphone.phone.voip;pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;` +
			`pn-call-str=IC_MSG;pn-groupchat-str=GC_MSG;pn-call-snd=notes_of_the_optimistic.caf;pn-msg-snd=msg.caf>` +
			`;+sip.instance="<urn:uuid:3ba4e2d0-1b6e-4d6e-9f55-0d1c8b2f7a11>";+org.linphone.specs="groupchat/1.1,lime"`,
		want: &store.PushTarget{
			Provider: "apns", Token: tokVoIP, Param: "ABCD1234EF.org.linphone.phone.voip", Types: []string{"voip"},
			Legacy: map[string]string{
				"pn-silent": "1", "pn-timeout": "0", "pn-msg-str": "IM_MSG", "pn-call-str": "IC_MSG",
				"pn-groupchat-str": "GC_MSG", "pn-call-snd": "notes_of_the_optimistic.caf", "pn-msg-snd": "msg.caf",
			},
		},
	},
	{
		name: "flexisip multi-token remote&voip",
		contact: `<sip:bob@198.51.100.7:5061;transport=tls;pn-provider=apns.dev;pn-prid=` + tokRemote + `:remote&` + tokVoIP +
			`:voip;pn-param=ABCD1234EF.org.linphone.phone.remote&voip>`,
		want: &store.PushTarget{
			Provider: "apns.dev", Token: tokVoIP, Param: "ABCD1234EF.org.linphone.phone",
			Types:  []string{"voip", "remote"},
			Tokens: map[string]string{"voip": tokVoIP, "remote": tokRemote},
		},
	},
	{
		name: "multi-token voip&remote order",
		contact: `<sip:bob@198.51.100.7;pn-provider=apns;pn-prid=` + tokVoIP + `:voip&` + tokRemote +
			`:remote;pn-param=ABCD1234EF.org.linphone.phone.voip&remote>`,
		want: &store.PushTarget{
			Provider: "apns", Token: tokVoIP, Param: "ABCD1234EF.org.linphone.phone",
			Types:  []string{"voip", "remote"},
			Tokens: map[string]string{"voip": tokVoIP, "remote": tokRemote},
		},
	},
	{
		name: "multi-token without service suffix in pn-param",
		contact: `<sip:bob@198.51.100.7;pn-provider=apns;pn-prid=` + tokRemote + `:remote&` + tokVoIP +
			`:voip;pn-param=ABCD1234EF.org.linphone.phone>`,
		want: &store.PushTarget{
			Provider: "apns", Token: tokVoIP, Param: "ABCD1234EF.org.linphone.phone",
			Types:  []string{"voip", "remote"},
			Tokens: map[string]string{"voip": tokVoIP, "remote": tokRemote},
		},
	},
	{
		name:    "sipp apns voip",
		contact: `<sip:1003@10.0.0.3:5060;pn-provider=apns;pn-prid=0123abcdef;pn-param=TEAM123456.com.example.phone.voip>`,
		want: &store.PushTarget{
			Provider: "apns", Token: tokSIPp, Param: "TEAM123456.com.example.phone.voip", Types: []string{"voip"},
		},
	},
	{
		name:    "apns remote without suffix",
		contact: `<sip:1004@10.0.0.4;pn-provider=apns;pn-prid=` + tokRemote + `;pn-param=TEAM123456.com.example.phone>`,
		want: &store.PushTarget{
			Provider: "apns", Token: tokRemote, Param: "TEAM123456.com.example.phone", Types: []string{"remote"},
		},
	},
	{
		name:    "apns .remote suffix is dropped from Param",
		contact: `<sip:1004@10.0.0.4;pn-provider=apns;pn-prid=` + tokRemote + `:remote;pn-param=TEAM123456.com.example.phone.remote>`,
		want: &store.PushTarget{
			Provider: "apns", Token: tokRemote, Param: "TEAM123456.com.example.phone", Types: []string{"remote"},
		},
	},
	{
		name:    "apns.dev typed voip token",
		contact: `<sip:1005@10.0.0.5;pn-provider=apns.dev;pn-prid=` + tokVoIP + `:voip;pn-param=TEAM123456.com.example.phone.voip>`,
		want: &store.PushTarget{
			Provider: "apns.dev", Token: tokVoIP, Param: "TEAM123456.com.example.phone.voip", Types: []string{"voip"},
		},
	},
	{
		name: "linphone android fcm",
		contact: `<sip:carol@203.0.113.5:41234;transport=tcp;pn-provider=fcm;pn-prid=` + tokFCM +
			`;pn-param=linphone-android-8a563;pn-silent=1;pn-timeout=0>;+sip.instance="<urn:uuid:0d2c7c4e-5b2a-4f0e-8d7c-111111111111>"`,
		want: &store.PushTarget{
			Provider: "fcm", Token: tokFCM, Param: "linphone-android-8a563", Types: []string{"data"},
			Legacy: map[string]string{"pn-silent": "1", "pn-timeout": "0"},
		},
	},
	{
		name:    "fcm with numeric sender id and pn-purr",
		contact: `<sip:carol@203.0.113.5;pn-provider=fcm;pn-prid=` + tokFCM + `;pn-param=929724111839;pn-purr=purr-7f2a>`,
		want: &store.PushTarget{
			Provider: "fcm", Token: tokFCM, Param: "929724111839", PURR: "purr-7f2a", Types: []string{"data"},
		},
	},
	{
		name: "webpush with escaped subscription URL",
		contact: `<sip:web@192.0.2.80;transport=wss;pn-provider=webpush;` +
			`pn-prid=https%3A%2F%2Fupdates.push.services.mozilla.com%2Fwpush%2Fv2%2FgAAAAABk-x_y>`,
		want: &store.PushTarget{
			Provider: "webpush", Token: "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABk-x_y",
			Types: []string{"data"},
		},
	},
	{
		name:    "upper-case names and provider",
		contact: `<sip:dave@192.0.2.1;PN-PROVIDER=APNS;PN-PRID=ABCDEF0123456789;Pn-Param=TEAM123456.com.example.phone>`,
		want: &store.PushTarget{
			Provider: "apns", Token: "ABCDEF0123456789", Param: "TEAM123456.com.example.phone", Types: []string{"remote"},
		},
	},
	{
		name:    "header params form (baresip)",
		contact: `<sip:erin@192.0.2.44:5060;transport=udp>;pn-provider=fcm;pn-prid=` + tokFCM + `;pn-param=my-project-123`,
		want: &store.PushTarget{
			Provider: "fcm", Token: tokFCM, Param: "my-project-123", Types: []string{"data"},
		},
	},
	{
		name:    "header params with LWS and quotes",
		contact: `<sip:erin@192.0.2.44>; pn-provider=fcm ; pn-prid="` + tokFCM + `"; pn-param = my-project-123`,
		want: &store.PushTarget{
			Provider: "fcm", Token: tokFCM, Param: "my-project-123", Types: []string{"data"},
		},
	},
	{
		name: "percent-encoded multi-token",
		contact: `<sip:bob@198.51.100.7;pn-provider=apns;pn-prid=` + tokRemote + `%3Aremote%26` + tokVoIP +
			`%3Avoip;pn-param=ABCD1234EF.org.linphone.phone.remote%26voip>`,
		want: &store.PushTarget{
			Provider: "apns", Token: tokVoIP, Param: "ABCD1234EF.org.linphone.phone",
			Types:  []string{"voip", "remote"},
			Tokens: map[string]string{"voip": tokVoIP, "remote": tokRemote},
		},
	},
	{
		name:    "percent-encoded fcm token colon",
		contact: `<sip:carol@203.0.113.5;pn-provider=fcm;pn-prid=` + strings.Replace(tokFCM, ":", "%3a", 1) + `;pn-param=proj>`,
		want: &store.PushTarget{
			Provider: "fcm", Token: tokFCM, Param: "proj", Types: []string{"data"},
		},
	},
	{
		name: "URI params win over header params, merged",
		contact: `<sip:frank@192.0.2.9;pn-provider=apns;pn-prid=` + tokRemote + `>;pn-prid=` + tokVoIP +
			`;pn-param=TEAM123456.com.example.phone;pn-silent=1`,
		want: &store.PushTarget{
			Provider: "apns", Token: tokRemote, Param: "TEAM123456.com.example.phone", Types: []string{"remote"},
			Legacy: map[string]string{"pn-silent": "1"},
		},
	},
	{
		name: "linphone legacy iOS",
		contact: `<sip:frank@192.0.2.9:5060;app-id=org.linphone.phone.prod;pn-type=apple;pn-tok=` + tokRemote +
			`;pn-msg-str=IM_MSG;pn-call-str=IC_MSG;pn-groupchat-str=GC_MSG;pn-call-snd=ring.caf;pn-msg-snd=msg.caf;pn-silent=1>`,
		want: &store.PushTarget{
			Provider: "apns", Token: tokRemote, Param: "org.linphone.phone", Types: []string{"remote"},
			Legacy: map[string]string{
				"pn-type": "apple", "app-id": "org.linphone.phone.prod", "pn-msg-str": "IM_MSG", "pn-call-str": "IC_MSG",
				"pn-groupchat-str": "GC_MSG", "pn-call-snd": "ring.caf", "pn-msg-snd": "msg.caf", "pn-silent": "1",
			},
		},
	},
	{
		name:    "linphone legacy iOS voip sandbox",
		contact: `<sip:frank@192.0.2.9;pn-type=Apple;app-id=org.linphone.phone.voip.dev;pn-tok=` + tokVoIP + `;pn-timeout=0>`,
		want: &store.PushTarget{
			Provider: "apns.dev", Token: tokVoIP, Param: "org.linphone.phone.voip", Types: []string{"voip"},
			Legacy: map[string]string{"pn-type": "Apple", "app-id": "org.linphone.phone.voip.dev", "pn-timeout": "0"},
		},
	},
	{
		name:    "linphone legacy firebase",
		contact: `<sip:gina@192.0.2.10;transport=tcp;pn-type=firebase;app-id=929724111839;pn-tok=` + tokFCM + `>`,
		want: &store.PushTarget{
			Provider: "fcm", Token: tokFCM, Param: "929724111839", Types: []string{"data"},
			Legacy: map[string]string{"pn-type": "firebase", "app-id": "929724111839"},
		},
	},
	{
		name:    "linphone legacy google without app-id",
		contact: `<sip:gina@192.0.2.10;pn-type=google;pn-tok=` + tokFCM + `>`,
		want: &store.PushTarget{
			Provider: "fcm", Token: tokFCM, Types: []string{"data"},
			Legacy: map[string]string{"pn-type": "google"},
		},
	},
	{
		name:    "linphone legacy android",
		contact: `<sip:gina@192.0.2.10;pn-type=android;app-id=sender;pn-tok=` + tokFCM + `>`,
		want: &store.PushTarget{
			Provider: "fcm", Token: tokFCM, Param: "sender", Types: []string{"data"},
			Legacy: map[string]string{"pn-type": "android", "app-id": "sender"},
		},
	},
	{
		name: "RFC 8599 wins over legacy",
		contact: `<sip:hank@192.0.2.11;pn-provider=fcm;pn-prid=` + tokFCM + `;pn-param=proj;pn-type=apple;app-id=org.x.prod;pn-tok=` +
			tokRemote + `>`,
		want: &store.PushTarget{
			Provider: "fcm", Token: tokFCM, Param: "proj", Types: []string{"data"},
		},
		secret: tokRemote,
	},
	{name: "capability query", contact: `<sip:ivy@192.0.2.12;transport=tcp;pn-provider>`, query: true},
	{name: "capability query in header params", contact: `<sip:ivy@192.0.2.12>;pn-provider`, query: true},
	{name: "query for one service", contact: `<sip:ivy@192.0.2.12;pn-provider=fcm>`, query: true},
	{
		name:    "no push parameters",
		contact: `<sip:jack@192.0.2.13;transport=tcp;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000000000001>";reg-id=1;expires=600`,
	},
	{name: "legacy options alone are not a push target", contact: `<sip:jack@192.0.2.13;pn-msg-str=IM_MSG;pn-silent=1>`},

	// Errors.
	{
		name: "unknown provider", contact: `<sip:kim@192.0.2.14;pn-provider=foo;pn-prid=` + tokRemote + `;pn-param=x>`,
		err: ErrUnknownProvider, status: 555,
	},
	{
		name: "unknown provider in a query", contact: `<sip:kim@192.0.2.14;pn-provider=foo>`,
		err: ErrUnknownProvider, status: 555,
	},
	{
		name: "legacy unknown pn-type", contact: `<sip:kim@192.0.2.14;pn-type=wp10;app-id=x;pn-tok=` + tokRemote + `>`,
		err: ErrUnknownProvider, status: 555,
	},
	{
		name: "pn-param without pn-prid", contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-param=TEAM123456.com.example.phone>`,
		err: ErrMissingPRID, status: 400,
	},
	{
		name: "apns without pn-param", contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=` + tokRemote + `>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "apns pn-param without team id", contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=` + tokRemote + `;pn-param=comexamplephone>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "apns pn-param empty team id", contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=` + tokRemote + `;pn-param=.com.example>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "apns pn-param empty bundle", contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=` + tokRemote + `;pn-param=TEAM123456.>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "apns pn-param only a service", contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=` + tokRemote + `;pn-param=TEAM123456..voip>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "empty pn-prid", contact: `<sip:lee@192.0.2.15;pn-provider=fcm;pn-prid=;pn-param=proj>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "valueless pn-prid", contact: `<sip:lee@192.0.2.15;pn-provider=fcm;pn-prid;pn-param=proj>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "pn-prid without pn-provider", contact: `<sip:lee@192.0.2.15;pn-prid=` + tokRemote + `;pn-param=proj>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "empty pn-provider with pn-prid", contact: `<sip:lee@192.0.2.15;pn-provider=;pn-prid=` + tokRemote + `>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "typed token does not match pn-param",
		contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=` + tokRemote +
			`:remote;pn-param=TEAM123456.com.example.phone.voip>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "two tokens, pn-param declares one service",
		contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=` + tokRemote + `:remote&` + tokVoIP +
			`:voip;pn-param=TEAM123456.com.example.phone.voip>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name:    "one untyped token, two services",
		contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=` + tokRemote + `;pn-param=TEAM123456.com.example.phone.remote&voip>`,
		err:     ErrBadPushParams, status: 400,
	},
	{
		name: "duplicate service in pn-prid",
		contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=` + tokRemote + `:voip&` + tokVoIP +
			`:voip;pn-param=TEAM123456.com.example.phone.remote&voip>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "unknown service in pn-prid",
		contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=` + tokRemote + `:alert&` + tokVoIP +
			`:voip;pn-param=TEAM123456.com.example.phone>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name:    "empty token in multi-token form",
		contact: `<sip:lee@192.0.2.15;pn-provider=apns;pn-prid=:remote&` + tokVoIP + `:voip;pn-param=TEAM123456.com.example.phone>`,
		err:     ErrBadPushParams, status: 400,
	},
	{
		name: "broken escape", contact: `<sip:lee@192.0.2.15;pn-provider=fcm;pn-prid=` + tokRemote + `%zz;pn-param=proj>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "escaped space in token", contact: `<sip:lee@192.0.2.15;pn-provider=fcm;pn-prid=` + tokRemote + `%20x;pn-param=proj>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "token too long", contact: `<sip:lee@192.0.2.15;pn-provider=fcm;pn-prid=` + strings.Repeat("a", maxTokenLen+1) + `;pn-param=proj>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "fcm without pn-param", contact: `<sip:lee@192.0.2.15;pn-provider=fcm;pn-prid=` + tokFCM + `>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "fcm pn-param not a token", contact: `<sip:lee@192.0.2.15;pn-provider=fcm;pn-prid=` + tokFCM + `;pn-param=proj%2Fx>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "legacy apple without app-id", contact: `<sip:lee@192.0.2.15;pn-type=apple;pn-tok=` + tokRemote + `>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "legacy apple app-id only a suffix", contact: `<sip:lee@192.0.2.15;pn-type=apple;app-id=.prod;pn-tok=` + tokRemote + `>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "legacy pn-tok without pn-type", contact: `<sip:lee@192.0.2.15;app-id=org.x.prod;pn-tok=` + tokRemote + `>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "legacy pn-type without pn-tok", contact: `<sip:lee@192.0.2.15;pn-type=apple;app-id=org.x.prod>`,
		err: ErrBadPushParams, status: 400,
	},
	{
		name: "legacy empty pn-tok", contact: `<sip:lee@192.0.2.15;pn-type=firebase;pn-tok=>`,
		err: ErrBadPushParams, status: 400,
	},
}

func TestParsePush(t *testing.T) {
	for _, tc := range pushCases {
		t.Run(tc.name, func(t *testing.T) {
			c := parseContact(t, tc.contact)
			got, query, err := ParsePush(c.Address.UriParams, c.Params)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				if got != nil || query {
					t.Errorf("got target %+v, query %v with an error", got, query)
				}
				if code, reason := StatusFor(err); code != tc.status || reason == "" {
					t.Errorf("StatusFor = %d %q, want %d", code, reason, tc.status)
				}
				for _, tok := range []string{tokVoIP, tokRemote, tokFCM, tokSIPp, strings.Repeat("a", 64)} {
					if strings.Contains(err.Error(), tok) {
						t.Errorf("error %q leaks a token", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if query != tc.query {
				t.Errorf("query = %v, want %v", query, tc.query)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("target\n got %+v\nwant %+v", got, tc.want)
			}
			if got != nil && tc.secret != "" {
				for k, v := range got.Legacy {
					if strings.Contains(v, tc.secret) || strings.Contains(k, "tok") || strings.Contains(k, "prid") {
						t.Errorf("Legacy[%q] = %q keeps a token", k, v)
					}
				}
			}
		})
	}
}

func TestParsePushErrorDetails(t *testing.T) {
	c := parseContact(t, `<sip:a@192.0.2.1;pn-provider=apns;pn-prid=`+tokRemote+`;pn-param=nodot>`)
	_, _, err := ParsePush(c.Address.UriParams, c.Params)
	var pe *PushParamError
	if !errors.As(err, &pe) || pe.Param != ParamParam || pe.Problem != problemMalformed {
		t.Fatalf("err = %#v, want a malformed pn-param PushParamError", err)
	}
	if got := err.Error(); got != "registrar: invalid push parameters: pn-param malformed" {
		t.Errorf("Error() = %q", got)
	}
	if code, reason := StatusFor(err); code != 400 || reason != "Bad Push Parameters (pn-param malformed)" {
		t.Errorf("StatusFor = %d %q", code, reason)
	}

	c = parseContact(t, `<sip:a@192.0.2.1;pn-provider=Huawei;pn-prid=`+tokRemote+`>`)
	_, _, err = ParsePush(c.Address.UriParams, c.Params)
	if got := err.Error(); got != `registrar: push notification service not supported: pn-provider "Huawei"` {
		t.Errorf("Error() = %q", got)
	}
	if code, reason := StatusFor(err); code != 555 || reason != "Push Notification Service Not Supported" {
		t.Errorf("StatusFor = %d %q", code, reason)
	}
	if errors.Is(err, ErrBadPushParams) || errors.Is(err, ErrMissingPRID) {
		t.Errorf("unknown provider also matches ErrBadPushParams")
	}

	// A long provider name is truncated in the message.
	c = parseContact(t, `<sip:a@192.0.2.1;pn-provider=`+strings.Repeat("x", 200)+`>`)
	_, _, err = ParsePush(c.Address.UriParams, c.Params)
	if len(err.Error()) > 120 {
		t.Errorf("error message not bounded: %d bytes", len(err.Error()))
	}
}

func TestStatusFor(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{nil, 200},
		{ErrUnknownProvider, 555},
		{ErrBadPushParams, 400},
		{ErrMissingPRID, 400},
		{ErrBadAOR, 400},
		{ErrUnsupportedScheme, 400},
		{errors.New("disk on fire"), 500},
	} {
		code, reason := StatusFor(tc.err)
		if code != tc.code || reason == "" || strings.ContainsAny(reason, "\r\n") {
			t.Errorf("StatusFor(%v) = %d %q, want %d", tc.err, code, reason, tc.code)
		}
	}
}

func TestParsePushLegacyLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString(`<sip:a@192.0.2.1;pn-provider=fcm;pn-prid=` + tokFCM + `;pn-param=proj`)
	for i := range 40 {
		b.WriteString(";pn-x" + strings.Repeat("y", i) + "=v")
	}
	b.WriteString(";pn-big=" + strings.Repeat("z", maxLegacyValueLen+1))
	b.WriteString(";pn-crlf=a%0Db>")
	c := parseContact(t, b.String())
	got, _, err := ParsePush(c.Address.UriParams, c.Params)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Legacy) > maxLegacyEntries {
		t.Errorf("Legacy has %d entries, limit %d", len(got.Legacy), maxLegacyEntries)
	}
	for k, v := range got.Legacy {
		if len(v) > maxLegacyValueLen || strings.ContainsAny(v, "\r\n") {
			t.Errorf("Legacy[%q] kept an oversized or control value", k)
		}
	}
}

func TestParsePushDoesNotAliasInput(t *testing.T) {
	c := parseContact(t, `<sip:a@192.0.2.1;pn-provider=fcm;pn-prid=`+tokFCM+`;pn-param=proj;pn-silent=1>`)
	uri := c.Address.UriParams.Clone()
	got, _, err := ParsePush(c.Address.UriParams, c.Params)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(uri, c.Address.UriParams) {
		t.Errorf("ParsePush modified its input")
	}
	// Overwrite the input's backing strings' owners: the target must keep
	// its own copies (strings are immutable, so check by pointer).
	for _, kv := range c.Address.UriParams {
		if kv.V != "" && len(got.Token) > 0 && unsafeSameData(kv.V, got.Token) {
			t.Errorf("Token aliases the request buffer")
		}
	}
}

func TestStripPush(t *testing.T) {
	c := parseContact(t, `<sip:alice@192.0.2.10:52341;transport=tls;pn-prid=`+tokVoIP+`:voip;PN-PROVIDER=apns;`+
		`pn-param=ABCD1234EF.org.linphone.phone.voip;pn-silent=1;app-id=org.x.prod;pn-tok=`+tokRemote+`;pn-type=apple;ob;lr>`+
		`;+sip.instance="<urn:uuid:3ba4e2d0-1b6e-4d6e-9f55-0d1c8b2f7a11>"; pn-prid = `+tokFCM+`;reg-id=1;+sip.pnsreg;`+
		`App-ID=x;expires=600;+org.linphone.specs="groupchat/1.1"`)
	c.Address.UriParams = StripPush(c.Address.UriParams)
	c.Params = StripPush(c.Params)

	if got, want := c.Address.UriParams, (sip.HeaderParams{{K: "transport", V: "tls"}, {K: "ob"}, {K: "lr"}}); !reflect.DeepEqual(got, want) {
		t.Errorf("URI params = %v, want %v", got, want)
	}
	wantHdr := sip.HeaderParams{
		{K: "+sip.instance", V: `"<urn:uuid:3ba4e2d0-1b6e-4d6e-9f55-0d1c8b2f7a11>"`},
		{K: "reg-id", V: "1"}, {K: "expires", V: "600"}, {K: "+org.linphone.specs", V: `"groupchat/1.1"`},
	}
	if !reflect.DeepEqual(c.Params, wantHdr) {
		t.Errorf("header params = %v, want %v", c.Params, wantHdr)
	}
	s := strings.ToLower(c.Value())
	for _, bad := range []string{"pn-", "app-id", "pnsreg", tokVoIP, tokRemote, strings.ToLower(tokFCM)} {
		if strings.Contains(s, bad) {
			t.Errorf("stripped Contact %q still contains %q", s, bad)
		}
	}
	if tgt, q, err := ParsePush(c.Address.UriParams, c.Params); tgt != nil || q || err != nil {
		t.Errorf("ParsePush after StripPush = %v %v %v", tgt, q, err)
	}
}

func TestStripPushNoop(t *testing.T) {
	p := sip.HeaderParams{{K: "transport", V: "tcp"}, {K: "ob"}}
	got := StripPush(p)
	if len(got) != 2 || &got[0] != &p[0] {
		t.Errorf("StripPush reallocated or changed params without push parameters")
	}
	if StripPush(nil) != nil {
		t.Errorf("StripPush(nil) != nil")
	}
	all := sip.HeaderParams{{K: "pn-prid", V: "x"}, {K: "pn-provider", V: "fcm"}}
	if got := StripPush(all); len(got) != 0 {
		t.Errorf("StripPush left %v", got)
	}
	if all[0] != (sip.HeaderKV{}) || all[1] != (sip.HeaderKV{}) {
		t.Errorf("StripPush left token strings in the cleared tail: %v", all)
	}
	if allocs := testing.AllocsPerRun(100, func() { StripPush(p) }); allocs != 0 {
		t.Errorf("StripPush allocates %v times", allocs)
	}
}

func TestIsPushParam(t *testing.T) {
	for name, want := range map[string]bool{
		"pn-provider": true, "PN-PRID": true, "pn-param": true, "pn-purr": true, "pn-tok": true, "pn-type": true,
		"pn-msg-str": true, "pn-whatever": true, "pn-": true, " pn-prid ": true, "\fpn-prid": true, "\u00a0PN-PRID\t": true, "app-id": true, "APP-ID": true,
		"+sip.pnsreg": true, "+SIP.PNSREG": true,
		"transport": false, "ob": false, "+sip.instance": false, "pn": false, "pnx-prid": false, "p": false,
		"": false, "app": false, "appid": false, "reg-id": false, "expires": false, "+sip.pns": false,
	} {
		if got := IsPushParam(name); got != want {
			t.Errorf("IsPushParam(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestMaskToken(t *testing.T) {
	for tok, want := range map[string]string{
		tokVoIP: "…221100",
		"abc":   "…c",
		"ab":    "…",
		"":      "…",
	} {
		if got := MaskToken(tok); got != want {
			t.Errorf("MaskToken(%q) = %q, want %q", tok, got, want)
		}
	}
}

func TestSupportedProviders(t *testing.T) {
	p := SupportedProviders()
	p[0] = "mutated"
	if SupportedProviders()[0] != ProviderAPNs {
		t.Errorf("SupportedProviders shares its slice")
	}
	for _, p := range SupportedProviders() {
		if canonicalProvider(strings.ToUpper(p)) != p {
			t.Errorf("provider %q not accepted", p)
		}
	}
}

func BenchmarkParsePush(b *testing.B) {
	for _, name := range []string{
		"linphone iOS RFC 8599 voip",
		"flexisip multi-token remote&voip",
		"sipp apns voip",
		"linphone android fcm",
		"linphone legacy iOS",
		"no push parameters",
	} {
		var tc *pushCase
		for i := range pushCases {
			if pushCases[i].name == name {
				tc = &pushCases[i]
			}
		}
		c := parseContact(b, tc.contact)
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := ParsePush(c.Address.UriParams, c.Params); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkStripPush(b *testing.B) {
	c := parseContact(b, pushCases[0].contact)
	src := c.Address.UriParams
	buf := make(sip.HeaderParams, len(src))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, src)
		StripPush(buf)
	}
}

// unsafeSameData reports whether b's bytes lie inside a's.
func unsafeSameData(a, b string) bool {
	pa := uintptr(unsafe.Pointer(unsafe.StringData(a)))
	pb := uintptr(unsafe.Pointer(unsafe.StringData(b)))
	return pb >= pa && pb < pa+uintptr(len(a))
}
