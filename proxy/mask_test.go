package proxy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// Secrets of the masking tests: none may survive MaskMessage.
const (
	apnsToken   = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0"
	voipToken   = "5a2b8c1d9e0f11223344556677889900aabbccddeeff00112233445566abcdef"
	fcmToken    = "dXk3bGZ0c2lQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx9Yd8nEAebjlBQ"
	digestResp  = "6629fae49393a05397450978507c4ef1"
	digestCnon  = "0a4f113b8e9c1f7d"
	sdesKey     = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
	sdesKey2    = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0"
	mikeyData   = "AQAFgM0XflABAAAAAAAAAAAAAAsAyO6ahl3mgokKaLcBAAAAAAAAAAA"
	messageText = "meet me at the usual place, the door code is 4711"
	basicCreds  = "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
)

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// withLength sets Content-Length to the body's length.
func withLength(head, body string) string {
	return crlf(head+"Content-Length: "+strconv.Itoa(len(crlf(body)))+"\n\n") + crlf(body)
}

func TestMaskMessage(t *testing.T) {
	sdp := "v=0\n" +
		"o=- 1 1 IN IP4 192.0.2.10\n" +
		"s=-\n" +
		"c=IN IP4 192.0.2.10\n" +
		"t=0 0\n" +
		"m=audio 8000 RTP/SAVP 0\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + sdesKey + "|2^20|1:4\n" +
		"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:" + sdesKey2 + ";inline:" + sdesKey + "|2^20 KDR=1\n" +
		"a=key-mgmt:mikey " + mikeyData + "\n" +
		"k=base64:" + sdesKey2 + "\n" +
		"a=sendrecv\n"
	cases := []struct {
		name    string
		raw     string
		secrets []string // must be gone
		keep    []string // must stay
		body    string   // the masked body, when checked
	}{
		{
			name: "REGISTER with digest credentials and RFC 8599 push parameters",
			raw: crlf("REGISTER sip:pbx.test SIP/2.0\n" +
				"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1;rport\n" +
				"From: <sip:1001@pbx.test>;tag=a1\n" +
				"To: <sip:1001@pbx.test>\n" +
				"Call-ID: reg-1001\n" +
				"CSeq: 2 REGISTER\n" +
				"Contact: <sip:1001@192.0.2.10:5060;pn-provider=apns;pn-prid=" + apnsToken + ";pn-param=TEAM123456.com.example.phone.voip>;+sip.pnsreg\n" +
				`Authorization: Digest username="1001", realm="pbx.test", nonce="abc123nonce", uri="sip:pbx.test", response="` + digestResp + `", algorithm=MD5, cnonce="` + digestCnon + `", qop=auth, nc=00000001` + "\n" +
				"Content-Length: 0\n\n"),
			secrets: []string{apnsToken, apnsToken[:58], digestResp, digestCnon, `response="`},
			keep: []string{"pn-prid=" + Mask(apnsToken) + ";", "pn-param=TEAM123456.com.example.phone.voip", `username="1001"`,
				`nonce="abc123nonce"`, "response=…", "cnonce=…", "qop=auth", "nc=00000001", "Content-Length: 0\r\n"},
		},
		{
			name: "folded Proxy-Authorization, compact Contact, odd case",
			raw: crlf("INVITE sip:1002@pbx.test SIP/2.0\n" +
				"v: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-2\n" +
				"f: <sip:1001@pbx.test>;tag=a2\n" +
				"t: <sip:1002@pbx.test>\n" +
				"i: inv-2\n" +
				"CSeq: 1 INVITE\n" +
				"m: <sip:1001@192.0.2.10:5060;transport=tcp;PN-PRID=" + apnsToken + ";pn-provider=apns>\n" +
				"PROXY-AUTHORIZATION: DIGEST username=\"1001\",\n" +
				"  realm=\"pbx.test\", nonce=\"n2\",\n" +
				"\turi=\"sip:1002@pbx.test\", Response =\n" +
				"   \"" + digestResp + "\", CNonce= " + digestCnon + "\n" +
				"l: 0\n\n"),
			secrets: []string{apnsToken, digestResp, digestCnon},
			keep:    []string{"PN-PRID=" + Mask(apnsToken), "Response =\r\n   …", "CNonce= …", "\turi=\"sip:1002@pbx.test\"", "l: 0\r\n"},
		},
		{
			name: "Linphone legacy pn-tok and Apple remote&voip multi-token form",
			raw: crlf("REGISTER sip:pbx.test SIP/2.0\n" +
				"Via: SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bK-3\n" +
				"From: <sip:1003@pbx.test>;tag=a3\n" +
				"To: <sip:1003@pbx.test>\n" +
				"Call-ID: reg-1003\n" +
				"CSeq: 1 REGISTER\n" +
				"Contact: <sip:1003@192.0.2.11:5060;pn-type=apple;pn-tok=" + voipToken + ";app-id=com.example.phone.prod>\n" +
				"Contact: <sip:1003@192.0.2.12:5060;pn-provider=apns;pn-prid=" + apnsToken + ":remote&" + voipToken + ":voip;pn-param=ABCD1234.com.example.phone.remote&voip>\n" +
				"Contact: <sip:1003@192.0.2.13:5060>;pn-prid=\"" + apnsToken + "%3Aremote%26" + voipToken + "%3AVOIP\"\n" +
				"Content-Length: 0\n\n"),
			secrets: []string{apnsToken, voipToken, apnsToken[:30], voipToken[:30]},
			keep: []string{"pn-tok=" + Mask(voipToken) + ";app-id=com.example.phone.prod",
				"pn-prid=" + Mask(apnsToken) + ":remote&" + Mask(voipToken) + ":voip;pn-param=ABCD1234.com.example.phone.remote&voip",
				`pn-prid="` + Mask(apnsToken) + "%3Aremote%26" + Mask(voipToken) + `%3AVOIP"`},
		},
		{
			name: "FCM token with a colon, in the Request-URI and a 200's Contact",
			raw: crlf("SIP/2.0 200 OK\n" +
				"Via: SIP/2.0/UDP 192.0.2.14:5060;branch=z9hG4bK-4\n" +
				"From: <sip:1004@pbx.test>;tag=a4\n" +
				"To: <sip:1004@pbx.test>;tag=b4\n" +
				"Call-ID: reg-1004\n" +
				"CSeq: 1 REGISTER\n" +
				"Contact: <sip:1004@192.0.2.14:5060;pn-provider=fcm;pn-prid=" + fcmToken + ";pn-param=proj-1>;expires=600\n" +
				"Content-Length: 0\n\n"),
			secrets: []string{fcmToken, "APA91bHun4MxP5egoKMwt2KZ", "dXk3bGZ0c2lQ"},
			keep:    []string{"pn-prid=" + Mask(fcmToken) + ";pn-param=proj-1>;expires=600", "SIP/2.0 200 OK\r\n"},
		},
		{
			name: "push token in a Request-URI towards a device",
			raw: crlf("OPTIONS sip:1005@192.0.2.15:5060;pn-provider=apns;pn-prid=" + apnsToken + " SIP/2.0\n" +
				"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-5\n" +
				"From: <sip:pbx.test>;tag=a5\nTo: <sip:1005@pbx.test>\nCall-ID: opt-5\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"),
			secrets: []string{apnsToken},
			keep:    []string{"OPTIONS sip:1005@192.0.2.15:5060;pn-provider=apns;pn-prid=" + Mask(apnsToken) + " SIP/2.0\r\n"},
		},
		{
			name: "SDES keys, MIKEY and k= in an INVITE's SDP",
			raw: withLength("INVITE sip:1002@pbx.test SIP/2.0\n"+
				"Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-6\n"+
				"From: <sip:1001@pbx.test>;tag=a6\nTo: <sip:1002@pbx.test>\nCall-ID: inv-6\nCSeq: 1 INVITE\n"+
				"Content-Type: application/sdp\n", sdp),
			secrets: []string{sdesKey, sdesKey2, mikeyData},
			keep: []string{"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:…|2^20|1:4\r\n",
				"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:…;inline:…|2^20 KDR=1\r\n",
				"a=key-mgmt:mikey …\r\n", "k=base64:…\r\n", "m=audio 8000 RTP/SAVP 0\r\n", "a=sendrecv\r\n"},
		},
		{
			name: "MESSAGE body hidden, Content-Length fixed",
			raw: withLength("MESSAGE sip:1002@pbx.test SIP/2.0\n"+
				"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-7\n"+
				"From: <sip:1001@pbx.test>;tag=a7\nTo: <sip:1002@pbx.test>\nCall-ID: msg-7\nCSeq: 1 MESSAGE\n"+
				"Content-Type: text/plain\n", messageText),
			secrets: []string{messageText, "door code", "4711"},
			keep:    []string{"Content-Type: text/plain\r\n"},
			body:    "[message body hidden: " + strconv.Itoa(len(messageText)) + " bytes]",
		},
		{
			name: "MESSAGE with compact Content-Length and LF line ends",
			raw: "MESSAGE sip:1002@pbx.test SIP/2.0\n" +
				"v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-8\n" +
				"f: <sip:1001@pbx.test>;tag=a8\nt: <sip:1002@pbx.test>\ni: msg-8\nCSeq: 7 MESSAGE\n" +
				"c: text/plain\nl: " + strconv.Itoa(len(messageText)) + "\n\n" + messageText,
			secrets: []string{messageText},
			keep:    []string{"i: msg-8\n", "c: text/plain\n"},
			body:    "[message body hidden: " + strconv.Itoa(len(messageText)) + " bytes]",
		},
		{
			name: "a response to a MESSAGE with a body",
			raw: withLength("SIP/2.0 200 OK\n"+
				"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-9\n"+
				"From: <sip:1001@pbx.test>;tag=a9\nTo: <sip:1002@pbx.test>;tag=b9\nCall-ID: msg-9\nCSeq: 1 MESSAGE\n"+
				"Content-Type: text/plain\n", messageText),
			secrets: []string{messageText},
			body:    "[message body hidden: " + strconv.Itoa(len(messageText)) + " bytes]",
		},
		{
			name: "Basic and Bearer credentials hidden entirely; Authentication-Info",
			raw: crlf("REGISTER sip:pbx.test SIP/2.0\n" +
				"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-10\n" +
				"From: <sip:1001@pbx.test>;tag=a10\nTo: <sip:1001@pbx.test>\nCall-ID: reg-10\nCSeq: 1 REGISTER\n" +
				"Authorization: Basic " + basicCreds + "\n" +
				"authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMDAxIn0.sig\n" +
				`Authentication-Info: nextnonce="nn1", qop=auth, rspauth="` + digestResp + `", cnonce="` + digestCnon + `", nc=00000001` + "\n" +
				"Content-Length: 0\n\n"),
			secrets: []string{basicCreds, "eyJhbGciOiJIUzI1NiJ9", digestResp, digestCnon},
			keep:    []string{"Authorization: Basic …\r\n", "authorization: Bearer …\r\n", `nextnonce="nn1"`, "rspauth=…", "cnonce=…"},
		},
		{
			name: "the on-behalf mark is kept as it is",
			raw: crlf("REGISTER sip:pbx.test SIP/2.0\n" +
				"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-11\n" +
				"From: <sip:1001@pbx.test>;tag=a11\nTo: <sip:1001@pbx.test>\nCall-ID: ob-11\nCSeq: 1 REGISTER\n" +
				"X-Sipwake-On-Behalf: node-a;pn-prid=not-a-token-but-kept-anyway\n" +
				"Content-Length: 0\n\n"),
			keep: []string{"X-Sipwake-On-Behalf: node-a;pn-prid=not-a-token-but-kept-anyway\r\n"},
		},
		{
			name: "nothing to hide",
			raw: withLength("INVITE sip:1002@pbx.test SIP/2.0\n"+
				"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-12\n"+
				"From: \"A; pn-prid\" <sip:1001@pbx.test>;tag=a12\nTo: <sip:1002@pbx.test>\nCall-ID: inv-12\nCSeq: 1 INVITE\n"+
				"Content-Type: application/sdp\n", "v=0\na=rtpmap:0 PCMU/8000\n"),
		},
		{
			name:    "a fragment without a blank line",
			raw:     "REGISTER sip:pbx.test SIP/2.0\r\nContact: <sip:1@192.0.2.1;pn-prid=" + apnsToken,
			secrets: []string{apnsToken},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := []byte(c.raw)
			orig := string(raw)
			got := string(MaskMessage(raw))
			if string(raw) != orig {
				t.Fatal("MaskMessage modified its input")
			}
			for _, s := range c.secrets {
				if strings.Contains(got, s) {
					t.Errorf("masked message still holds %q:\n%s", s, got)
				}
			}
			for _, k := range c.keep {
				if !strings.Contains(got, k) {
					t.Errorf("masked message lost %q:\n%s", k, got)
				}
			}
			if c.secrets == nil && c.keep == nil && got != orig {
				t.Errorf("a message with nothing to hide changed:\n%s", got)
			}
			m := scanMessage([]byte(got))
			body := got[m.body:]
			if c.body != "" && body != c.body {
				t.Errorf("body = %q, want %q", body, c.body)
			}
			if cl := m.header("content-length"); cl != "" && cl != strconv.Itoa(len(body)) {
				t.Errorf("Content-Length %s, body %d bytes:\n%s", cl, len(body), got)
			}
			if m.blank < len(got) {
				// What sipgo parses, it still parses after masking.
				if _, err := sip.NewParser().ParseSIP([]byte(orig)); err == nil {
					if _, err := sip.NewParser().ParseSIP([]byte(got)); err != nil {
						t.Errorf("the masked message does not parse: %v\n%s", err, got)
					}
				}
			}
		})
	}
}

// TestMaskMessageOnlyAffectsSecrets: masking keeps every line that holds
// no secret byte for byte (the start line, headers, line ends).
func TestMaskMessageOnlyAffectsSecrets(t *testing.T) {
	raw := crlf("REGISTER sip:pbx.test SIP/2.0\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1;rport\n" +
		"From: <sip:1001@pbx.test>;tag=a1\n" +
		"Contact: <sip:1001@192.0.2.10;pn-prid=" + apnsToken + ">\n" +
		"User-Agent: Example/1.0\n" +
		"Content-Length: 0\n\n")
	got := string(MaskMessage([]byte(raw)))
	want := strings.Replace(raw, apnsToken, Mask(apnsToken), 1)
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

func TestScanMessage(t *testing.T) {
	raw := "INVITE sip:%31002@PBX.test;user=phone SIP/2.0\r\n" +
		"f: \"Alice\" <sips:alice@Example.COM:5061;transport=tls>;tag=1\r\n" +
		"TO : sip:bob@example.com;tag=2\r\n" +
		"Subject: a\r\n folded\r\n\tsubject\r\n" +
		"i:  cid-1  \r\n" +
		"CSeq: 42 INVITE\r\n" +
		"\r\n" +
		"body"
	m := scanMessage([]byte(raw))
	method, ruri, status := m.startLine()
	if method != "INVITE" || ruri != "sip:%31002@PBX.test;user=phone" || status != 0 {
		t.Errorf("start line = %q %q %d", method, ruri, status)
	}
	if got := m.header("call-id"); got != "cid-1" {
		t.Errorf("call-id %q", got)
	}
	if got := m.header("subject"); got != "a folded subject" {
		t.Errorf("folded subject %q", got)
	}
	if n, meth := m.cseq(); n != 42 || meth != "INVITE" {
		t.Errorf("cseq %d %s", n, meth)
	}
	if got := string(m.data[m.body:]); got != "body" {
		t.Errorf("body %q", got)
	}
	for _, c := range []struct{ uri, want string }{
		{nameAddrURI(m.header("from")), "sip:alice@example.com"},
		{nameAddrURI(m.header("to")), "sip:bob@example.com"},
		{ruri, "sip:1002@pbx.test"},
		{"sip:pbx.test", ""},
		{"tel:+4930123", ""},
		{"sip:user:pw@[2001:db8::1]:5060", "sip:user@[2001:db8::1]"},
	} {
		if got := uriAOR(c.uri); got != c.want {
			t.Errorf("uriAOR(%q) = %q, want %q", c.uri, got, c.want)
		}
	}
	if _, _, st := scanMessageStatus("SIP/2.0 486 Busy Here\r\n\r\n"); st != 486 {
		t.Errorf("status %d", st)
	}
}

func scanMessageStatus(s string) (string, string, int) {
	m := scanMessage([]byte(s))
	return m.startLine()
}

func TestFrameLength(t *testing.T) {
	msg := withLength("MESSAGE sip:a@b SIP/2.0\nCall-ID: x\n", "hello")
	for _, c := range []struct {
		in   string
		want int
	}{
		{msg, len(msg)},
		{msg + "OPTIONS sip:a@b SIP/2.0\r\n", len(msg)},
		{msg[:len(msg)-1], -1},
		{msg[:20], -1},
		{"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: y\r\n\r\n", len("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: y\r\n\r\n")},
		{"OPTIONS sip:a@b SIP/2.0\r\nl: x\r\n\r\n", -1},
	} {
		if got := frameLength([]byte(c.in)); got != c.want {
			t.Errorf("frameLength(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// BenchmarkMaskMessage masks a typical INVITE (nothing to hide but the
// scan) and a REGISTER with a push token and digest credentials.
func BenchmarkMaskMessage(b *testing.B) {
	reg := []byte(crlf("REGISTER sip:pbx.test SIP/2.0\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1;rport\n" +
		"Max-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=a1\nTo: <sip:1001@pbx.test>\nCall-ID: reg-1001\nCSeq: 2 REGISTER\n" +
		"Contact: <sip:1001@192.0.2.10:5060;pn-provider=apns;pn-prid=" + apnsToken + ";pn-param=TEAM123456.com.example.phone.voip>;+sip.pnsreg\n" +
		`Authorization: Digest username="1001", realm="pbx.test", nonce="abc123nonce", uri="sip:pbx.test", response="` + digestResp + `", algorithm=MD5` + "\n" +
		"User-Agent: Example/1.0\nContent-Length: 0\n\n"))
	for _, c := range []struct {
		name string
		msg  []byte
	}{{"invite", []byte(benchInvite)}, {"register", reg}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.msg)))
			for b.Loop() {
				_ = MaskMessage(c.msg)
			}
		})
	}
}
