package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
)

// callHold is the hold time of uac_call.xml (used twice) and the ringing
// time of the answering scenarios.
const callHold = 300 * time.Millisecond

// pbxUser registers user directly at the PBX over UDP (no push
// parameters) from a free port and returns that port, on which a UAS
// scenario then answers.
func pbxUser(t testing.TB, kam *testpeers.Kamailio, user string) int {
	t.Helper()
	res, err := testpeers.RunSIPp(t, e2eCtx(t, 15*time.Second), testpeers.SIPpOptions{
		Scenario: "register_plain.xml",
		Remote:   kam.UDPAddr,
		Auth:     [2]string{user, testpeers.DefaultUsers[user]},
		Keys:     testpeers.PlainRegisterKeys(user, kam.Domain, "udp"),
		Timeout:  10 * time.Second,
	})
	sippMust(t, "PBX user "+user+" registers at the PBX", res, err)
	kam.WaitContacts(t, user, 1, e2eWait)
	return res.LocalPort
}

// startUAS starts a UAS scenario for user on port.
func startUAS(t testing.TB, scenario, user string, port int) *testpeers.SIPp {
	t.Helper()
	s, err := testpeers.StartSIPp(t, e2eCtx(t, 30*time.Second), testpeers.SIPpOptions{
		Scenario:  scenario,
		LocalPort: port,
		Keys:      map[string]string{"me": user},
		Pause:     callHold,
		Timeout:   20 * time.Second,
	})
	if err != nil {
		t.Fatalf("%s for %s: %v", scenario, user, err)
	}
	return s
}

// waitSIPp waits for a started SIPp and fails the test with its trace
// unless it succeeded.
func waitSIPp(t testing.TB, what string, s *testpeers.SIPp) testpeers.SIPpResult {
	t.Helper()
	res, err := s.Wait()
	return sippMust(t, what, res, err)
}

// startLines returns the request lines and status lines of a SIPp message
// trace, in order ("INVITE sip:...", "SIP/2.0 407 ..."), for assertions
// and readable failures.
func startLines(trace string) []string {
	var out []string
	prevBlank := true
	for _, l := range strings.Split(trace, "\n") {
		l = strings.TrimRight(l, "\r")
		if prevBlank && (strings.HasPrefix(l, "SIP/2.0 ") || strings.Contains(l, " SIP/2.0")) {
			out = append(out, l)
		}
		prevBlank = strings.TrimSpace(l) == "" || strings.HasPrefix(l, "----")
	}
	return out
}

// hasLine reports whether one start line of trace begins with prefix.
func hasLine(trace, prefix string) bool {
	for _, l := range startLines(trace) {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// expectLines checks that each prefix begins some start line of trace.
func expectLines(t testing.TB, who, trace string, prefixes ...string) {
	t.Helper()
	for _, p := range prefixes {
		if !hasLine(trace, p) {
			t.Errorf("%s: no %q in the trace; saw:\n  %s", who, p, strings.Join(startLines(trace), "\n  "))
		}
	}
}

// headerHas reports whether a header line of trace starting with name
// contains substr.
func headerHas(trace, name, substr string) bool {
	for _, l := range strings.Split(trace, "\n") {
		if strings.HasPrefix(l, name) && strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

// tcpWatch records, until stopped, the remote ends of every established
// TCP connection whose local end is 127.0.0.1:port (from /proc/net/tcp):
// a device that must be reached over its own connection has exactly one.
type tcpWatch struct {
	port int
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen map[string]bool
}

func watchTCP(t testing.TB, port int) *tcpWatch {
	t.Helper()
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp to tell connections apart")
	}
	w := &tcpWatch{port: port, stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			w.sample()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.Stop)
	return w
}

func (w *tcpWatch) sample() {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || fs[3] != "01" { // 01 = ESTABLISHED
			continue
		}
		local, ok1 := procAddr(fs[1])
		remote, ok2 := procAddr(fs[2])
		if !ok1 || !ok2 || local != "127.0.0.1:"+strconv.Itoa(w.port) {
			continue
		}
		w.mu.Lock()
		w.seen[remote] = true
		w.mu.Unlock()
	}
}

// Stop ends the watch and returns the remote addresses seen, sorted.
func (w *tcpWatch) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *tcpWatch) Seen() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for a := range w.seen {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// procAddr decodes "0100007F:1F90" (IPv4 little-endian, port big-endian).
func procAddr(s string) (string, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || len(h) != 8 {
		return "", false
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return "", false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return "", false
	}
	return net.JoinHostPort(net.IPv4(b[3], b[2], b[1], b[0]).String(), strconv.Itoa(int(port))), true
}

// assertOneFlow checks that the device on port only ever had its own
// connection to sipwake's TCP listener.
func assertOneFlow(t testing.TB, w *tcpWatch, sw *running) {
	t.Helper()
	w.Stop()
	seen := w.Seen()
	if len(seen) != 1 || seen[0] != sw.TCP {
		t.Errorf("device 127.0.0.1:%d had TCP connections with %v, want only its own to sipwake %s", w.port, seen, sw.TCP)
	}
}

// TestE2ECall: calls both ways between a device registered through sipwake
// and a PBX user registered directly at Kamailio, over UDP and with the
// device on TCP (the PBX leg stays UDP). The caller is challenged by the
// PBX (407), then 180, 200, ACK, an in-dialog re-INVITE and a BYE reach
// the other side.
func TestE2ECall(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))

	t.Run("udp/device calls pbx user", func(t *testing.T) {
		dev := sippRegister(t, sw.UDP, "u1", "1001", 0, testpeers.RegisterKeys("1001", "pbx.test", "udp"))
		sw.waitBindings(t, "sip:1001@pbx.test", 1, e2eWait)
		callee := startUAS(t, "uas_answer.xml", "1002", pbxUser(t, kam, "1002"))

		res, err := testpeers.RunSIPp(t, e2eCtx(t, 20*time.Second), testpeers.SIPpOptions{
			Scenario:  "uac_call.xml",
			Remote:    sw.UDP,
			LocalPort: dev.LocalPort,
			Auth:      [2]string{"1001", "pw1001"},
			Keys:      testpeers.CallKeys("1001", "1002", "pbx.test"),
			Pause:     callHold,
			Timeout:   15 * time.Second,
		})
		sippMust(t, "device 1001 calls 1002", res, err)
		uas := waitSIPp(t, "PBX user 1002 answers", callee)
		checkCallerTrace(t, "device (caller)", res.Messages)
		checkCalleeTrace(t, "PBX user (callee)", uas.Messages, "sip:1002@")
		if !headerHas(uas.Messages, "Record-Route:", sw.UDP) {
			t.Errorf("the INVITE at the PBX user does not record-route through sipwake %s:\n%s", sw.UDP, uas.Messages)
		}
	})

	t.Run("udp/pbx user calls device", func(t *testing.T) {
		keys := testpeers.RegisterKeys("1001", "pbx.test", "udp")
		dev := sippRegister(t, sw.UDP, "u1", "1001", 0, keys)
		sw.waitBindings(t, "sip:1001@pbx.test", 1, e2eWait)
		kam.RemoveContacts(t, "1002")
		callee := startUAS(t, "uas_answer.xml", "1001", dev.LocalPort)

		caller := pbxUser(t, kam, "1002")
		res, err := testpeers.RunSIPp(t, e2eCtx(t, 20*time.Second), testpeers.SIPpOptions{
			Scenario:  "uac_call.xml",
			Remote:    kam.UDPAddr,
			LocalPort: caller,
			Auth:      [2]string{"1002", "pw1002"},
			Keys:      testpeers.CallKeys("1002", "1001", "pbx.test"),
			Pause:     callHold,
			Timeout:   15 * time.Second,
		})
		sippMust(t, "PBX user 1002 calls 1001", res, err)
		uas := waitSIPp(t, "device 1001 answers", callee)
		checkCallerTrace(t, "PBX user (caller)", res.Messages)
		own := fmt.Sprintf("sip:1001@127.0.0.1:%d;transport=udp", dev.LocalPort)
		checkCalleeTrace(t, "device (callee)", uas.Messages, own+" ")
	})

	t.Run("tcp/device calls pbx user", func(t *testing.T) {
		kam.RemoveContacts(t, "1001", "1002")
		callee := startUAS(t, "uas_answer.xml", "1002", pbxUser(t, kam, "1002"))
		keys := testpeers.RegisterKeys("1001", "pbx.test", "tcp")
		keys["peer"] = "1002"
		port := testpeers.FreePort(t, "udp+tcp")
		w := watchTCP(t, port)
		res, err := testpeers.RunSIPp(t, e2eCtx(t, 20*time.Second), testpeers.SIPpOptions{
			Scenario:  sippScenario(t, "register_call.xml"),
			Remote:    sw.TCP,
			Transport: "t1",
			LocalPort: port,
			Auth:      [2]string{"1001", "pw1001"},
			Keys:      keys,
			Pause:     callHold,
			Timeout:   15 * time.Second,
		})
		sippMust(t, "device 1001 (tcp) registers and calls 1002", res, err)
		uas := waitSIPp(t, "PBX user 1002 answers", callee)
		assertOneFlow(t, w, sw)
		expectLines(t, "device (caller)", res.Messages, "SIP/2.0 401", "SIP/2.0 200 OK")
		checkCallerTrace(t, "device (caller)", res.Messages)
		checkCalleeTrace(t, "PBX user (callee)", uas.Messages, "sip:1002@")
		b := sw.waitBindings(t, "sip:1001@pbx.test", 1, e2eWait)[0]
		if b.Transport != "tcp" {
			t.Errorf("binding transport %q, want tcp", b.Transport)
		}
	})

	t.Run("tcp/pbx user calls device", func(t *testing.T) {
		kam.RemoveContacts(t, "1001", "1002")
		keys := testpeers.RegisterKeys("1001", "pbx.test", "tcp")
		port := testpeers.FreePort(t, "udp+tcp")
		w := watchTCP(t, port)
		dev, err := testpeers.StartSIPp(t, e2eCtx(t, 30*time.Second), testpeers.SIPpOptions{
			Scenario:    "register_wait.xml",
			OOCScenario: "ooc_answer.xml",
			Remote:      sw.TCP,
			Transport:   "t1",
			LocalPort:   port,
			Auth:        [2]string{"1001", "pw1001"},
			Keys:        keys,
			Timeout:     20 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := dev.WaitMessage("SIP/2.0 200 OK", e2eWait); err != nil {
			t.Fatalf("device registration over TCP: %v\n%s", err, dev.Messages())
		}
		b := sw.waitBindings(t, "sip:1001@pbx.test", 1, e2eWait)[0]
		if b.Transport != "tcp" {
			t.Errorf("binding transport %q, want tcp", b.Transport)
		}
		kam.WaitContacts(t, "1001", 1, e2eWait)

		caller := pbxUser(t, kam, "1002")
		res, err := testpeers.RunSIPp(t, e2eCtx(t, 20*time.Second), testpeers.SIPpOptions{
			Scenario:  "uac_call.xml",
			Remote:    kam.UDPAddr,
			LocalPort: caller,
			Auth:      [2]string{"1002", "pw1002"},
			Keys:      testpeers.CallKeys("1002", "1001", "pbx.test"),
			Pause:     callHold,
			Timeout:   15 * time.Second,
		})
		sippMust(t, "PBX user 1002 calls 1001 (tcp)", res, err)
		uas := waitSIPp(t, "device 1001 (tcp) answers on its connection", dev)
		assertOneFlow(t, w, sw)
		checkCallerTrace(t, "PBX user (caller)", res.Messages)
		own := fmt.Sprintf("sip:1001@127.0.0.1:%d;transport=tcp", port)
		checkCalleeTrace(t, "device (callee)", uas.Messages, own+" ")
		if !strings.Contains(uas.Log, "INVITE ruri="+own) {
			t.Errorf("device log: %q, want the INVITE for %s", uas.Log, own)
		}
	})
}

// checkCallerTrace: the caller was challenged by the PBX, heard ringing,
// got the answer, and its re-INVITE and BYE were answered.
func checkCallerTrace(t testing.TB, who, trace string) {
	t.Helper()
	expectLines(t, who, trace, "INVITE sip:", "SIP/2.0 407", "ACK sip:", "SIP/2.0 180", "SIP/2.0 200", "BYE sip:")
	if !strings.Contains(trace, "CSeq: 10 INVITE") {
		t.Errorf("%s: no re-INVITE in the trace", who)
	}
	if strings.Count(trace, "SIP/2.0 200") < 3 { // INVITE, re-INVITE, BYE
		t.Errorf("%s: want 200s for the INVITE, the re-INVITE and the BYE; saw:\n  %s", who, strings.Join(startLines(trace), "\n  "))
	}
}

// checkCalleeTrace: the callee got the INVITE for ruriPrefix, the ACK, the
// re-INVITE and the BYE, and not the unauthenticated first INVITE.
func checkCalleeTrace(t testing.TB, who, trace, ruriPrefix string) {
	t.Helper()
	expectLines(t, who, trace, "INVITE "+ruriPrefix, "ACK sip:", "BYE sip:")
	if strings.Count(trace, "CSeq: 10 INVITE") < 2 { // received + answered
		t.Errorf("%s: the re-INVITE did not arrive", who)
	}
	if strings.Contains(trace, "CSeq: 1 INVITE") {
		t.Errorf("%s: received the INVITE the PBX had challenged", who)
	}
}

// TestE2ECallCancel: a CANCEL before the answer ends the call attempt in
// 487, whichever side calls.
func TestE2ECallCancel(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))

	t.Run("device cancels its call to a pbx user", func(t *testing.T) {
		dev := sippRegister(t, sw.UDP, "u1", "1001", 0, testpeers.RegisterKeys("1001", "pbx.test", "udp"))
		sw.waitBindings(t, "sip:1001@pbx.test", 1, e2eWait)
		callee := startUAS(t, "uas_ring.xml", "1002", pbxUser(t, kam, "1002"))
		res, err := testpeers.RunSIPp(t, e2eCtx(t, 20*time.Second), testpeers.SIPpOptions{
			Scenario:  sippScenario(t, "uac_cancel_auth.xml"),
			Remote:    sw.UDP,
			LocalPort: dev.LocalPort,
			Auth:      [2]string{"1001", "pw1001"},
			Keys:      testpeers.CallKeys("1001", "1002", "pbx.test"),
			Pause:     500 * time.Millisecond,
			Timeout:   15 * time.Second,
		})
		sippMust(t, "device 1001 calls 1002 and cancels", res, err)
		uas := waitSIPp(t, "PBX user 1002 rings until cancelled", callee)
		expectLines(t, "device (caller)", res.Messages, "SIP/2.0 407", "SIP/2.0 180", "CANCEL sip:", "SIP/2.0 487")
		expectLines(t, "PBX user (callee)", uas.Messages, "INVITE sip:1002@", "CANCEL sip:", "ACK sip:")
	})

	t.Run("pbx user cancels its call to the device", func(t *testing.T) {
		kam.RemoveContacts(t, "1001", "1002")
		dev := sippRegister(t, sw.UDP, "u1", "1001", 0, testpeers.RegisterKeys("1001", "pbx.test", "udp"))
		sw.waitBindings(t, "sip:1001@pbx.test", 1, e2eWait)
		callee := startUAS(t, "uas_ring.xml", "1001", dev.LocalPort)
		caller := pbxUser(t, kam, "1002")
		res, err := testpeers.RunSIPp(t, e2eCtx(t, 20*time.Second), testpeers.SIPpOptions{
			Scenario:  sippScenario(t, "uac_cancel_auth.xml"),
			Remote:    kam.UDPAddr,
			LocalPort: caller,
			Auth:      [2]string{"1002", "pw1002"},
			Keys:      testpeers.CallKeys("1002", "1001", "pbx.test"),
			Pause:     500 * time.Millisecond,
			Timeout:   15 * time.Second,
		})
		sippMust(t, "PBX user 1002 calls 1001 and cancels", res, err)
		uas := waitSIPp(t, "device 1001 rings until cancelled", callee)
		own := fmt.Sprintf("sip:1001@127.0.0.1:%d;transport=udp", dev.LocalPort)
		expectLines(t, "PBX user (caller)", res.Messages, "SIP/2.0 407", "SIP/2.0 180", "CANCEL sip:", "SIP/2.0 487")
		expectLines(t, "device (callee)", uas.Messages, "INVITE "+own+" ", "CANCEL "+own+" ", "ACK "+own+" ")
	})
}

// TestE2EMessage: the PBX routes a MESSAGE from one of its users to a
// device registered through sipwake over UDP; the device receives it.
func TestE2EMessage(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))
	dev := sippRegister(t, sw.UDP, "u1", "1001", 0, testpeers.RegisterKeys("1001", "pbx.test", "udp"))
	sw.waitBindings(t, "sip:1001@pbx.test", 1, e2eWait)
	kam.WaitContacts(t, "1001", 1, e2eWait)
	rcv, err := testpeers.StartSIPp(t, e2eCtx(t, 20*time.Second), testpeers.SIPpOptions{
		Scenario:  "uas_message.xml",
		LocalPort: dev.LocalPort,
		Timeout:   15 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	const text = "hello device, via the PBX and sipwake"
	keys := testpeers.CallKeys("1002", "1001", "pbx.test")
	keys["text"] = text
	res, err := testpeers.RunSIPp(t, e2eCtx(t, 15*time.Second), testpeers.SIPpOptions{
		Scenario: "message.xml",
		Remote:   kam.UDPAddr,
		Auth:     [2]string{"1002", "pw1002"},
		Keys:     keys,
		Timeout:  10 * time.Second,
	})
	sippMust(t, "PBX user 1002 sends a MESSAGE to 1001", res, err)
	got := waitSIPp(t, "device 1001 receives the MESSAGE", rcv)
	own := fmt.Sprintf("sip:1001@127.0.0.1:%d;transport=udp", dev.LocalPort)
	expectLines(t, "device", got.Messages, "MESSAGE "+own+" ")
	if !strings.Contains(got.Log, "body="+text) || !strings.Contains(got.Log, "sip:1002@pbx.test") {
		t.Errorf("device log %q, want the text from 1002", got.Log)
	}
	expectLines(t, "sender", res.Messages, "SIP/2.0 200")
}

// TestE2ECallProvisionalOrder: a device that answers at once sends 180 and
// 200 back to back; the PBX caller must get the 180 before the 200 every
// time (RFC 3261 §16.7: a proxy forwards provisional responses as they
// come, and none after the final one). The device is a raw UA so that the
// two responses leave within microseconds, as from an auto-answering phone;
// Kamailio runs one UDP worker so that the PBX itself cannot reorder them.
func TestE2ECallProvisionalOrder(t *testing.T) {
	const calls = 20
	kam := startPBX(t, testpeers.KamailioOptions{Children: 1})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))
	dev := proxytest.NewUDP(t, "")
	cseq := 0
	if res := rawRegister(t, dev, sw.UDP, "1001", "pw1001", ";pn-provider=apns;pn-prid=0a0b0c0d0e0f1a1b;pn-param=TEAM123456.com.example.phone.voip", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	sw.waitBindings(t, "sip:1001@pbx.test", 1, e2eWait)
	kam.WaitContacts(t, "1001", 1, e2eWait)

	// The device: 180 and 200 at once for each INVITE, 200 for re-INVITEs
	// and BYEs, until every call ended.
	answered := make(chan int, 1)
	go func() {
		byes := 0
		for byes < calls {
			m, err := dev.Recv(20 * time.Second)
			if err != nil {
				break
			}
			req, ok := m.(*sip.Request)
			if !ok {
				continue
			}
			contact := "Contact: <sip:1001@" + dev.Addr() + ">"
			switch {
			case req.Method == sip.INVITE && !req.To().Params.Has("tag"):
				tag := "dev" + req.CallID().Value()
				dev.Send(req.Source(), proxytest.ResponseText(req, 180, "Ringing", tag, contact))
				dev.Send(req.Source(), proxytest.ResponseText(req, 200, "OK", tag, contact))
			case req.Method == sip.INVITE:
				dev.Send(req.Source(), proxytest.ResponseText(req, 200, "OK", "", contact))
			case req.Method == sip.BYE:
				dev.Send(req.Source(), proxytest.ResponseText(req, 200, "OK", ""))
				byes++
			}
		}
		answered <- byes
	}()

	caller := pbxUser(t, kam, "1002")
	res, err := testpeers.RunSIPp(t, e2eCtx(t, 40*time.Second), testpeers.SIPpOptions{
		Scenario:  "uac_call.xml",
		Remote:    kam.UDPAddr,
		LocalPort: caller,
		Auth:      [2]string{"1002", "pw1002"},
		Keys:      testpeers.CallKeys("1002", "1001", "pbx.test"),
		Calls:     calls,
		Pause:     20 * time.Millisecond,
		Timeout:   30 * time.Second,
	})
	sippMust(t, "PBX user 1002 calls the device", res, err)
	if n := <-answered; n != calls {
		t.Errorf("device saw %d BYEs, want %d", n, calls)
	}
	n180 := 0
	for _, l := range startLines(res.Messages) {
		if strings.HasPrefix(l, "SIP/2.0 180") {
			n180++
		}
	}
	if n180 != calls {
		t.Errorf("the caller got %d 180 Ringing for %d calls whose callee sent 180 before 200", n180, calls)
	}
}
