package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
	"github.com/sipwake/sipwake/store/storetest"
)

// startPeer starts a second sipwake node sharing the first one's config
// (same Redis, PBX and push providers) under another node id.
func startPeer(t *testing.T, first *running, node string) *running {
	t.Helper()
	cfg := *first.cfg
	cfg.NodeID = node
	cfg.Ops.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.3:0"
	return startDaemon(t, &cfg)
}

// TestE2EWakeTwoNodes: two nodes on one Redis. The INVITE is held on
// node A; the woken device registers through node B; A learns it from
// the store's event and sends the INVITE through B, which owns the
// device's connection. The call completes, ACK and BYE included.
func TestE2EWakeTwoNodes(t *testing.T) {
	addr := storetest.StartRedis(t)
	e := startWakeEnv(t, func(c *Config) {
		c.NodeID = "node-a"
		c.Store.Driver = "redis"
		c.Store.Redis.Addresses = []string{addr}
	})
	b := startPeer(t, e.sw, "node-b")

	e.sleepDevice(t, "1001", iosParams) // through A: the PBX's contact points at A
	caller := e.call(t, "1001", 20*time.Second)
	e.apns.WaitRequests(t, 1, 5*time.Second)

	onB := &wakeEnv{kam: e.kam, sw: b, apns: e.apns, fcm: e.fcm}
	dev := onB.wakeDevice(t, "1001", iosParams)
	inv := answer(t, dev, b.TCP)
	if !strings.Contains(inv.Recipient.String(), "dev") && !strings.Contains(inv.Recipient.String(), "1001") {
		t.Errorf("INVITE Request-URI %s", inv.Recipient.String())
	}
	if strings.Contains(inv.String(), "sw-relay") {
		t.Errorf("the relay signature reached the device:\n%s", inv.String())
	}
	res := waitSIPp(t, "caller", caller)
	expectLines(t, "caller", res.Messages, "SIP/2.0 200 OK")
	if n := len(e.apns.Requests()); n != 1 {
		t.Errorf("APNs got %d pushes, want 1", n)
	}
}

// killableNode runs node A of a two-node pair as the built binary (so it
// can be killed with SIGKILL), configured like node B (e.sw). It returns
// A's TCP address and the function that kills it.
func killableNode(t *testing.T, e *wakeEnv, redisAddr string, hold time.Duration) (string, func()) {
	t.Helper()
	cfg := *e.sw.cfg
	cfg.NodeID = "node-a"
	cfg.SIP.Listen = []string{"udp://127.0.0.1:0", "tcp://127.0.0.1:0"}
	cfg.Store.Driver = "redis"
	cfg.Store.Redis.Addresses = []string{redisAddr}
	cfg.Wake.InviteHoldTimeout = hold
	n := startBinaryNode(t, "node A", &cfg)
	return n.TCP, n.Kill
}

// binaryNode is sipwake run as the built binary, so that a test can kill
// it with SIGKILL and start it again with the same config file (same node
// id, same store: embedded file or Redis, same listeners).
type binaryNode struct {
	t       *testing.T
	name    string
	bin     string
	cfgFile string

	mu     sync.Mutex
	runs   []*syncBuffer // the output of each run, oldest first
	cmd    *exec.Cmd
	exited chan struct{}

	// UDP, TCP and Admin are the addresses of the current run.
	UDP, TCP, Admin string
}

// startBinaryNode builds sipwake, writes cfg as its config file and starts
// it; it is killed when the test ends (its log is shown if the test
// failed). Listeners on port 0 get new ports at each Start: give fixed
// ports when the PBX or devices must find the node again after a restart.
func startBinaryNode(t *testing.T, name string, cfg *Config) *binaryNode {
	t.Helper()
	dir := t.TempDir()
	n := &binaryNode{t: t, name: name, bin: filepath.Join(dir, "sipwake"), cfgFile: filepath.Join(dir, "sipwake.yaml")}
	if out, err := exec.Command("go", "build", "-o", n.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.WriteFile(n.cfgFile, renderConfigYAML(cfg, ""), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			t.Logf("%s log (last 40 lines):\n%s", n.name, tail(n.Logs(), 40))
		}
	})
	n.Start()
	return n
}

// Start runs the binary (again) and waits until it has started; it sets
// the node's addresses from its log.
func (n *binaryNode) Start() {
	n.t.Helper()
	n.mu.Lock()
	running := n.cmd != nil
	if running {
		select {
		case <-n.exited:
			running = false
		default:
		}
	}
	n.mu.Unlock()
	if running {
		n.t.Fatalf("%s: Start while it runs", n.name)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(n.bin, "serve", "-c", n.cfgFile)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	n.mu.Lock()
	n.runs = append(n.runs, logs)
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
	n.UDP, n.TCP = waitListen(n.t, logs, "udp"), waitListen(n.t, logs, "tcp")
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(logs.String(), `"msg":"sipwake started"`) {
		select {
		case <-exited:
			n.t.Fatalf("%s exited while starting:\n%s", n.name, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s did not start:\n%s", n.name, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.Admin = logField(logs.String(), `"msg":"admin listening"`, "addr")
}

// Kill sends SIGKILL to the running process (by its pid) and waits until
// it has exited; nothing when it does not run.
func (n *binaryNode) Kill() {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
	default:
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Restart kills the node (SIGKILL) and starts it again with the same
// config.
func (n *binaryNode) Restart() {
	n.t.Helper()
	n.Kill()
	n.Start()
}

// Logs is the output of every run so far.
func (n *binaryNode) Logs() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var b strings.Builder
	for i, l := range n.runs {
		if i > 0 {
			b.WriteString("--- restarted ---\n")
		}
		b.WriteString(l.String())
	}
	return b.String()
}

// logField returns field of the first JSON log line containing marker.
func logField(logs, marker, field string) string {
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, marker) {
			continue
		}
		if i := strings.Index(line, `"`+field+`":"`); i >= 0 {
			rest := line[i+len(field)+4:]
			return rest[:strings.IndexByte(rest, '"')]
		}
	}
	return ""
}

// TestE2EWakeNodeKilled: node A (the built binary) holds a call and is
// killed with SIGKILL. Node B finds the held-call record of a node whose
// heartbeat lapsed:
//   - no pushed device has registered since: B answers the caller 480 at
//     once, long before the hold ends (not silence);
//   - the pushed device registered (through B) meanwhile: B resumes the
//     call, the device gets the INVITE and the caller its 200.
func TestE2EWakeNodeKilled(t *testing.T) {
	const hold = 30 * time.Second
	for _, resume := range []bool{false, true} {
		name := "answered-480"
		if resume {
			name = "resumed"
		}
		t.Run(name, func(t *testing.T) {
			addr := storetest.StartRedis(t)
			e := startWakeEnv(t, func(c *Config) {
				c.NodeID = "node-b"
				c.Store.Driver = "redis"
				c.Store.Redis.Addresses = []string{addr}
				c.Wake.InviteHoldTimeout = hold
			})
			tcpA, kill := killableNode(t, e, addr, hold)
			onA := &wakeEnv{kam: e.kam, sw: &running{TCP: tcpA}, apns: e.apns}
			onA.sleepDevice(t, "1001", iosParams) // the PBX's contact points at A
			caller := e.call(t, "1001", hold+10*time.Second)
			e.apns.WaitRequests(t, 1, 5*time.Second)
			time.Sleep(200 * time.Millisecond) // A writes its held-call record after the push
			kill()
			killed := time.Now()
			if !resume {
				if err := caller.WaitMessage("SIP/2.0 480", 15*time.Second); err != nil {
					t.Fatalf("the caller got no final answer after node A died: %v", err)
				}
				if d := time.Since(killed); d > 10*time.Second {
					t.Errorf("480 came %v after the kill", d)
				}
				caller.Stop()
				if !strings.Contains(e.sw.logs.String(), `"orphan call answered"`) {
					t.Errorf("node B did not log the orphan call")
				}
				return
			}
			dev := e.wakeDevice(t, "1001", iosParams) // through B, while A is dead
			inv := answer(t, dev, e.sw.TCP)
			if d := time.Since(killed); d > 10*time.Second {
				t.Errorf("INVITE delivered %v after the kill", d)
			}
			if !strings.Contains(inv.String(), "sip:1002@") {
				t.Errorf("resumed INVITE:\n%s", inv.String())
			}
			res := waitSIPp(t, "caller", caller)
			expectLines(t, "caller", res.Messages, "SIP/2.0 200 OK")
			if !strings.Contains(e.sw.logs.String(), `"orphan call resumed"`) {
				t.Errorf("node B did not log the resumed call")
			}
		})
	}
}

// waitListen reads a node's log until it reports its listener for
// network and returns the address.
func waitListen(t *testing.T, logs *syncBuffer, network string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(logs.String(), "\n") {
			if !strings.Contains(line, `"msg":"listening"`) || !strings.Contains(line, `"transport":"`+strings.ToUpper(network)+`"`) {
				continue
			}
			if addr := logField(line, `"msg":"listening"`, "addr"); addr != "" {
				return addr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("node never listened on %s:\n%s", network, logs.String())
	return ""
}

// TestE2EWakeCancelOtherNode: a CANCEL that a load balancer sends to node
// B, while node A holds the INVITE, is answered 200 by B; A ends the call
// with 487. (The PBX here is a raw UA, so the test controls where each
// request goes.)
func TestE2EWakeCancelOtherNode(t *testing.T) {
	addr := storetest.StartRedis(t)
	pbx := proxytest.NewUDP(t, pbxIP)
	e := startWakeEnv(t, func(c *Config) {
		c.NodeID = "node-a"
		c.Store.Driver = "redis"
		c.Store.Redis.Addresses = []string{addr}
		c.Upstream.URI = "sip:" + pbx.Addr() + ";transport=udp"
		c.Upstream.Domains = []string{"pbx.test"}
	})
	b := startPeer(t, e.sw, "node-b")

	// The device registers through A; the PBX accepts its contact.
	dev := proxytest.DialTCP(t, "", e.sw.TCP)
	dev.Send(e.sw.TCP, "REGISTER sip:pbx.test SIP/2.0\n"+
		"Via: SIP/2.0/TCP "+dev.Addr()+";branch=z9hG4bK-reg1;rport\n"+
		"Max-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=r1\nTo: <sip:1001@pbx.test>\n"+
		"Call-ID: reg-cancel-other\nCSeq: 1 REGISTER\n"+
		"Contact: <sip:1001@"+dev.Addr()+";transport=tcp"+iosParams+">;expires=600\n\n")
	reg := pbx.ExpectRequest(5*time.Second, sip.REGISTER)
	contact := reg.GetHeader("Contact").Value()
	pbx.Reply(e.sw.UDP, reg, 200, "OK", "Contact: "+contact)
	if res := waitFinal(t, dev); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	dev.Close()
	ruri := strings.Trim(strings.SplitN(contact, ";expires", 2)[0], "<>")

	head := func(method string, cseq int) string {
		return method + " " + ruri + " SIP/2.0\n" +
			"Via: SIP/2.0/UDP " + pbx.Addr() + ";branch=z9hG4bK-lb-1;rport\n" +
			"Max-Forwards: 70\nFrom: <sip:1002@pbx.test>;tag=caller\nTo: <sip:1001@pbx.test>\n" +
			"Call-ID: cancel-other-node\nCSeq: 1 " + method + "\n"
	}
	pbx.Send(e.sw.UDP, head("INVITE", 1)+"Contact: <sip:1002@"+pbx.Addr()+">\n\n")
	e.apns.WaitRequests(t, 1, 5*time.Second)
	time.Sleep(300 * time.Millisecond) // the held-call record is written after the push

	pbx.Send(b.UDP, head("CANCEL", 1)+"\n")
	var got200, got487 bool
	for deadline := time.Now().Add(5 * time.Second); !(got200 && got487); {
		m, err := pbx.Recv(time.Until(deadline))
		if err != nil {
			t.Fatalf("CANCEL via node B: 200 %v, 487 %v: %v", got200, got487, err)
		}
		r, ok := m.(*sip.Response)
		if !ok {
			continue
		}
		switch {
		case r.CSeq().MethodName == sip.CANCEL && r.StatusCode == 200:
			got200 = true
		case r.CSeq().MethodName == sip.INVITE && r.StatusCode == 487:
			got487 = true
		case r.StatusCode >= 200:
			t.Fatalf("unexpected %d to %s", r.StatusCode, r.CSeq().MethodName)
		}
	}
}

// TestE2ENodeAddress: with sip.node_address set (the pod IP when several
// nodes share one advertised address), a binding records that address,
// with the listener's port, as the way to reach the node holding the
// device's connection.
func TestE2ENodeAddress(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	cfg := e2eConfig(t, kam, t.TempDir())
	cfg.SIP.NodeAddress = "127.0.0.9"
	sw := startDaemon(t, cfg)
	ua := proxytest.DialTCP(t, "", sw.TCP)
	cseq := 0
	if res := rawRegister(t, ua, sw.TCP, "1001", "pw1001", iosParams+"|", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("register %d", res.StatusCode)
	}
	bs := sw.bindings(t, "sip:1001@pbx.test")
	_, port, _ := strings.Cut(sw.UDP, ":")
	if len(bs) != 1 || bs[0].Flow.NodeURI != "sip:127.0.0.9:"+port {
		t.Fatalf("bindings %+v, want Flow.NodeURI sip:127.0.0.9:%s", bs, port)
	}
}
