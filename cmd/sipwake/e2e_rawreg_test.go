package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
)

const rawWait = 5 * time.Second

// rawRegister sends a REGISTER for user through sipwake with the given
// Contact URI parameters, answers the PBX's digest challenge, and returns
// the final response.
func rawRegister(t *testing.T, ua *proxytest.UA, sw, user, password, contactParams, extra string, cseq *int) *sip.Response {
	t.Helper()
	return rawRegisterFor(t, ua, sw, user, password, contactParams, extra, 600, cseq)
}

// rawRegisterFor is rawRegister asking for expires seconds.
func rawRegisterFor(t *testing.T, ua *proxytest.UA, sw, user, password, contactParams, extra string, expires int, cseq *int) *sip.Response {
	t.Helper()
	callID := "reg-" + user + "-" + strconv.Itoa(ua.Port())
	tp := strings.ToUpper(ua.Network())
	contactTP := ""
	if tp != "UDP" {
		contactTP = ";transport=" + ua.Network()
	}
	// contactParams is "uri-params|header-params".
	uriParams, hdrParams, _ := strings.Cut(contactParams, "|")
	build := func(auth string) string {
		*cseq++
		msg := "REGISTER sip:pbx.test SIP/2.0\n" +
			"Via: SIP/2.0/" + tp + " " + ua.Addr() + ";branch=z9hG4bK-r" + strconv.Itoa(*cseq) + callID + ";rport\n" +
			"Max-Forwards: 70\n" +
			"From: <sip:" + user + "@pbx.test>;tag=rt" + user + "\n" +
			"To: <sip:" + user + "@pbx.test>\n" +
			"Call-ID: " + callID + "\n" +
			"CSeq: " + strconv.Itoa(*cseq) + " REGISTER\n" +
			"Contact: <sip:" + user + "@" + ua.Addr() + contactTP + uriParams + ">" + hdrParams + ";expires=" + strconv.Itoa(expires) + "\n" +
			"User-Agent: raw-test\n"
		if extra != "" {
			msg += extra + "\n"
		}
		if auth != "" {
			msg += "Authorization: " + auth + "\n"
		}
		return msg + "\n"
	}
	ua.Send(sw, build(""))
	first := waitFinal(t, ua)
	if first.StatusCode != 401 {
		return first
	}
	ch := first.GetHeader("WWW-Authenticate").Value()
	nonce := paramOf(ch, "nonce")
	ua.Send(sw, build(authorization(user, "pbx.test", password, "REGISTER", "sip:pbx.test", nonce)))
	return waitFinal(t, ua)
}

// waitFinal waits for a final response; requests that arrive meanwhile
// (an INVITE for a woken device may overtake its REGISTER's 200) are kept
// for the test to read next.
func waitFinal(t *testing.T, ua *proxytest.UA) *sip.Response {
	t.Helper()
	deadline := time.Now().Add(rawWait)
	var kept []sip.Message
	defer func() {
		for _, m := range kept {
			ua.Defer(m)
		}
	}()
	for {
		m, err := ua.Recv(time.Until(deadline))
		if err != nil {
			t.Fatalf("no final response: %v", err)
		}
		switch r := m.(type) {
		case *sip.Response:
			if r.StatusCode >= 200 {
				return r
			}
		case *sip.Request:
			kept = append(kept, r)
		}
	}
}

func paramOf(h, name string) string {
	i := strings.Index(h, name+"=\"")
	if i < 0 {
		return ""
	}
	rest := h[i+len(name)+2:]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}

// TestE2EPushProviderNegotiation covers RFC 8599 server behaviour: 555 for
// an unknown provider with nothing sent upstream, the capability query,
// and Feature-Caps on the forwarded REGISTER's 2xx.
func TestE2EPushProviderNegotiation(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))

	t.Run("unknown provider gets 555", func(t *testing.T) {
		ua := proxytest.NewUDP(t, "")
		cseq := 0
		res := rawRegister(t, ua, sw.UDP, "1001", "pw1001", ";pn-provider=carrierpigeon;pn-prid=abc123;pn-param=x", "", &cseq)
		if res.StatusCode != 555 {
			t.Fatalf("got %d, want 555", res.StatusCode)
		}
		fc := res.GetHeader("Feature-Caps")
		if fc == nil || !strings.Contains(fc.Value(), "+sip.pns") {
			t.Errorf("555 without Feature-Caps listing supported providers: %v", fc)
		}
		if cs := kam.Contacts(t, "1001"); len(cs) != 0 {
			t.Errorf("PBX got a registration: %v", cs)
		}
	})
	t.Run("capability query", func(t *testing.T) {
		ua := proxytest.NewUDP(t, "")
		cseq := 0
		res := rawRegister(t, ua, sw.UDP, "1002", "pw1002", ";pn-provider", "", &cseq)
		if res.StatusCode != 200 {
			t.Fatalf("got %d, want 200", res.StatusCode)
		}
		fc := res.GetHeader("Feature-Caps")
		// RFC 8599 §4.1.1: one +sip.pns with a quoted, comma separated list.
		if fc == nil || !strings.Contains(fc.Value(), `+sip.pns="`) || !strings.Contains(fc.Value(), "apns") || !strings.Contains(fc.Value(), "fcm") {
			t.Errorf("capability answer lacks the supported providers: %v", fc)
		}
		for _, c := range kam.Contacts(t, "1002") {
			if strings.Contains(c, "pn-") {
				t.Errorf("PBX contact carries push parameters: %s", c)
			}
		}
	})
	t.Run("feature-caps on 2xx", func(t *testing.T) {
		ua := proxytest.NewUDP(t, "")
		cseq := 0
		res := rawRegister(t, ua, sw.UDP, "1003", "pw1003",
			";pn-provider=apns;pn-prid=00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0;pn-param=TEAM123456.com.example.phone.voip|;+sip.pnsreg", "", &cseq)
		if res.StatusCode != 200 {
			t.Fatalf("got %d, want 200", res.StatusCode)
		}
		fc := res.GetHeader("Feature-Caps")
		if fc == nil || !strings.Contains(fc.Value(), `+sip.pns="apns"`) || !strings.Contains(fc.Value(), "+sip.pnsreg") {
			t.Errorf("2xx Feature-Caps = %v", fc)
		}
		c := res.GetHeader("Contact")
		if c == nil || !strings.Contains(c.Value(), "pn-prid=00fc13") || !strings.Contains(c.Value(), ua.Addr()) {
			t.Errorf("2xx does not give the device its own Contact back: %v", c)
		}
		bs := sw.waitBindings(t, "sip:1003@pbx.test", 1, rawWait)
		if bs[0].Push == nil || bs[0].Push.Provider != "apns" || !strings.HasPrefix(bs[0].Push.Token, "00fc13") {
			t.Errorf("stored push target %+v", bs[0].Push)
		}
	})
}

// TestE2ENoRelayTowardsDevices: a request from an untrusted source towards
// a device contact, and a device request to a foreign domain or an
// arbitrary address, are refused, and nothing reaches the target.
func TestE2ENoRelayTowardsDevices(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))
	dev := proxytest.NewUDP(t, "")
	cseq := 0
	if res := rawRegister(t, dev, sw.UDP, "1001", "pw1001", ";pn-provider=fcm;pn-prid=tokAAAAAAAAAAAAAAAA;pn-param=proj-1", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	b := sw.waitBindings(t, "sip:1001@pbx.test", 1, rawWait)[0]

	attacker := proxytest.NewUDP(t, "127.0.0.1")
	target := proxytest.NewUDP(t, "127.0.0.1")
	inv := func(ruri, id string) string {
		return "INVITE " + ruri + " SIP/2.0\nVia: SIP/2.0/UDP " + attacker.Addr() + ";branch=z9hG4bK-" + id + ";rport\n" +
			"Max-Forwards: 70\nFrom: <sip:mallory@evil.example>;tag=m" + id + "\nTo: <" + ruri + ">\nCall-ID: " + id +
			"\nCSeq: 1 INVITE\nContact: <sip:mallory@" + attacker.Addr() + ">\n\n"
	}
	attacker.Send(sw.UDP, inv("sip:"+b.Token+"@"+sw.UDP, "att1"))
	if res := waitFinal(t, attacker); res.StatusCode != 403 {
		t.Errorf("untrusted towards device contact: %d, want 403", res.StatusCode)
	}
	attacker.Send(sw.UDP, inv("sip:victim@"+target.Addr(), "att2"))
	if res := waitFinal(t, attacker); res.StatusCode != 403 {
		t.Errorf("device to an arbitrary address: %d, want 403", res.StatusCode)
	}
	attacker.Send(sw.UDP, inv("sip:bob@biloxi.example.com", "att3"))
	if res := waitFinal(t, attacker); res.StatusCode != 403 {
		t.Errorf("device to a foreign domain: %d, want 403", res.StatusCode)
	}
	dev.Quiet(500 * time.Millisecond)
	target.Quiet(100 * time.Millisecond)
}

// TestE2EEmbeddedStoreSurvivesRestart: sipwake restarted on the embedded
// store keeps its bindings.
func TestE2EEmbeddedStoreSurvivesRestart(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	dir := t.TempDir()
	cfg := e2eConfig(t, kam, dir)
	sw := startDaemon(t, cfg)
	dev := proxytest.NewUDP(t, "")
	cseq := 0
	if res := rawRegister(t, dev, sw.UDP, "1002", "pw1002", ";pn-provider=apns;pn-prid=feedfacefeedface0001;pn-param=TEAM123456.com.example.phone.voip", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	before := sw.waitBindings(t, "sip:1002@pbx.test", 1, rawWait)[0]
	sw.Stop(t)

	sw2 := startDaemon(t, e2eConfig(t, kam, dir))
	after := sw2.waitBindings(t, "sip:1002@pbx.test", 1, rawWait)[0]
	if after.Token != before.Token || after.Push == nil || after.Push.Token != before.Push.Token {
		t.Errorf("binding changed across restart: before %+v after %+v", before, after)
	}
}
