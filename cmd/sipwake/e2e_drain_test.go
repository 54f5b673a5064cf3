package main

import (
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
)

// drainNode runs sipwake as the built binary in front of the wake env's
// PBX and fake push servers (the env's own in-process daemon is stopped),
// so that the test can send it real signals.
func drainNode(t *testing.T, e *wakeEnv, delay, timeout time.Duration) (*binaryNode, string) {
	t.Helper()
	cfg := *e.sw.cfg
	e.sw.Stop(t)
	opsPort := testpeers.FreePort(t, "tcp")
	cfg.NodeID = "drain"
	cfg.SIP.Listen = []string{"udp://127.0.0.1:0", "tcp://127.0.0.1:0"}
	cfg.Store.Embedded.Path = t.TempDir() + "/drain.db"
	cfg.Ops.Listen = "127.0.0.1:" + strconv.Itoa(opsPort)
	cfg.Drain.Delay, cfg.Drain.Timeout = delay, timeout
	n := startBinaryNode(t, "draining node", &cfg)
	return n, "http://127.0.0.1:" + strconv.Itoa(opsPort) + "/readyz"
}

func readyzStatus(url string) int {
	c := http.Client{Timeout: time.Second}
	res, err := c.Get(url)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// optionsStatus sends OPTIONS to sipwake itself and returns the status.
func optionsStatus(t *testing.T, addr, id string) int {
	t.Helper()
	probe := proxytest.NewUDP(t, "")
	defer probe.Close()
	probe.Send(addr, "OPTIONS sip:"+addr+" SIP/2.0\nVia: SIP/2.0/UDP "+probe.Addr()+";branch=z9hG4bK-drain"+id+"\n"+
		"Max-Forwards: 70\nFrom: <sip:probe@pbx.test>;tag=p\nTo: <sip:"+addr+">\nCall-ID: drain-"+id+"\nCSeq: 1 OPTIONS\n\n")
	m, err := probe.Recv(3 * time.Second)
	if err != nil {
		return 0
	}
	if res, ok := m.(*sip.Response); ok {
		return int(res.StatusCode)
	}
	return 0
}

// signalNode sends sig to the node's process.
func signalNode(t *testing.T, n *binaryNode, sig syscall.Signal) {
	t.Helper()
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for the node's process to end within d and returns how
// long it took and its exit code.
func waitExit(t *testing.T, n *binaryNode, d time.Duration) (time.Duration, int) {
	t.Helper()
	start := time.Now()
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(d):
		t.Fatalf("still running %s after the signal\n%s", d, tail(n.Logs(), 30))
	}
	return time.Since(start), cmd.ProcessState.ExitCode()
}

// TestE2EDrain: SIGTERM while an INVITE is held for a sleeping device and
// while a call rings at an awake device. Readiness and OPTIONS turn 503
// at once; the held INVITE ends as it would have (480 at the hold
// timeout, never cut), the ringing call is answered and completes
// through the draining node, progress is logged every 5 s, and the
// process exits 0 in time.
func TestE2EDrain(t *testing.T) {
	e := startWakeEnv(t, func(c *Config) { c.Wake.InviteHoldTimeout = 8 * time.Second })
	n, readyz := drainNode(t, e, 2*time.Second, 30*time.Second)
	cseq := 0
	sleeper := proxytest.DialTCP(t, "", n.TCP)
	if res := rawRegister(t, sleeper, n.TCP, "1001", "pw1001", iosParams+"|", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("sleeping device: register %d", res.StatusCode)
	}
	sleeper.Close()
	awake := proxytest.DialTCP(t, "", n.TCP)
	cseq = 0
	if res := rawRegister(t, awake, n.TCP, "1003", "pw1003", "|", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("awake device: register %d", res.StatusCode)
	}

	held := e.call(t, "1001", 30*time.Second)
	e.apns.WaitRequests(t, 1, 5*time.Second)
	ringing := e.call(t, "1003", 30*time.Second)
	inv := awake.ExpectRequest(5*time.Second, sip.INVITE)
	contact := "Contact: <sip:dev@" + awake.Addr() + ";transport=tcp>"
	awake.Reply(n.TCP, inv, 180, "Ringing", contact)

	signalNode(t, n, syscall.SIGTERM)
	signalled := time.Now()
	deadline := signalled.Add(time.Second)
	for readyzStatus(readyz) != 503 {
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not turn 503 within 1 s of SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := optionsStatus(t, n.UDP, "1"); st != 503 {
		t.Errorf("OPTIONS while draining: %d, want 503", st)
	}
	// The ringing call is answered during the drain and completes.
	time.Sleep(500 * time.Millisecond)
	awake.Reply(n.TCP, inv, 200, "OK", contact)
	awake.ExpectRequest(5*time.Second, sip.ACK)
	for end := time.Now().Add(10 * time.Second); ; {
		m, err := awake.Recv(time.Until(end))
		if err != nil {
			t.Fatalf("the call in progress was cut: %v", err)
		}
		r, ok := m.(*sip.Request)
		if !ok {
			continue
		}
		if r.Method == sip.INVITE {
			awake.Reply(n.TCP, r, 200, "OK", contact)
		}
		if r.Method == sip.BYE {
			awake.Reply(n.TCP, r, 200, "OK")
			break
		}
	}
	res := waitSIPp(t, "caller of the ringing call", ringing)
	expectLines(t, "caller of the ringing call", res.Messages, "SIP/2.0 200 OK")
	// The held INVITE: answered 480 at its hold timeout, not cut.
	if err := held.WaitMessage("SIP/2.0 480", 15*time.Second); err != nil {
		t.Fatalf("held call: no 480 while draining: %v", err)
	}
	held.Stop()
	if _, code := waitExit(t, n, 20*time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	logs := n.Logs()
	t.Logf("exited %s after SIGTERM", time.Since(signalled).Round(100*time.Millisecond))
	for _, msg := range []string{`"msg":"draining"`, `"msg":"still draining"`, `"msg":"stopped"`} {
		if !strings.Contains(logs, msg) {
			t.Errorf("log lacks %s", msg)
		}
	}
	if strings.Contains(logs, "drain timed out") {
		t.Error("the drain timed out")
	}
}

// TestE2EDrainSecondSignal: a second SIGTERM during the drain stops at
// once; the INVITE still held is answered (503, or 500 from the PBX),
// not left in silence.
func TestE2EDrainSecondSignal(t *testing.T) {
	e := startWakeEnv(t, func(c *Config) { c.Wake.InviteHoldTimeout = 25 * time.Second })
	n, _ := drainNode(t, e, 2*time.Second, 60*time.Second)
	cseq := 0
	sleeper := proxytest.DialTCP(t, "", n.TCP)
	if res := rawRegister(t, sleeper, n.TCP, "1001", "pw1001", iosParams+"|", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("register %d", res.StatusCode)
	}
	sleeper.Close()
	held := e.call(t, "1001", 40*time.Second)
	e.apns.WaitRequests(t, 1, 5*time.Second)
	signalNode(t, n, syscall.SIGTERM)
	time.Sleep(3 * time.Second) // past drain.delay: waiting for the held call
	if strings.Contains(n.Logs(), `"msg":"stopped"`) {
		t.Fatal("stopped before the held call ended")
	}
	signalNode(t, n, syscall.SIGTERM)
	took, code := waitExit(t, n, 5*time.Second)
	if took > 2*time.Second {
		t.Errorf("exited %s after the second signal", took)
	}
	if code != 0 {
		t.Errorf("exit code %d", code)
	}
	// 503 from sipwake; the PBX may turn it into 500 (RFC 3261 §16.7).
	if err := held.WaitMessage("SIP/2.0 50", 5*time.Second); err != nil {
		t.Errorf("the held call got no answer when the node stopped: %v", err)
	}
	held.Stop()
	if !strings.Contains(n.Logs(), `"msg":"second signal: stopping now"`) {
		t.Error("the second signal was not logged")
	}
}
