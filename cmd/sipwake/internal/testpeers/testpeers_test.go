package testpeers

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The self-test drives the harness against Kamailio only (no sipwake): it
// proves the config, the scenarios and the client drivers work together.

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// mustRun runs SIPp and fails the test with SIPp's traces when it fails.
func mustRun(t *testing.T, ctx context.Context, opts SIPpOptions) SIPpResult {
	t.Helper()
	res, err := RunSIPp(t, ctx, opts)
	if err != nil {
		t.Fatalf("%v\n--- messages\n%s", err, lastLines(res.Messages, 60))
	}
	return res
}

func TestFreePort(t *testing.T) {
	seen := map[int]bool{}
	for _, network := range []string{"udp", "tcp", "udp+tcp", "udp", "tcp"} {
		p := FreePort(t, network)
		if p <= 0 || p > 65535 || seen[p] {
			t.Fatalf("FreePort(%s) = %d (seen before: %v)", network, p, seen[p])
		}
		seen[p] = true
	}
	base := FreePortRange(t, 3)
	for i := range 3 {
		if seen[base+i] {
			t.Fatalf("FreePortRange returned a port handed out before: %d", base+i)
		}
	}
}

func TestSIPpRegister(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 30*time.Second)
	pbx := StartKamailio(t, KamailioOptions{})

	for _, tc := range []struct {
		user, transport, ctransport string
		wantReceived                bool
	}{
		{"1001", "u1", "udp", false},
		{"1002", "t1", "tcp", true},
	} {
		keys := RegisterKeys(tc.user, pbx.Domain, tc.ctransport)
		keys["pn_prid"] = "prid-" + tc.ctransport + "-" + tc.user
		res := mustRun(t, ctx, SIPpOptions{
			Scenario:  "register.xml",
			Remote:    pbx.UDPAddr,
			Transport: tc.transport,
			Auth:      [2]string{tc.user, pbx.Users[tc.user]},
			Keys:      keys,
			Timeout:   10 * time.Second,
		})
		if !strings.Contains(res.Messages, "401 Unauthorized") {
			t.Errorf("%s: no 401 challenge in the trace", tc.user)
		}
		contacts := pbx.ContactDetails(t, tc.user)
		if len(contacts) != 1 {
			t.Fatalf("%s: contacts = %+v, want 1", tc.user, contacts)
		}
		c := contacts[0]
		for _, want := range []string{"pn-provider=apns", "pn-prid=" + keys["pn_prid"], "pn-param=TEAM123456.com.example.phone.voip", "transport=" + tc.ctransport} {
			if !strings.Contains(c.URI, want) {
				t.Errorf("%s: contact %q lacks %q", tc.user, c.URI, want)
			}
		}
		if got := c.Received != ""; got != tc.wantReceived {
			t.Errorf("%s over %s: received = %q, want set=%v", tc.user, tc.transport, c.Received, tc.wantReceived)
		}
		t.Logf("%s: %s", tc.user, strings.Join(pbx.Contacts(t, tc.user), " | "))
	}

	// de-REGISTER the UDP contact, exactly as registered
	c := pbx.ContactDetails(t, "1001")[0]
	mustRun(t, ctx, SIPpOptions{
		Scenario: "unregister.xml",
		Remote:   pbx.UDPAddr,
		Auth:     [2]string{"1001", "pw1001"},
		Keys:     UnregisterKeys("1001", pbx.Domain, "<"+c.URI+">"),
		Timeout:  10 * time.Second,
	})
	if got := pbx.Contacts(t, "1001"); len(got) != 0 {
		t.Errorf("after unregister: contacts of 1001 = %v", got)
	}
}

func TestSIPpRegisterWrongPassword(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 20*time.Second)
	pbx := StartKamailio(t, KamailioOptions{})
	res, err := RunSIPp(t, ctx, SIPpOptions{
		Scenario: "register.xml",
		Remote:   pbx.UDPAddr,
		Auth:     [2]string{"1001", "wrong"},
		Keys:     RegisterKeys("1001", pbx.Domain, "udp"),
		Timeout:  3 * time.Second,
	})
	if err == nil {
		t.Fatalf("register with a wrong password succeeded:\n%s", res.Messages)
	}
	if strings.Count(res.Messages, "SIP/2.0 401") < 2 {
		t.Errorf("want the authenticated REGISTER answered with 401 again; trace:\n%s", lastLines(res.Messages, 40))
	}
	if got := pbx.Contacts(t, "1001"); len(got) != 0 {
		t.Errorf("contacts of 1001 = %v, want none", got)
	}
}

func TestSIPpCallThroughKamailio(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 40*time.Second)
	pbx := StartKamailio(t, KamailioOptions{})

	// 1002 registers over UDP from port P, then a UAS listens on P.
	reg := mustRun(t, ctx, SIPpOptions{
		Scenario: "register.xml",
		Remote:   pbx.UDPAddr,
		Auth:     [2]string{"1002", "pw1002"},
		Keys:     RegisterKeys("1002", pbx.Domain, "udp"),
		Timeout:  10 * time.Second,
	})
	uas, err := StartSIPp(t, ctx, SIPpOptions{
		Scenario:  "uas_answer.xml",
		LocalPort: reg.LocalPort,
		Keys:      map[string]string{"me": "1002"},
		Pause:     200 * time.Millisecond,
		Timeout:   25 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	uac := mustRun(t, ctx, SIPpOptions{
		Scenario: "uac_call.xml",
		Remote:   pbx.UDPAddr,
		Auth:     [2]string{"1001", "pw1001"},
		Keys:     CallKeys("1001", "1002", pbx.Domain),
		Pause:    300 * time.Millisecond,
		Timeout:  20 * time.Second,
	})
	ures, err := uas.Wait()
	if err != nil {
		t.Fatalf("uas: %v\n%s", err, lastLines(ures.Messages, 60))
	}
	for _, want := range []string{"SIP/2.0 407", "SIP/2.0 180", "SIP/2.0 200 OK", "ACK sip:", "BYE sip:", "Record-Route:"} {
		if !strings.Contains(uac.Messages, want) {
			t.Errorf("uac trace lacks %q", want)
		}
	}
	if n := strings.Count(ures.Messages, "INVITE sip:"); n != 2 {
		t.Errorf("uas received %d INVITEs, want 2 (initial + re-INVITE)", n)
	}
}

// TestSIPpCancel also covers NoCallerAuth: the INVITE is not challenged.
func TestSIPpCancel(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 40*time.Second)
	pbx := StartKamailio(t, KamailioOptions{NoCallerAuth: true})
	reg := mustRun(t, ctx, SIPpOptions{
		Scenario: "register.xml",
		Remote:   pbx.UDPAddr,
		Auth:     [2]string{"1003", "pw1003"},
		Keys:     RegisterKeys("1003", pbx.Domain, "udp"),
		Timeout:  10 * time.Second,
	})
	uas, err := StartSIPp(t, ctx, SIPpOptions{
		Scenario:  "uas_ring.xml",
		LocalPort: reg.LocalPort,
		Keys:      map[string]string{"me": "1003"},
		Timeout:   25 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	uac := mustRun(t, ctx, SIPpOptions{
		Scenario: "uac_cancel.xml",
		Remote:   pbx.UDPAddr,
		Auth:     [2]string{"1001", "pw1001"},
		Keys:     CallKeys("1001", "1003", pbx.Domain),
		Pause:    300 * time.Millisecond,
		Timeout:  20 * time.Second,
	})
	if ures, err := uas.Wait(); err != nil {
		t.Fatalf("uas: %v\n%s", err, lastLines(ures.Messages, 60))
	}
	if !strings.Contains(uac.Messages, "SIP/2.0 487") {
		t.Errorf("caller saw no 487:\n%s", lastLines(uac.Messages, 40))
	}
	if strings.Contains(uac.Messages, "SIP/2.0 407") {
		t.Errorf("NoCallerAuth: the INVITE was challenged")
	}
}

func TestSIPpMessage(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 40*time.Second)
	pbx := StartKamailio(t, KamailioOptions{})
	reg := mustRun(t, ctx, SIPpOptions{
		Scenario: "register.xml",
		Remote:   pbx.UDPAddr,
		Auth:     [2]string{"1002", "pw1002"},
		Keys:     RegisterKeys("1002", pbx.Domain, "udp"),
		Timeout:  10 * time.Second,
	})
	uas, err := StartSIPp(t, ctx, SIPpOptions{
		Scenario:  "uas_message.xml",
		LocalPort: reg.LocalPort,
		Timeout:   20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := CallKeys("1001", "1002", pbx.Domain)
	keys["text"] = "hello from the self-test"
	// a wrong proxy password is challenged again and never delivered
	bad, err := RunSIPp(t, ctx, SIPpOptions{
		Scenario: "message.xml",
		Remote:   pbx.UDPAddr,
		Auth:     [2]string{"1001", "wrong"},
		Keys:     keys,
		Timeout:  3 * time.Second,
	})
	if err == nil || strings.Count(bad.Messages, "SIP/2.0 407") < 2 {
		t.Errorf("MESSAGE with a wrong password: err %v, trace:\n%s", err, lastLines(bad.Messages, 30))
	}
	mustRun(t, ctx, SIPpOptions{
		Scenario: "message.xml",
		Remote:   pbx.UDPAddr,
		Auth:     [2]string{"1001", "pw1001"},
		Keys:     keys,
		Timeout:  10 * time.Second,
	})
	ures, err := uas.Wait()
	if err != nil {
		t.Fatalf("uas: %v", err)
	}
	if !strings.Contains(ures.Log, "body=hello from the self-test") {
		t.Errorf("receiver log = %q", ures.Log)
	}
}

func TestSIPpRegisterWaitOverTCP(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 40*time.Second)
	pbx := StartKamailio(t, KamailioOptions{})
	dev, err := StartSIPp(t, ctx, SIPpOptions{
		Scenario:    "register_wait.xml",
		OOCScenario: "ooc_answer.xml",
		Remote:      pbx.TCPAddr,
		Transport:   "t1",
		Auth:        [2]string{"1003", "pw1003"},
		Keys:        RegisterKeys("1003", pbx.Domain, "tcp"),
		Timeout:     25 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.WaitMessage("SIP/2.0 200 OK", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mustRun(t, ctx, SIPpOptions{
		Scenario: "uac_call.xml",
		Remote:   pbx.UDPAddr,
		Auth:     [2]string{"1001", "pw1001"},
		Keys:     CallKeys("1001", "1003", pbx.Domain),
		Timeout:  20 * time.Second,
	})
	res, err := dev.Wait()
	if err != nil {
		t.Fatalf("device: %v\n%s", err, lastLines(res.Messages, 60))
	}
	if !strings.Contains(res.Log, "INVITE ruri=sip:1003@127.0.0.1") || !strings.Contains(res.Log, "pn-prid=tok-1003") {
		t.Errorf("device log = %q, want the INVITE to the registered contact with its push parameters", res.Log)
	}
}

func TestBaresipRegister(t *testing.T) {
	t.Parallel()
	pbx := StartKamailio(t, KamailioOptions{TLS: true})
	for _, tc := range []struct {
		user, transport, proxy, ca string
	}{
		{"1001", "udp", pbx.UDPAddr, ""},
		{"1002", "tls", pbx.TLSAddr, pbx.CertFile},
	} {
		b := StartBaresip(t, BaresipOptions{User: tc.user, Proxy: tc.proxy, Transport: tc.transport, TLSCA: tc.ca})
		if err := b.WaitRegistered(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		cs := pbx.WaitContacts(t, tc.user, 1, 5*time.Second)
		if !strings.Contains(cs[0].URI, "transport="+tc.transport) && tc.transport != "udp" {
			t.Errorf("%s: contact %q, want transport=%s", tc.user, cs[0].URI, tc.transport)
		}
		if tc.transport == "tls" && !strings.HasPrefix(cs[0].Socket, "tls:") {
			t.Errorf("%s: contact received on %q, want the TLS listener", tc.user, cs[0].Socket)
		}
		t.Logf("baresip %s over %s: %s", tc.user, tc.transport, strings.Join(pbx.Contacts(t, tc.user), " | "))
	}
}

func TestLinphoneRegister(t *testing.T) {
	t.Parallel()
	pbx := StartKamailio(t, KamailioOptions{TLS: true})
	l := StartLinphone(t, LinphoneOptions{
		User:       "1003",
		Proxy:      pbx.UDPAddr,
		PushParams: "pn-provider=apns;pn-prid=lp-token-1003;pn-param=TEAM123456.org.linphone.phone.voip",
	})
	if err := l.WaitRegistered(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	c := pbx.WaitContacts(t, "1003", 1, 5*time.Second)[0]
	if !strings.Contains(c.URI, "pn-prid=lp-token-1003") || c.Instance == "" {
		t.Errorf("linphone contact %+v: want pn-prid in the URI and a +sip.instance", c)
	}

	lt := StartLinphone(t, LinphoneOptions{User: "1002", Proxy: pbx.TLSAddr, Transport: "tls", TLSCA: pbx.CertFile})
	if err := lt.WaitRegistered(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if c := pbx.WaitContacts(t, "1002", 1, 5*time.Second)[0]; !strings.HasPrefix(c.Socket, "tls:") {
		t.Errorf("linphone TLS contact received on %q", c.Socket)
	}
}

func TestBaresipCallsLinphone(t *testing.T) {
	t.Parallel()
	pbx := StartKamailio(t, KamailioOptions{})
	b := StartBaresip(t, BaresipOptions{User: "1001", Proxy: pbx.UDPAddr})
	l := StartLinphone(t, LinphoneOptions{User: "1003", Proxy: pbx.UDPAddr, AutoAnswer: true})
	if err := b.WaitRegistered(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitRegistered(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	if err := b.Dial("sip:1003@" + pbx.Domain); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitEvent("CALL_ESTABLISHED", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitEvent("LinphoneCallStreamsRunning", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if st, err := l.CallStatus(); err != nil || st != "LinphoneCallStreamsRunning" {
		t.Errorf("linphone call status = %q, %v", st, err)
	}
	if err := b.Hangup(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitEvent("CALL_CLOSED", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitEvent("LinphoneCallEnd", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
