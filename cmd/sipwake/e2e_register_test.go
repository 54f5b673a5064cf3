package main

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/store"
)

// e2eWait bounds the waits for a registration to show up in sipwake's store
// or at the PBX.
const e2eWait = 5 * time.Second

// e2eCtx is a context for one end-to-end step, ended with the test.
func e2eCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// sippScenario returns the absolute path of one of our own scenarios in
// testdata/sipp (SIPp runs in its own directory, so a relative path would
// not resolve there).
func sippScenario(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "sipp", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sippMust fails the test with SIPp's traces when a run did not succeed.
func sippMust(t testing.TB, what string, res testpeers.SIPpResult, err error) testpeers.SIPpResult {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v\n--- messages ---\n%s\n--- errors ---\n%s", what, err, tail(res.Messages, 120), tail(res.Errors, 30))
	}
	return res
}

// sippRegister registers user through addr (sipwake or the PBX) with
// register.xml from port (0: a free one) and returns the result.
func sippRegister(t testing.TB, addr, transport, user string, port int, keys map[string]string) testpeers.SIPpResult {
	t.Helper()
	res, err := testpeers.RunSIPp(t, e2eCtx(t, 15*time.Second), testpeers.SIPpOptions{
		Scenario:  "register.xml",
		Remote:    addr,
		Transport: transport,
		LocalPort: port,
		Auth:      [2]string{user, testpeers.DefaultUsers[user]},
		Keys:      keys,
		Timeout:   10 * time.Second,
	})
	return sippMust(t, "register "+user+" via "+addr, res, err)
}

// assertNoPushAtPBX checks that nothing the PBX keeps mentions a push
// parameter.
func assertNoPushAtPBX(t testing.TB, kam *testpeers.Kamailio) {
	t.Helper()
	dump := kam.RPC(t, "ul.dump")
	if strings.Contains(strings.ToLower(dump), "pn-") {
		t.Errorf("ul.dump carries push parameters:\n%s", dump)
	}
}

// assertSipwakeContact checks that a PBX contact is sipwake's contact for
// binding b (its token at sipwake's address), not the device's.
func assertSipwakeContact(t testing.TB, c testpeers.Contact, sw *running, b store.Binding, device string) {
	t.Helper()
	want := "sip:" + b.Token + "@" + sw.UDP
	if !strings.HasPrefix(c.URI, want) {
		t.Errorf("PBX contact %q, want sipwake's %q...", c.URI, want)
	}
	if device != "" && strings.Contains(c.URI, device) {
		t.Errorf("PBX contact %q names the device's address %s", c.URI, device)
	}
	if c.Path == "" || !strings.Contains(c.Path, sw.UDP) {
		t.Errorf("PBX contact path %q does not route through sipwake %s", c.Path, sw.UDP)
	}
}

// TestE2ERegister: a SIPp device registers through sipwake with digest auth
// and RFC 8599 push parameters over UDP and over TCP. The PBX keeps
// sipwake's contact (no pn- anywhere), sipwake's store keeps the binding
// with its push target and transport; a wrong password stores nothing
// anywhere.
func TestE2ERegister(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))

	for _, tc := range []struct {
		name, user, transport, ctransport, addr string
	}{
		{"udp", "1001", "u1", "udp", sw.UDP},
		{"tcp", "1002", "t1", "tcp", sw.TCP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aor := "sip:" + tc.user + "@pbx.test"
			keys := testpeers.RegisterKeys(tc.user, "pbx.test", tc.ctransport)
			keys["pn_prid"] = "0badc0ffee" + tc.name + "00fc13adff785122b4ad28809a34209823412414"
			keys["expires"] = "600"
			var res testpeers.SIPpResult
			var port int
			if tc.transport == "t1" {
				// Over TCP the device keeps its connection open after the
				// 200 (register_wait.xml), as a phone does; it is stopped
				// once the binding has been checked.
				s, err := testpeers.StartSIPp(t, e2eCtx(t, 20*time.Second), testpeers.SIPpOptions{
					Scenario: "register_wait.xml", OOCScenario: "ooc_answer.xml",
					Remote: tc.addr, Transport: "t1",
					Auth: [2]string{tc.user, testpeers.DefaultUsers[tc.user]},
					Keys: keys, Timeout: 15 * time.Second,
				})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.WaitMessage("SIP/2.0 200 OK", e2eWait); err != nil {
					t.Fatalf("%v\n%s", err, s.Messages())
				}
				port = s.LocalPort
				t.Cleanup(func() { s.Stop() })
				res.Messages = s.Messages()
			} else {
				res = sippRegister(t, tc.addr, tc.transport, tc.user, 0, keys)
				port = res.LocalPort
			}
			device := "127.0.0.1:" + strconv.Itoa(port)
			// The PBX challenged the device (401 came back through sipwake),
			// and the device's 200 lists its own Contact, push params and all.
			if !strings.Contains(res.Messages, "SIP/2.0 401") {
				t.Errorf("device saw no digest challenge:\n%s", res.Messages)
			}
			if !strings.Contains(res.Messages, "pn-prid="+keys["pn_prid"]) {
				t.Errorf("device trace lacks its push token")
			}

			bs := sw.waitBindings(t, aor, 1, e2eWait)
			b := bs[0]
			if b.Push == nil || b.Push.Provider != "apns" || b.Push.Token != keys["pn_prid"] || b.Push.Param != keys["pn_param"] {
				t.Errorf("stored push target %+v, want apns/%s/%s", b.Push, keys["pn_prid"], keys["pn_param"])
			}
			if b.Transport != tc.ctransport {
				t.Errorf("stored transport %q, want %q", b.Transport, tc.ctransport)
			}
			if tc.transport == "u1" && b.Source != device {
				t.Errorf("stored source %q, want %q", b.Source, device)
			}
			if !strings.HasPrefix(b.Source, "127.0.0.1:") {
				t.Errorf("stored source %q", b.Source)
			}
			if strings.Contains(b.Contact, "pn-") || !strings.Contains(b.Contact, device) {
				t.Errorf("stored device contact %q (want the device's %s without push params)", b.Contact, device)
			}
			if b.Token == "" {
				t.Fatalf("binding without a sipwake token: %+v", b)
			}

			cs := kam.WaitContacts(t, tc.user, 1, e2eWait)
			assertSipwakeContact(t, cs[0], sw, b, device)
			for _, c := range kam.Contacts(t, tc.user) {
				if strings.Contains(c, "pn-") {
					t.Errorf("PBX contact carries push parameters: %s", c)
				}
			}
			assertNoPushAtPBX(t, kam)
			if testing.Verbose() {
				t.Logf("binding %+v\nPBX contacts %+v", b, cs)
			}
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		keys := testpeers.RegisterKeys("1003", "pbx.test", "udp")
		res, err := testpeers.RunSIPp(t, e2eCtx(t, 15*time.Second), testpeers.SIPpOptions{
			Scenario: "register.xml",
			Remote:   sw.UDP,
			Auth:     [2]string{"1003", "not-the-password"},
			Keys:     keys,
			Timeout:  8 * time.Second,
		})
		if err == nil {
			t.Fatalf("register with a wrong password succeeded:\n%s", res.Messages)
		}
		// The second REGISTER is challenged again, never accepted.
		if strings.Count(res.Messages, "SIP/2.0 401") < 2 || strings.Contains(res.Messages, "SIP/2.0 200") {
			t.Errorf("want two 401s and no 200:\n%s", res.Messages)
		}
		time.Sleep(300 * time.Millisecond)
		if bs := sw.bindings(t, "sip:1003@pbx.test"); len(bs) != 0 {
			t.Errorf("binding stored after a failed registration: %+v", bs)
		}
		if cs := kam.Contacts(t, "1003"); len(cs) != 0 {
			t.Errorf("PBX has contacts after a failed registration: %v", cs)
		}
		if strings.Contains(sw.logs.String(), keys["pn_prid"]) {
			t.Errorf("sipwake logged the push token in full")
		}
	})
}

// TestE2EBindings: one binding per device. A device that re-registers from
// a new source port with a new push token (same +sip.instance) keeps one
// binding, updated, and one contact at the PBX; a second device of the same
// AOR adds one; a de-registration (Expires: 0) removes the device's binding
// and its contact at the PBX.
func TestE2EBindings(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))
	const (
		user  = "1001"
		aor   = "sip:1001@pbx.test"
		inst1 = `"<urn:uuid:6f1e2d3c-0000-4000-8000-00000000a001>"`
		inst2 = `"<urn:uuid:6f1e2d3c-0000-4000-8000-00000000b002>"`
	)
	keys := func(token, inst string) map[string]string {
		k := testpeers.RegisterKeys(user, "pbx.test", "udp")
		k["expires"] = "600"
		k["pn_prid"] = token
		k["hparams"] = ";+sip.instance=" + inst
		return k
	}

	// Device A registers.
	first := sippRegister(t, sw.UDP, "u1", user, 0, keys("aaaa0001firsttoken", inst1))
	b1 := sw.waitBindings(t, aor, 1, e2eWait)[0]
	if b1.SIPInstance != strings.Trim(inst1, `"<>`) {
		t.Errorf("stored instance %q, want %s", b1.SIPInstance, inst1)
	}
	kam.WaitContacts(t, user, 1, e2eWait)

	// Device A again: new socket (new port, new Call-ID), new push token.
	k2 := keys("aaaa0002secondtoken", inst1)
	second := sippRegister(t, sw.UDP, "u1", user, 0, k2)
	if second.LocalPort == first.LocalPort {
		t.Fatalf("the re-registration reused port %d", first.LocalPort)
	}
	newSrc := "127.0.0.1:" + strconv.Itoa(second.LocalPort)
	deadline := time.Now().Add(e2eWait)
	var bs []store.Binding
	for {
		bs = sw.bindings(t, aor)
		if len(bs) == 1 && bs[0].Source == newSrc {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the re-registration from %s: %+v", newSrc, bs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b1n := bs[0]
	if b1n.Push == nil || b1n.Push.Token != "aaaa0002secondtoken" {
		t.Errorf("push target after the re-registration %+v, want the new token", b1n.Push)
	}
	if !strings.Contains(b1n.Contact, newSrc) {
		t.Errorf("device contact %q, want the new address %s", b1n.Contact, newSrc)
	}
	if b1n.Token != b1.Token {
		t.Errorf("sipwake contact token changed on re-registration: %s -> %s (the PBX would see two contacts)", b1.Token, b1n.Token)
	}
	cs := kam.WaitContacts(t, user, 1, e2eWait)
	assertSipwakeContact(t, cs[0], sw, b1n, newSrc)

	// Device B (another instance) for the same AOR.
	third := sippRegister(t, sw.UDP, "u1", user, 0, keys("bbbb0001othertoken", inst2))
	bs = sw.waitBindings(t, aor, 2, e2eWait)
	cs = kam.WaitContacts(t, user, 2, e2eWait)
	tokens := map[string]bool{}
	for _, b := range bs {
		tokens[b.Token] = true
	}
	if len(tokens) != 2 {
		t.Errorf("two devices share a sipwake token: %+v", bs)
	}
	for _, c := range cs {
		u := strings.TrimPrefix(c.URI, "sip:")
		tok, _, _ := strings.Cut(u, "@")
		if !tokens[tok] {
			t.Errorf("PBX contact %q is not one of sipwake's binding contacts", c.URI)
		}
	}
	assertNoPushAtPBX(t, kam)

	// Device A de-registers (Expires: 0, its Contact as registered).
	contactA := "<sip:" + user + "@" + newSrc + ";transport=udp;pn-provider=apns;pn-prid=aaaa0002secondtoken;pn-param=" +
		k2["pn_param"] + ">;+sip.instance=" + inst1
	res, err := testpeers.RunSIPp(t, e2eCtx(t, 15*time.Second), testpeers.SIPpOptions{
		Scenario:  "unregister.xml",
		Remote:    sw.UDP,
		LocalPort: second.LocalPort,
		Auth:      [2]string{user, testpeers.DefaultUsers[user]},
		Keys:      testpeers.UnregisterKeys(user, "pbx.test", contactA),
		Timeout:   10 * time.Second,
	})
	sippMust(t, "unregister", res, err)
	bs = sw.waitBindings(t, aor, 1, e2eWait)
	if bs[0].SIPInstance != strings.Trim(inst2, `"<>`) || bs[0].Push == nil || bs[0].Push.Token != "bbbb0001othertoken" {
		t.Errorf("the wrong binding was removed; left: %+v", bs[0])
	}
	cs = kam.WaitContacts(t, user, 1, e2eWait)
	assertSipwakeContact(t, cs[0], sw, bs[0], "127.0.0.1:"+strconv.Itoa(third.LocalPort))
}
