package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
	"github.com/sipwake/sipwake/push/pushtest"
	"github.com/sipwake/sipwake/store/storetest"
)

// Durability of stored MESSAGEs (issue 4, "Survives"): a MESSAGE answered
// 202 is delivered once after sipwake or Redis is killed with SIGKILL and
// started again, and a MESSAGE that could not be stored is never
// answered 202.

// aofAlways is the Redis persistence under which a 202 survives a crash
// of Redis itself (store/redis/README.md).
var aofAlways = []string{"--appendonly", "yes", "--appendfsync", "always"}

// durableEnv is a PBX and fake APNs and FCM with the config of a sipwake
// node for them, not started: the test runs it as the built binary
// (binaryNode) so that it can be killed with SIGKILL.
func durableEnv(t *testing.T, users map[string]string) (*wakeEnv, *Config) {
	t.Helper()
	ca := pushtest.NewCA(t)
	e := &wakeEnv{kam: startPBX(t, testpeers.KamailioOptions{Users: users}), apns: pushtest.NewAPNs(t, ca), fcm: pushtest.NewFCM(t, ca)}
	cfg := e2eConfig(t, e.kam, t.TempDir())
	cfg.NodeID = "node-a"
	cfg.Push.CAFile = ca.WriteFile(t)
	cfg.Push.APNs.KeyFile = e.apns.WriteKey(t)
	cfg.Push.APNs.KeyID, cfg.Push.APNs.TeamID = e.apns.KeyID, e.apns.TeamID
	cfg.Push.APNs.URL, cfg.Push.APNs.SandboxURL = e.apns.URL, e.apns.URL
	cfg.Push.FCM.Projects = []FCMProject{{ProjectID: fcmProject, CredentialsFile: e.fcm.WriteServiceAccount(t, fcmProject)}}
	cfg.Push.FCM.Endpoint = e.fcm.Endpoint
	cfg.Wake.InviteHoldTimeout = testHold
	// Fixed ports: after a restart the PBX's contacts (which name
	// sipwake's address) and the devices find the node where it was.
	cfg.SIP.Listen = []string{
		"udp://127.0.0.1:" + strconv.Itoa(testpeers.FreePort(t, "udp")),
		"tcp://127.0.0.1:" + strconv.Itoa(testpeers.FreePort(t, "tcp")),
	}
	return e, cfg
}

// startDurableNode runs cfg as the built binary; e.sw then points at it.
func startDurableNode(t *testing.T, e *wakeEnv, cfg *Config) *binaryNode {
	t.Helper()
	n := startBinaryNode(t, "sipwake", cfg)
	e.sw = &running{cfg: cfg, UDP: n.UDP, TCP: n.TCP}
	return n
}

// pendingAt lists the stored messages of a node through its admin API
// (GET /v1/messages/pending), as "aor pending-count" strings.
func pendingAt(t *testing.T, n *binaryNode) []string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get("http://" + n.Admin + "/v1/messages/pending")
	if err != nil {
		t.Fatalf("GET /v1/messages/pending: %v", err)
	}
	defer res.Body.Close()
	var listed struct {
		Messages []struct {
			AOR     string `json:"aor"`
			Pending int    `json:"pending"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(res.Body).Decode(&listed); err != nil || res.StatusCode != 200 {
		t.Fatalf("GET /v1/messages/pending: %d %v", res.StatusCode, err)
	}
	var out []string
	for _, m := range listed.Messages {
		out = append(out, m.AOR+" "+strconv.Itoa(m.Pending))
	}
	return out
}

// waitNothingPendingAt polls the node's admin API until no message waits.
func waitNothingPendingAt(t *testing.T, n *binaryNode, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		p := pendingAt(t, n)
		if len(p) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still pending after delivery: %v", p)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// contactURI is the sipwake contact the PBX holds for user's one device.
func contactURI(t *testing.T, kam *testpeers.Kamailio, user string) string {
	t.Helper()
	cs := kam.Contacts(t, user)
	if len(cs) != 1 {
		t.Fatalf("PBX contacts of %s: %v", user, cs)
	}
	return strings.Trim(strings.SplitN(strings.Fields(cs[0])[0], ";", 2)[0], "<>")
}

// TestE2EMessageDurableSipwakeKilled: sipwake is killed with SIGKILL right
// after the PBX got its 202 and before the device registers again, then
// started again with the same config (node id, store file or Redis). The
// device registers through the restarted node and receives the message
// once, with its body, Call-ID and CSeq — promptly, not at the next
// periodic scan.
func TestE2EMessageDurableSipwakeKilled(t *testing.T) {
	for _, driver := range []string{"embedded", "redis-aof"} {
		t.Run(driver, func(t *testing.T) {
			start := time.Now()
			e, cfg := durableEnv(t, nil)
			if driver == "redis-aof" {
				cfg.Store.Driver = "redis"
				cfg.Store.Redis.Addresses = []string{storetest.StartRedis(t, aofAlways...)}
			}
			n := startDurableNode(t, e, cfg)
			e.sleepDevice(t, "1001", androidParms)

			const text = "kill -9 me — ✓"
			res := e.sendMessage(t, "1001", text)
			expectLines(t, "sender", res.Messages, "SIP/2.0 202")
			n.Kill() // the 202 is out: the message must be on disk
			// (The push goes out after the 202: a kill this early may
			// take it along; the message itself waits in the store, and
			// the restarted node pushes messages stored just before it
			// started again.)
			before := len(e.fcm.Requests())
			t.Logf("pushes before the kill: %d", before)
			n.Start()
			if reqs := e.fcm.WaitRequests(t, before+1, 5*time.Second); reqs[len(reqs)-1].Message.Data["sipwake.event"] != "message" {
				t.Errorf("push after the restart: %v", reqs[len(reqs)-1].Message.Data)
			}

			dev := e.wakeDevice(t, "1001", androidParms)
			registered := time.Now()
			m := takeMessage(t, dev, n.TCP)
			if d := time.Since(registered); d > 5*time.Second {
				t.Errorf("delivered %v after the REGISTER (the periodic scan, not the registration, sent it)", d)
			}
			if string(m.Body()) != text+"\r\n" || !strings.Contains(res.Messages, "Call-ID: "+m.CallID().Value()) || m.CSeq().MethodName != sip.MESSAGE {
				t.Errorf("delivered Call-ID %s CSeq %s body %q; sender's trace:\n%s", m.CallID().Value(), m.CSeq().Value(), m.Body(), res.Messages)
			}
			noMore(t, dev, 2*time.Second)
			waitNothingPendingAt(t, n, 5*time.Second)
			if !strings.Contains(n.Logs(), `"msg":"message delivered"`) {
				t.Errorf("the restarted node did not log the delivery")
			}
			t.Logf("%s: %v", driver, time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestE2EMessageDurableKilledMidDelivery: the device registers and gets
// the stored MESSAGE but has not answered when sipwake is killed; the
// dead process still holds the device's delivery lease (20 s) in the
// store. The node restarted with the same id renews that lease: the
// device, registering again, gets the MESSAGE again (unacknowledged, so
// re-sent, with the same Call-ID and CSeq) within seconds, not after the
// lease lapsed, and once it answers nothing is pending.
func TestE2EMessageDurableKilledMidDelivery(t *testing.T) {
	for _, driver := range []string{"embedded", "redis-aof"} {
		t.Run(driver, func(t *testing.T) {
			start := time.Now()
			e, cfg := durableEnv(t, nil)
			if driver == "redis-aof" {
				cfg.Store.Driver = "redis"
				cfg.Store.Redis.Addresses = []string{storetest.StartRedis(t, aofAlways...)}
			}
			n := startDurableNode(t, e, cfg)
			e.sleepDevice(t, "1001", androidParms)
			pbx := proxytest.NewUDP(t, pbxIP)
			if res := pbxMessage(t, pbx, n.UDP, contactURI(t, e.kam, "1001"), "mid-1", 3, "m1", "text/plain", "in flight"); res.StatusCode != 202 {
				t.Fatalf("MESSAGE: %d", res.StatusCode)
			}
			dev := e.wakeDevice(t, "1001", androidParms)
			first := dev.ExpectRequest(5*time.Second, sip.MESSAGE) // not answered
			n.Restart()                                            // SIGKILL, start again
			dev.Close()

			dev = e.wakeDevice(t, "1001", androidParms)
			registered := time.Now()
			m := takeMessage(t, dev, n.TCP)
			if d := time.Since(registered); d > 5*time.Second {
				t.Errorf("re-sent %v after the REGISTER: the dead process's lease held it back", d)
			}
			if m.CallID().Value() != "mid-1" || m.CSeq().SeqNo != 3 || string(m.Body()) != "in flight" ||
				m.CallID().Value() != first.CallID().Value() {
				t.Errorf("re-sent %s %s %q", m.CallID().Value(), m.CSeq().Value(), m.Body())
			}
			noMore(t, dev, 2*time.Second)
			waitNothingPendingAt(t, n, 5*time.Second)
			t.Logf("%s: %v", driver, time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestE2EMessageDurableRedisKilled: Redis (appendfsync always) is killed
// with SIGKILL after the 202 and started again on the same port and data
// directory; sipwake keeps running. The device registers and receives the
// message once.
func TestE2EMessageDurableRedisKilled(t *testing.T) {
	start := time.Now()
	rs := storetest.StartRedisServer(t, aofAlways...)
	e := startWakeEnv(t, func(c *Config) {
		c.Store.Driver = "redis"
		c.Store.Redis.Addresses = []string{rs.Addr}
	})
	e.sleepDevice(t, "1001", androidParms)
	const text = "survives a Redis crash"
	res := e.sendMessage(t, "1001", text)
	expectLines(t, "sender", res.Messages, "SIP/2.0 202")
	rs.Kill(t)
	e.fcm.WaitRequests(t, 1, 5*time.Second)
	rs.Restart(t)

	dev := e.wakeDevice(t, "1001", androidParms)
	registered := time.Now()
	m := takeMessage(t, dev, e.sw.TCP)
	if d := time.Since(registered); d > 5*time.Second {
		t.Errorf("delivered %v after the REGISTER", d)
	}
	if string(m.Body()) != text+"\r\n" || !strings.Contains(res.Messages, "Call-ID: "+m.CallID().Value()) {
		t.Errorf("delivered Call-ID %s body %q", m.CallID().Value(), m.Body())
	}
	noMore(t, dev, 2*time.Second)
	waitNonePending(t, e)
	// The subscription to store events came back (EventResync): had the
	// REGISTER's event been lost in the gap, the pick-up scan it starts
	// delivered the message.
	for deadline := time.Now().Add(3 * time.Second); !strings.Contains(e.sw.logs.String(), `"msg":"store events resumed: picking up stored messages"`); {
		if time.Now().After(deadline) {
			t.Errorf("no \"store events resumed\" log line after the Redis restart")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%v", time.Since(start).Round(time.Millisecond))
}

// TestE2EMessageDurableRedisDown: a MESSAGE that cannot be stored is never
// answered 202. With Redis down the PBX gets 503 with Retry-After, and no
// push goes out; with Redis refusing writes (min-replicas-to-write, reads
// still answered) the store write itself fails: 503 again. Once Redis is
// back the PBX retries the same MESSAGEs (same Call-ID, From tag and
// CSeq, a new branch) and gets 202; the device later receives each once.
func TestE2EMessageDurableRedisDown(t *testing.T) {
	start := time.Now()
	rs := storetest.StartRedisServer(t, aofAlways...)
	e := startWakeEnv(t, func(c *Config) {
		c.Store.Driver = "redis"
		c.Store.Redis.Addresses = []string{rs.Addr}
	})
	e.sleepDevice(t, "1001", androidParms)
	ruri := contactURI(t, e.kam, "1001")
	pbx := proxytest.NewUDP(t, pbxIP)
	refused := func(what string, res *sip.Response) {
		t.Helper()
		ra := res.GetHeader("Retry-After")
		if res.StatusCode != 503 || ra == nil || ra.Value() == "" {
			t.Fatalf("%s: %d %s (Retry-After %v), want 503 with Retry-After", what, res.StatusCode, res.Reason, ra)
		}
	}

	rs.Kill(t)
	refused("MESSAGE with Redis down", pbxMessage(t, pbx, e.sw.UDP, ruri, "down-1", 1, "d1", "text/plain", "while Redis was down"))
	rs.Restart(t)

	redisCommand(t, rs.Addr, "CONFIG", "SET", "min-replicas-to-write", "1")
	refused("MESSAGE with Redis refusing writes", pbxMessage(t, pbx, e.sw.UDP, ruri, "ro-1", 1, "r1", "text/plain", "while Redis refused writes"))
	if !strings.Contains(e.sw.logs.String(), `"msg":"message not stored"`) {
		t.Errorf("no \"message not stored\" log line: the 503 did not come from the failed store write")
	}
	redisCommand(t, rs.Addr, "CONFIG", "SET", "min-replicas-to-write", "0")
	if n := len(e.fcm.Requests()); n != 0 || len(e.pending(t)) != 0 {
		t.Fatalf("after the 503s: %d pushes, %d stored; want none", n, len(e.pending(t)))
	}

	// The PBX retries both, as it would after Retry-After.
	for _, retry := range []struct{ callID, branch, body string }{
		{"down-1", "d2", "while Redis was down"},
		{"ro-1", "r2", "while Redis refused writes"},
	} {
		if res := pbxMessage(t, pbx, e.sw.UDP, ruri, retry.callID, 1, retry.branch, "text/plain", retry.body); res.StatusCode != 202 {
			t.Fatalf("retry of %s: %d %s, want 202", retry.callID, res.StatusCode, res.Reason)
		}
	}
	e.fcm.WaitRequests(t, 2, 5*time.Second)

	dev := e.wakeDevice(t, "1001", androidParms)
	for _, want := range []struct{ callID, body string }{
		{"down-1", "while Redis was down"},
		{"ro-1", "while Redis refused writes"},
	} {
		m := takeMessage(t, dev, e.sw.TCP)
		if m.CallID().Value() != want.callID || m.CSeq().SeqNo != 1 || string(m.Body()) != want.body {
			t.Errorf("delivered %s %s %q, want %s 1 MESSAGE %q", m.CallID().Value(), m.CSeq().Value(), m.Body(), want.callID, want.body)
		}
	}
	noMore(t, dev, 2*time.Second)
	waitNonePending(t, e)
	if n := len(e.fcm.Requests()); n != 2 {
		t.Errorf("%d pushes, want 2 (one per stored message)", n)
	}
	t.Logf("%v", time.Since(start).Round(time.Millisecond))
}

// redisCommand sends one command over plain RESP and fails the test unless
// Redis answers +OK.
func redisCommand(t *testing.T, addr string, args ...string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "+OK" {
		t.Fatalf("redis %v: %q %v", args, line, err)
	}
}

// TestE2EMessageDurableUnderKills: a trusted PBX sends 1,000 MESSAGEs
// (unique Call-IDs, over UDP from 127.0.0.2) to 10 sleeping devices while
// sipwake is killed with SIGKILL and started again twice. Then the
// devices register and count what they receive by Call-ID and CSeq:
// every MESSAGE that got a 202 arrives exactly once at its device; one
// sent while sipwake was down may be missing (or present, when it was
// stored before the kill took the 202 with it), but none arrives twice.
func TestE2EMessageDurableUnderKills(t *testing.T) {
	for _, driver := range []string{"embedded", "redis-aof"} {
		t.Run(driver, func(t *testing.T) { messagesUnderKills(t, driver) })
	}
}

func messagesUnderKills(t *testing.T, driver string) {
	const (
		devices  = 10
		messages = 1000
		workers  = 4
		// A MESSAGE without a final answer within this is taken as lost
		// (sent while sipwake was down); a late 202 still counts.
		answerWait = time.Second
	)
	start := time.Now()
	stopAt := start.Add(55 * time.Second)
	users := map[string]string{}
	var names []string
	for i := range devices {
		u := strconv.Itoa(2001 + i)
		users[u] = "pw" + u
		names = append(names, u)
	}
	e, cfg := durableEnv(t, users)
	cfg.Log.Level = "info" // 1,000 MESSAGEs: no debug lines
	if driver == "redis-aof" {
		cfg.Store.Driver = "redis"
		cfg.Store.Redis.Addresses = []string{storetest.StartRedis(t, aofAlways...)}
	}
	n := startDurableNode(t, e, cfg)
	swUDP := n.UDP // the same after each restart: fixed ports
	ruris := map[string]string{}
	for _, u := range names {
		e.sleepDevice(t, u, androidParms)
		ruris[u] = contactURI(t, e.kam, u)
	}

	// The PBX: one UDP socket, a reader that records the final answer of
	// each Call-ID (late ones too), senders that wait for it a while.
	pbx := proxytest.NewUDP(t, pbxIP)
	var (
		mu      sync.Mutex
		final   = map[string]int{}           // Call-ID → first final status
		waiters = map[string]chan struct{}{} // Call-ID → closed on its final answer
		acked   atomic.Int64                 // 202s so far
	)
	readerDone := make(chan struct{})
	stopReader := make(chan struct{})
	var stopReading sync.Once
	// quit ends the senders early when the test fails half-way (before
	// the PBX socket closes; cleanups run last-registered first).
	quit := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(quit)
		wg.Wait()
		stopReading.Do(func() { close(stopReader) })
		<-readerDone
	})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stopReader:
				return
			default:
			}
			m, err := pbx.Recv(100 * time.Millisecond)
			if err != nil {
				continue
			}
			r, ok := m.(*sip.Response)
			if !ok || r.StatusCode < 200 {
				continue
			}
			id := r.CallID().Value()
			mu.Lock()
			if _, seen := final[id]; !seen {
				final[id] = r.StatusCode
				if r.StatusCode == 202 {
					acked.Add(1)
				}
				if w := waiters[id]; w != nil {
					close(w)
					delete(waiters, id)
				}
			}
			mu.Unlock()
		}
	}()
	callID := func(i int) string { return "dur-" + strconv.Itoa(i) + "@pbx.test" }
	target := func(i int) string { return names[i%devices] }
	jobs := make(chan int)
	sendStart := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				id, user := callID(i), target(i)
				w := make(chan struct{})
				mu.Lock()
				waiters[id] = w
				mu.Unlock()
				body := "message " + strconv.Itoa(i)
				pbx.Send(swUDP, "MESSAGE "+ruris[user]+" SIP/2.0\n"+
					"Via: SIP/2.0/UDP "+pbx.Addr()+";branch=z9hG4bK-dur"+strconv.Itoa(i)+";rport\n"+
					"Max-Forwards: 70\nFrom: <sip:1002@pbx.test>;tag=dur\nTo: <sip:"+user+"@pbx.test>\n"+
					"Call-ID: "+id+"\nCSeq: "+strconv.Itoa(i+1)+" MESSAGE\n"+
					"Content-Type: text/plain\n\n"+body)
				select {
				case <-w:
				case <-time.After(answerWait):
					mu.Lock()
					delete(waiters, id)
					mu.Unlock()
				}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := range messages {
			if time.Now().After(stopAt) {
				return
			}
			select {
			case jobs <- i:
			case <-quit:
				return
			}
		}
	}()

	// Two kills while the MESSAGEs flow, after 300 and 650 of them got a
	// 202; the node is down about half a second each time.
	var acksAtKill []int64
	for _, at := range []int64{300, 650} {
		for acked.Load() < at {
			if time.Now().After(stopAt) {
				t.Fatalf("only %d MESSAGEs accepted before the kill at %d", acked.Load(), at)
			}
			time.Sleep(5 * time.Millisecond)
		}
		n.Kill()
		acksAtKill = append(acksAtKill, acked.Load())
		time.Sleep(500 * time.Millisecond)
		n.Start()
	}
	wg.Wait()
	sendDone := time.Now()
	time.Sleep(300 * time.Millisecond) // late answers
	stopReading.Do(func() { close(stopReader) })
	<-readerDone

	want := map[string]map[string]bool{} // user → Call-IDs answered 202
	sent := map[string]string{}          // Call-ID → user, of every MESSAGE sent
	statuses := map[int]int{}
	mu.Lock()
	for i := range messages {
		id := callID(i)
		sent[id] = target(i)
		st, ok := final[id]
		statuses[st]++
		if ok && st == 202 {
			if want[target(i)] == nil {
				want[target(i)] = map[string]bool{}
			}
			want[target(i)][id] = true
		}
	}
	mu.Unlock()
	total := int(acked.Load())
	t.Logf("%s: sent %d MESSAGEs in %v: answers %v (0: none); kills after %v 202s", driver, messages, sendDone.Sub(sendStart).Round(time.Millisecond), statuses, acksAtKill)
	if statuses[0] == 0 {
		t.Logf("no MESSAGE went unanswered: the kills did not catch one in flight")
	}
	for st := range statuses {
		if st != 0 && st != 202 {
			t.Errorf("%d MESSAGEs answered %d", statuses[st], st)
		}
	}
	if total < messages-50 {
		t.Errorf("only %d of %d MESSAGEs accepted", total, messages)
	}

	// The devices wake and count what they receive.
	type seen struct {
		mu    sync.Mutex
		count map[string]int // "Call-ID CSeq" → times received
		bad   []string
	}
	got := map[string]*seen{}
	stop := make(chan struct{})
	var stopDevices sync.Once
	var cwg sync.WaitGroup
	t.Cleanup(func() {
		stopDevices.Do(func() { close(stop) })
		cwg.Wait()
	})
	for _, u := range names {
		s := &seen{count: map[string]int{}}
		got[u] = s
		dev := e.wakeDevice(t, u, androidParms)
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				m, err := dev.Recv(100 * time.Millisecond)
				if err != nil {
					continue
				}
				r, ok := m.(*sip.Request)
				if !ok {
					continue
				}
				if r.Method != sip.MESSAGE {
					s.mu.Lock()
					s.bad = append(s.bad, string(r.Method))
					s.mu.Unlock()
					continue
				}
				dev.Reply(n.TCP, r, 200, "OK")
				id := r.CallID().Value()
				s.mu.Lock()
				s.count[id+" "+strconv.Itoa(int(r.CSeq().SeqNo))]++
				if want := "message " + strconv.Itoa(cseqOf(id)-1); string(r.Body()) != want {
					s.bad = append(s.bad, fmt.Sprintf("%s with body %q, want %q", id, r.Body(), want))
				}
				s.mu.Unlock()
			}
		}()
	}
	woken := time.Now()
	complete := func() bool {
		for _, u := range names {
			s := got[u]
			s.mu.Lock()
			have := 0
			for id := range want[u] {
				if s.count[id+" "+strconv.Itoa(cseqOf(id))] > 0 {
					have++
				}
			}
			s.mu.Unlock()
			if have < len(want[u]) {
				return false
			}
		}
		return true
	}
	for !complete() && time.Now().Before(stopAt) {
		time.Sleep(50 * time.Millisecond)
	}
	delivered := time.Since(woken)
	time.Sleep(2 * time.Second) // time for a duplicate to show
	stopDevices.Do(func() { close(stop) })
	cwg.Wait()

	var received, extra, missing, dups int
	for _, u := range names {
		s := got[u]
		if len(s.bad) > 0 {
			t.Errorf("device %s got %v", u, s.bad)
		}
		for key, c := range s.count {
			received += c
			id, _, _ := strings.Cut(key, " ")
			switch {
			case sent[id] != u:
				t.Errorf("device %s got %s, sent to %s", u, key, sent[id])
			case c > 1:
				dups++
				t.Errorf("device %s got %s %d times", u, key, c)
			case !want[u][id]:
				extra++ // stored, but its 202 was lost with the process
			}
		}
		for id := range want[u] {
			if s.count[id+" "+strconv.Itoa(cseqOf(id))] == 0 {
				missing++
				if missing <= 10 {
					t.Errorf("device %s never got %s (answered 202)", u, id)
				}
			}
		}
	}
	t.Logf("devices received %d MESSAGEs (%d answered 202; %d without a 202 the PBX saw); missing %d, duplicated %d; delivered %v after the wake-up; test %v",
		received, total, extra, missing, dups, delivered.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if missing == 0 && dups == 0 {
		waitNothingPendingAt(t, n, 5*time.Second)
	}
}

// cseqOf is the CSeq number TestE2EMessageDurableUnderKills gives the
// MESSAGE with Call-ID id ("dur-<i>@pbx.test" has CSeq i+1).
func cseqOf(id string) int {
	s := strings.TrimSuffix(strings.TrimPrefix(id, "dur-"), "@pbx.test")
	i, _ := strconv.Atoi(s)
	return i + 1
}
