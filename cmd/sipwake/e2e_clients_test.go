package main

import (
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
)

// clientWait bounds the softphones' registrations and call steps.
const clientWait = 15 * time.Second

// TestE2EClientLinphoneTLS: linphone-daemon registers over TLS to
// sipwake's TLS listener (trusting sipwake's self-signed certificate) with
// RFC 8599 push parameters in its Contact URI (contact_uri_parameters): the
// binding is stored with transport tls and its push target, and the PBX
// holds sipwake's contact without push parameters.
func TestE2EClientLinphoneTLS(t *testing.T) {
	testpeers.Require(t, "linphone-daemon")
	kam := startPBX(t, testpeers.KamailioOptions{})
	cfg := e2eConfig(t, kam, t.TempDir())
	sw := startDaemon(t, cfg)

	const token = "c0ffee11c0ffee22c0ffee33c0ffee44c0ffee55c0ffee66c0ffee77c0ffee88"
	lp := testpeers.StartLinphone(t, testpeers.LinphoneOptions{
		User:       "1003",
		Proxy:      sw.TLS,
		Transport:  "tls",
		TLSCA:      cfg.SIP.TLS.CertFile,
		PushParams: "pn-provider=apns;pn-prid=" + token + ";pn-param=TEAM123456.org.example.phone.voip",
	})
	if err := lp.WaitRegistered(clientWait); err != nil {
		t.Fatalf("linphone over TLS: %v\n%s", err, lp.LogTail())
	}
	b := sw.waitBindings(t, "sip:1003@pbx.test", 1, e2eWait)[0]
	if b.Transport != "tls" {
		t.Errorf("binding transport %q, want tls", b.Transport)
	}
	if b.Push == nil || b.Push.Provider != "apns" || b.Push.Token != token || b.Push.Param != "TEAM123456.org.example.phone.voip" {
		t.Errorf("stored push target %+v", b.Push)
	}
	if strings.Contains(b.Contact, "pn-") {
		t.Errorf("stored device contact keeps push parameters: %s", b.Contact)
	}
	cs := kam.WaitContacts(t, "1003", 1, e2eWait)
	assertSipwakeContact(t, cs[0], sw, b, "")
	if strings.Contains(cs[0].URI, "transport=tls") {
		t.Errorf("PBX contact %q: the PBX reaches sipwake over its own (UDP) leg", cs[0].URI)
	}
	assertNoPushAtPBX(t, kam)
}

// TestE2EClientBaresipCalls: baresip, registered through sipwake, places a
// call to a SIPp user registered at the PBX and hangs up; then a PBX user
// (SIPp) calls baresip through sipwake, baresip rings, answers, and the
// caller (challenged by the PBX) re-INVITEs and hangs up. Both calls get established and end.
func TestE2EClientBaresipCalls(t *testing.T) {
	testpeers.Require(t, "baresip", "sipp")
	kam := startPBX(t, testpeers.KamailioOptions{})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))

	bs := testpeers.StartBaresip(t, testpeers.BaresipOptions{
		User:      "1001",
		Proxy:     sw.UDP,
		Transport: "udp",
	})
	if err := bs.WaitRegistered(clientWait); err != nil {
		t.Fatalf("baresip through sipwake: %v\n%s", err, bs.LogTail())
	}
	b := sw.waitBindings(t, "sip:1001@pbx.test", 1, e2eWait)[0]
	cs := kam.WaitContacts(t, "1001", 1, e2eWait)
	assertSipwakeContact(t, cs[0], sw, b, bs.SIPAddr)

	t.Run("baresip calls pbx user", func(t *testing.T) {
		callee := startUAS(t, "uas_answer.xml", "1002", pbxUser(t, kam, "1002"))
		if err := bs.Dial("sip:1002@pbx.test"); err != nil {
			t.Fatal(err)
		}
		if _, err := bs.WaitEvent("CALL_ESTABLISHED", clientWait); err != nil {
			t.Fatalf("call not established: %v\n%s", err, bs.LogTail())
		}
		time.Sleep(200 * time.Millisecond)
		if err := bs.Hangup(); err != nil {
			t.Fatal(err)
		}
		if _, err := bs.WaitEvent("CALL_CLOSED", clientWait); err != nil {
			t.Fatalf("call not closed: %v", err)
		}
		uas := waitSIPp(t, "PBX user 1002 answers baresip", callee)
		expectLines(t, "PBX user (callee)", uas.Messages, "INVITE sip:1002@", "ACK sip:", "BYE sip:")
		if !headerHas(uas.Messages, "Record-Route:", sw.UDP) {
			t.Errorf("baresip's INVITE does not record-route through sipwake %s", sw.UDP)
		}
	})

	t.Run("pbx user calls baresip", func(t *testing.T) {
		kam.RemoveContacts(t, "1002")
		caller := pbxUser(t, kam, "1002")
		s, err := testpeers.StartSIPp(t, e2eCtx(t, 25*time.Second), testpeers.SIPpOptions{
			Scenario:  "uac_call.xml",
			Remote:    kam.UDPAddr,
			LocalPort: caller,
			Auth:      [2]string{"1002", "pw1002"},
			Keys:      testpeers.CallKeys("1002", "1001", "pbx.test"),
			Pause:     500 * time.Millisecond,
			Timeout:   20 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		// baresip rings (180), then answers when told to.
		if _, err := bs.WaitEvent("CALL_INCOMING", clientWait); err != nil {
			t.Fatalf("baresip saw no incoming call: %v\n%s", err, bs.LogTail())
		}
		time.Sleep(200 * time.Millisecond)
		if err := bs.Accept(); err != nil {
			t.Fatal(err)
		}
		if _, err := bs.WaitEvent("CALL_ESTABLISHED", clientWait); err != nil {
			t.Errorf("baresip: call not established: %v", err)
		}
		res := waitSIPp(t, "PBX user 1002 calls baresip and hangs up", s)
		checkCallerTrace(t, "PBX user (caller)", res.Messages)
		if _, err := bs.WaitEvent("CALL_CLOSED", clientWait); err != nil {
			t.Errorf("baresip: the caller's BYE did not arrive: %v", err)
		}
	})
}

// TestE2EClientLinphoneCalls: linphone registered through sipwake (TCP)
// receives a call from baresip registered directly at the PBX, answers it,
// and hangs up; then places one to baresip, which answers, and hangs up.
func TestE2EClientLinphoneCalls(t *testing.T) {
	testpeers.Require(t, "linphone-daemon", "baresip")
	kam := startPBX(t, testpeers.KamailioOptions{})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))

	lp := testpeers.StartLinphone(t, testpeers.LinphoneOptions{
		User:       "1003",
		Proxy:      sw.TCP,
		Transport:  "tcp",
		PushParams: "pn-provider=fcm;pn-prid=fcmtok-linphone-0001;pn-param=sipwake-e2e",
	})
	bs := testpeers.StartBaresip(t, testpeers.BaresipOptions{
		User:       "1002",
		Proxy:      kam.UDPAddr,
		AutoAnswer: true,
	})
	if err := lp.WaitRegistered(clientWait); err != nil {
		t.Fatalf("linphone through sipwake: %v\n%s", err, lp.LogTail())
	}
	if err := bs.WaitRegistered(clientWait); err != nil {
		t.Fatalf("baresip at the PBX: %v\n%s", err, bs.LogTail())
	}
	b := sw.waitBindings(t, "sip:1003@pbx.test", 1, e2eWait)[0]
	if b.Transport != "tcp" || b.Push == nil || b.Push.Provider != "fcm" {
		t.Errorf("linphone binding %+v push %+v", b, b.Push)
	}

	t.Run("pbx user calls linphone", func(t *testing.T) {
		if err := bs.Dial("sip:1003@pbx.test"); err != nil {
			t.Fatal(err)
		}
		ev, err := lp.WaitEvent("LinphoneCallIncomingReceived", clientWait)
		if err != nil {
			t.Fatalf("linphone got no call: %v\n%s", err, lp.LogTail())
		}
		id := ev.Fields["Id"]
		if err := lp.Answer(id); err != nil {
			t.Fatalf("answer %q: %v", id, err)
		}
		if _, err := lp.WaitEvent("LinphoneCallConnected", clientWait); err != nil {
			t.Fatalf("linphone: call not connected: %v\n%s", err, lp.LogTail())
		}
		if _, err := bs.WaitEvent("CALL_ESTABLISHED", clientWait); err != nil {
			t.Fatalf("baresip: call not established: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
		if err := lp.Terminate(); err != nil {
			t.Fatal(err)
		}
		if _, err := lp.WaitEvent("LinphoneCallEnd", clientWait); err != nil {
			t.Errorf("linphone: call did not end: %v", err)
		}
		if _, err := bs.WaitEvent("CALL_CLOSED", clientWait); err != nil {
			t.Errorf("baresip: BYE from linphone did not arrive: %v", err)
		}
	})

	t.Run("linphone calls pbx user", func(t *testing.T) {
		if _, err := lp.Call("sip:1002@pbx.test"); err != nil {
			t.Fatal(err)
		}
		if _, err := lp.WaitEvent("LinphoneCallConnected", clientWait); err != nil {
			t.Fatalf("linphone: call not connected: %v\n%s", err, lp.LogTail())
		}
		if _, err := bs.WaitEvent("CALL_ESTABLISHED", clientWait); err != nil {
			t.Fatalf("baresip: call not established: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
		if err := bs.Hangup(); err != nil {
			t.Fatal(err)
		}
		if _, err := lp.WaitEvent("LinphoneCallEnd", clientWait); err != nil {
			t.Errorf("linphone: BYE from baresip did not arrive: %v\n%s", err, lp.LogTail())
		}
	})
}
