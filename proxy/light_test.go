package proxy

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/proxy/proxytest"
)

func register(dev *proxytest.UA, branch string) string {
	return "REGISTER sip:pbx.test SIP/2.0\nVia: SIP/2.0/UDP " + dev.Addr() + ";branch=z9hG4bK-" + branch + ";rport\n" +
		"Max-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=ft-" + branch + "\nTo: <sip:1001@pbx.test>\n" +
		"Call-ID: reg-" + branch + "\nCSeq: 1 REGISTER\nContact: <sip:1001@" + dev.Addr() + ">\nExpires: 600\n\n"
}

// TestLightRegister: a REGISTER over UDP runs on a light transaction
// pair. The device's retransmissions are absorbed while the PBX has not
// answered (RFC 3261 §17.2.2, Trying) and answered again from the
// transaction once it has; the request to the PBX is retransmitted on
// Timer E with the same branch; a retransmitted final response from the
// PBX is not relayed twice; after T4 nothing is kept.
func TestLightRegister(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	reg := register(dev, "light-1")
	dev.Send(tb.udp, reg)
	first := tb.pbx.ExpectRequest(wait, sip.REGISTER)
	branch := mustBranch(first)
	if s, c := tb.srv.light.pending(); s != 1 || c != 1 {
		t.Fatalf("light transactions: %d server, %d client, want 1 and 1", s, c)
	}

	// The device retransmits while the PBX is silent: absorbed. The
	// proxy's own retransmissions (T1, then 2*T1 later) carry its branch.
	dev.Send(tb.udp, reg)
	start := time.Now()
	var copies int
	for time.Since(start) < 2*time.Second {
		m, err := tb.pbx.Recv(2*time.Second - time.Since(start))
		if err != nil {
			break
		}
		r, ok := m.(*sip.Request)
		if !ok || r.Method != sip.REGISTER {
			t.Fatalf("PBX got %v", m)
		}
		if b := mustBranch(r); b != branch {
			t.Fatalf("PBX got a REGISTER on branch %s, want the retransmissions of %s only", b, branch)
		}
		copies++
	}
	if copies < 1 || copies > 2 {
		t.Fatalf("PBX got %d retransmissions in 2 s, want 1 or 2 (after T1, then 2*T1)", copies)
	}

	tb.pbx.Reply(tb.udp, first, 200, "OK", "Contact: <sip:1001@"+dev.Addr()+">;expires=600")
	tb.pbx.Reply(tb.udp, first, 200, "OK", "Contact: <sip:1001@"+dev.Addr()+">;expires=600")
	dev.ExpectResponse(wait, 200)
	dev.Quiet(300 * time.Millisecond) // the PBX's retransmission is absorbed

	dev.Send(tb.udp, reg) // completed: answered from the transaction
	if res := dev.ExpectResponse(wait, 200); res.Via() == nil || !strings.Contains(res.Via().Value(), "light-1") {
		t.Fatalf("answer to the retransmission: %v", res)
	}
	tb.pbx.Quiet(300 * time.Millisecond)

	deadline := time.Now().Add(sip.T4 + 2*time.Second)
	for {
		s, c := tb.srv.light.pending()
		if s == 0 && c == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after T4: %d server and %d client light transactions still kept", s, c)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLightRegisterTimeout: a PBX that never answers gets the request
// again at doubling intervals, then the device gets 408 at Timer F.
func TestLightRegisterTimeout(t *testing.T) {
	tb := newTestBed(t)
	tb.srv.timerF.Store(int64(1600 * time.Millisecond)) // sent, T1, 3*T1, then the timeout
	dev := proxytest.NewUDP(t, "")
	dev.Send(tb.udp, register(dev, "light-timeout"))
	var at []time.Duration
	start := time.Now()
	for {
		m, err := tb.pbx.Recv(3 * time.Second)
		if err != nil {
			break
		}
		if r, ok := m.(*sip.Request); ok && r.Method == sip.REGISTER {
			at = append(at, time.Since(start))
		}
		if len(at) == 3 {
			break
		}
	}
	if len(at) != 3 {
		t.Fatalf("PBX got %d copies, want 3 (sent, T1, 3*T1)", len(at))
	}
	if gap := at[2] - at[1]; gap < 900*time.Millisecond {
		t.Fatalf("second retransmission %v after the first, want about 2*T1", gap)
	}
	dev.ExpectResponse(wait, 408)
}

// TestLightRegisterMalformed: a REGISTER the light path cannot key (no
// CSeq) is left to the transaction layer, which answers 400.
func TestLightRegisterMalformed(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	reg := strings.Replace(register(dev, "light-bad"), "CSeq: 1 REGISTER\n", "", 1)
	dev.Send(tb.udp, reg)
	dev.ExpectResponse(wait, 400)
	tb.pbx.Quiet(300 * time.Millisecond)
}

func TestTopViaBranch(t *testing.T) {
	for _, c := range []struct {
		msg, want string
	}{
		{"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a:1;branch=z9hG4bKx1;rport\r\nVia: SIP/2.0/UDP b;branch=z9hG4bKx2\r\n\r\n", "z9hG4bKx1"},
		{"SIP/2.0 200 OK\nFrom: <sip:a@b>\nv: SIP/2.0/UDP a:1;rport;BRANCH = z9hG4bKx3\n\n", "z9hG4bKx3"},
		{"SIP/2.0 200 OK\r\nVIA : SIP/2.0/UDP a:1;branch=z9hG4bKx4,SIP/2.0/UDP b;branch=z9hG4bKx5\r\n\r\n", "z9hG4bKx4"},
		{"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a:1;rport\r\nVia: SIP/2.0/UDP b;branch=z9hG4bKx6\r\n\r\n", ""},
		{"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKbody\r\n", ""},
		{"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=", ""},
		{"SIP/2.0 200 OK", ""},
		{"", ""},
	} {
		got, ok := topViaBranch([]byte(c.msg))
		if string(got) != c.want || ok != (c.want != "") {
			t.Errorf("topViaBranch(%q) = %q, %v; want %q", c.msg, got, ok, c.want)
		}
	}
}

func FuzzTopViaBranch(f *testing.F) {
	f.Add([]byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a:1;branch=z9hG4bKx1;rport\r\n\r\n"))
	f.Add([]byte("SIP/2.0 200 OK\nv:;branch\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, ok := topViaBranch(data)
		if ok && (len(b) == 0 || !strings.Contains(string(data), string(b))) {
			t.Fatalf("branch %q not in the message", b)
		}
	})
}

// TestRawServerKey: the key read from a raw request is the one
// sip.ServerTxKeyMake makes from the parsed request, or none.
func TestRawServerKey(t *testing.T) {
	const rest = "From: <sip:a@b>;tag=f\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 1 %s\r\nContent-Length: 0\r\n\r\n"
	for _, c := range []struct {
		method, via string
		ok          bool
	}{
		{"REGISTER", "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-a1;rport", true},
		{"INVITE", "v: SIP/2.0/udp dev.example.com;branch=z9hG4bKa2", true},
		{"BYE", "VIA : SIP/2.0/UDP [2001:db8::1]:5062 ;branch=z9hG4bKa3,SIP/2.0/UDP b;branch=z9hG4bKb", true},
		{"OPTIONS", "Via: SIP/2.0/UDP [2001:db8::2];received=1.2.3.4;branch=z9hG4bKa4", true},
		{"CANCEL", "Via: SIP/2.0/UDP 10.0.0.1:5070;rport=1;branch=z9hG4bKa5", true},
		{"CANCEL", "Via: SIP/2.0/UDP 10.0.0.1:5070;rport=1;BRANCH=z9hG4bKa5", false},
		{"MESSAGE", "Via: SIP/2.0/UDP Dev.Example.COM:5060;branch=z9hG4bKa6", true},
		{"ACK", "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa7", false},
		{"REGISTER", "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=1234", false},
		{"REGISTER", "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK", false},
		{"REGISTER", "Via: SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKa8", false},
		{"REGISTER", "Via: SIP/2.0/UDP 10.0.0.1:05070;branch=z9hG4bKa9", false},
		{"REGISTER", "Via: SIP/2.0/UDP 10.0.0.1:x;branch=z9hG4bKa10", false},
		{"REGISTER", "Via: SIP/2.0/UDP 10.0.0.1:5070", false},
	} {
		raw := c.method + " sip:a@b SIP/2.0\r\n" + c.via + "\r\n" + fmt.Sprintf(rest, c.method)
		got, ok := rawServerKey([]byte(raw))
		if ok != c.ok {
			t.Errorf("%s / %s: key %q, ok %v; want ok %v", c.method, c.via, got, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		m, err := sip.ParseMessage([]byte(raw))
		if err != nil {
			t.Fatalf("%s / %s: %v", c.method, c.via, err)
		}
		want, err := sip.ServerTxKeyMake(m)
		if err != nil || got != want {
			t.Errorf("%s / %s: key %q, want %q (%v)", c.method, c.via, got, want, err)
		}
	}
}

// FuzzRawServerKey: whatever the quick read keys, the parser keys the same.
func FuzzRawServerKey(f *testing.F) {
	f.Add([]byte("REGISTER sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bKx\r\nCSeq: 1 REGISTER\r\nCall-ID: c\r\nFrom: <sip:a>;tag=1\r\nTo: <sip:a>\r\n\r\n"))
	f.Add([]byte("BYE sip:a SIP/2.0\nv: SIP/2.0/UDP [::1]:7 ;branch=z9hG4bKy\nCSeq: 2 BYE\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, ok := rawServerKey(data)
		if !ok {
			return
		}
		m, err := sip.ParseMessage(data)
		if err != nil {
			return // never parsed, never stored under a key
		}
		req, isReq := m.(*sip.Request)
		if !isReq || req.CSeq() == nil || req.CSeq().MethodName != req.Method {
			return // the light path does not store these
		}
		if want, err := sip.ServerTxKeyMake(m); err == nil && want != key {
			t.Fatalf("quick key %q, parsed key %q", key, want)
		}
	})
}

// TestLightRetransmissionUnparsed: a retransmitted request is answered
// from its light transaction without being parsed (a parse allocates
// dozens of objects), as the load that makes clients retransmit peaks.
func TestLightRetransmissionUnparsed(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	reg := register(dev, "light-unparsed")
	dev.Send(tb.udp, reg)
	first := tb.pbx.ExpectRequest(wait, sip.REGISTER)
	tb.pbx.Reply(tb.udp, first, 200, "OK", "Contact: <sip:1001@"+dev.Addr()+">;expires=600")
	dev.ExpectResponse(wait, 200)

	raw := []byte(strings.ReplaceAll(reg, "\n", "\r\n"))
	props := sip.TransportReadProps{Transport: "UDP", LocalAddr: mustUDPAddr(t, tb.udp), RemoteAddr: mustUDPAddr(t, dev.Addr())}
	allocs := testing.AllocsPerRun(20, func() {
		if !tb.srv.lightRead(props, raw) {
			t.Fatal("retransmission not taken by its light transaction")
		}
	})
	if allocs > 2 {
		t.Fatalf("a retransmission cost %.0f allocations, want at most 2 (no parse)", allocs)
	}
	for range 21 { // AllocsPerRun's warm-up run, then 20
		if res := dev.ExpectResponse(wait, 200); res.Via() == nil || !strings.Contains(res.Via().Value(), "light-unparsed") {
			t.Fatalf("answer to the retransmission: %v", res)
		}
	}

	// The PBX's retransmitted 200 is dropped unread too.
	again := []byte(sip.NewResponseFromRequest(first, 200, "OK", nil).String())
	fromPBX := sip.TransportReadProps{Transport: "UDP", LocalAddr: props.LocalAddr, RemoteAddr: mustUDPAddr(t, tb.pbx.Addr())}
	allocs = testing.AllocsPerRun(20, func() {
		if !tb.srv.lightRead(fromPBX, again) {
			t.Fatal("retransmitted response not taken by its light transaction")
		}
	})
	if allocs > 1 {
		t.Fatalf("a retransmitted response cost %.0f allocations, want at most 1 (no parse)", allocs)
	}
	dev.Quiet(300 * time.Millisecond)
}

func mustUDPAddr(t *testing.T, addr string) *net.UDPAddr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestLightSweep: the janitor frees what is due, keeps the rest in order,
// and reuses the front of its queue.
func TestLightSweep(t *testing.T) {
	var lt lightTable
	t0 := time.Now()
	add := func(i int, at time.Time) {
		tx := &lightServerTx{key: "k" + itoa(i)}
		lt.servers.Store(tx.key, tx)
		lt.queue = append(lt.queue, lightExpiry{at: at, server: tx})
	}
	for i := range 3000 {
		add(i, t0.Add(time.Duration(i)*time.Millisecond))
	}
	lt.sweep(t0.Add(1999 * time.Millisecond))
	if s, _ := lt.pending(); s != 1000 {
		t.Fatalf("after the first sweep %d kept, want 1000", s)
	}
	if lt.head != 0 || len(lt.queue) != 1000 || lt.queue[0].server.key != "k2000" {
		t.Fatalf("queue not compacted: head %d, len %d", lt.head, len(lt.queue))
	}
	// A transaction replaced under the same key is not removed with the
	// old one.
	newer := &lightServerTx{key: "k2000"}
	lt.servers.Store("k2000", newer)
	lt.sweep(t0.Add(time.Hour))
	if v, ok := lt.servers.Load("k2000"); !ok || v != newer {
		t.Fatal("the newer transaction under a reused key was removed")
	}
	if s, _ := lt.pending(); s != 1 || lt.head != 1000 {
		t.Fatalf("after the last sweep: %d kept, head %d", s, lt.head)
	}

	// Drained after a peak, the queue lets its large array go.
	for i := range 5000 {
		add(i, t0)
	}
	lt.sweep(t0.Add(time.Hour))
	if lt.queue != nil || lt.head != 0 {
		t.Fatalf("drained queue kept: len %d, cap %d, head %d", len(lt.queue), cap(lt.queue), lt.head)
	}
}

// TestLightSweepKeeps: the sweep keeps, T4 at a time, an INVITE branch let
// go without a final answer (up to Timer B) and a failure waiting for its
// ACK (up to Timer H); then they go.
func TestLightSweepKeeps(t *testing.T) {
	var lt lightTable
	t0 := time.Now()
	branch := &lightClientTx{branch: "b1", invite: &sip.Request{}, started: t0}
	lt.clients.Store(branch.branch, branch)
	failed := &lightInviteTx{key: "i1", final: 486, finalAt: t0, timerG: time.NewTimer(time.Hour)}
	lt.servers.Store(failed.key, failed)
	lt.queue = append(lt.queue, lightExpiry{at: t0, client: branch}, lightExpiry{at: t0, invite: failed})

	lt.sweep(t0.Add(time.Second))
	if s, c := lt.pending(); s != 1 || c != 1 {
		t.Fatalf("%d server and %d client transactions kept, want both", s, c)
	}
	branch.mu.Lock()
	branch.final = 487
	branch.mu.Unlock()
	failed.ack()
	lt.sweep(t0.Add(time.Second + sip.T4))
	if s, c := lt.pending(); s != 0 || c != 0 {
		t.Fatalf("once answered and acknowledged: %d server and %d client transactions kept, want none", s, c)
	}

	// Without an answer or an ACK, they go at Timers B and H.
	branch = &lightClientTx{branch: "b2", invite: &sip.Request{}, started: t0}
	lt.clients.Store(branch.branch, branch)
	failed = &lightInviteTx{key: "i2", final: 486, finalAt: t0, timerG: time.NewTimer(time.Hour)}
	lt.servers.Store(failed.key, failed)
	lt.queue = append(lt.queue, lightExpiry{at: t0, client: branch}, lightExpiry{at: t0, invite: failed})
	lt.sweep(t0.Add(sip.Timer_B))
	if s, c := lt.pending(); s != 0 || c != 0 {
		t.Fatalf("after Timers B and H: %d server and %d client transactions kept, want none", s, c)
	}
}

// TestLightRegisterDrain: a drain waits for a REGISTER in flight on a
// light transaction, and a new one meanwhile gets 503.
func TestLightRegisterDrain(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	dev.Send(tb.udp, register(dev, "light-drain-1"))
	in := tb.pbx.ExpectRequest(wait, sip.REGISTER)
	drained := startDrain(t, tb.srv, "a REGISTER in flight")
	other := proxytest.NewUDP(t, "")
	other.Send(tb.udp, register(other, "light-drain-2"))
	if res := other.ExpectResponse(wait, 503); res.GetHeader("Retry-After") == nil {
		t.Fatal("503 without Retry-After")
	}
	tb.pbx.Reply(tb.udp, in, 200, "OK", "Contact: <sip:1001@"+dev.Addr()+">;expires=600")
	dev.ExpectResponse(wait, 200)
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Drain did not return after the REGISTER was answered")
	}
}

// TestShallowCopy: what the forwarder and the registrar do to the copy
// of a light request leaves the request itself as received.
func TestShallowCopy(t *testing.T) {
	m, err := sip.ParseMessage([]byte("REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:1001@pbx.test>;tag=a\r\nTo: <sip:1001@pbx.test>\r\nCall-ID: cid-1\r\nCSeq: 7 REGISTER\r\n" +
		"Contact: <sip:1001@10.0.0.1:5060;pn-prid=tok>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	req := m.(*sip.Request)
	before := req.String()
	out := shallowCopy(req)
	out.MaxForwards().Dec()
	for out.RemoveHeader("Contact") {
	}
	out.RemoveHeader("Expires")
	out.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "x", Host: "sw.test"}})
	out.PrependHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "sw.test", Params: sip.NewParams()})
	out.Recipient = sip.Uri{Scheme: "sip", Host: "pbx.internal"}
	if got := req.String(); got != before {
		t.Fatalf("request changed by editing its copy:\n%s\nwas:\n%s", got, before)
	}
	if mf := out.MaxForwards(); mf == nil || *mf != 69 {
		t.Fatalf("copy's Max-Forwards %v", mf)
	}
	if c := out.Contact(); c == nil || c.Address.User != "x" {
		t.Fatalf("copy's Contact %v", c)
	}
}

// TestLightCallRequests: over UDP the INVITE both ways, the ACK for a 2xx
// and the BYE of a call run on light transactions. A failure is
// acknowledged hop by hop, again when the PBX resends it, and not relayed
// twice; the caller's ACK for it still reaches the INVITE's server
// transaction, which then stops resending the failure (RFC 3261 §17.2.1,
// Timer G). A 2xx the PBX resends reaches the caller (RFC 6026).
func TestLightCallRequests(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")

	dev.Send(tb.udp, invite(dev, "sip:1002@pbx.test", "lfail"))
	in := tb.pbx.ExpectRequest(wait, sip.INVITE)
	if s, c := tb.srv.light.pending(); s != 1 || c != 1 {
		t.Fatalf("INVITE: %d server and %d client light transactions, want 1 and 1", s, c)
	}
	tb.pbx.Reply(tb.udp, in, 486, "Busy Here")
	busy := dev.ExpectResponse(wait, 486)
	checkAck := func(ack *sip.Request) {
		t.Helper()
		if mustBranch(ack) != mustBranch(in) || ack.CSeq().SeqNo != in.CSeq().SeqNo || ack.Recipient.String() != in.Recipient.String() {
			t.Fatalf("ACK for the failure:\n%s\nwant the INVITE's branch, CSeq number and Request-URI:\n%s", ack, in)
		}
		if tag, _ := ack.To().Params.Get("tag"); tag == "" {
			t.Fatalf("ACK without the response's To tag: %s", ack.To().Value())
		}
	}
	checkAck(tb.pbx.ExpectRequest(wait, sip.ACK)) // hop by hop, from the proxy
	tb.pbx.Reply(tb.udp, in, 486, "Busy Here")    // lost ACK: the PBX resends
	checkAck(tb.pbx.ExpectRequest(wait, sip.ACK))
	toTag, _ := busy.To().Params.Get("tag")
	dev.Send(tb.udp, "ACK sip:1002@pbx.test SIP/2.0\nVia: SIP/2.0/UDP "+dev.Addr()+";branch=z9hG4bK-lfail;rport\n"+
		"Max-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=ft-lfail\nTo: <sip:1002@pbx.test>;tag="+toTag+
		"\nCall-ID: lfail\nCSeq: 1 ACK\n\n")
	dev.Quiet(1200 * time.Millisecond) // unACKed, the 486 would come again after T1
	tb.pbx.Quiet(100 * time.Millisecond)

	dev.Send(tb.udp, invite(dev, "sip:1002@pbx.test", "lok"))
	in = tb.pbx.ExpectRequest(wait, sip.INVITE)
	rr := in.GetHeaders("Record-Route")[0].(*sip.RecordRouteHeader).Address
	tb.pbx.Reply(tb.udp, in, 200, "OK", "Contact: <sip:1002@"+tb.pbx.Addr()+">")
	ok := dev.ExpectResponse(wait, 200)
	tb.pbx.Reply(tb.udp, in, 200, "OK", "Contact: <sip:1002@"+tb.pbx.Addr()+">")
	dev.ExpectResponse(wait, 200) // relayed again
	toTag, _ = ok.To().Params.Get("tag")
	dialog := "Route: <" + rr.String() + ">\nMax-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=ft-lok\n" +
		"To: <sip:1002@pbx.test>;tag=" + toTag + "\nCall-ID: lok\n"
	dev.Send(tb.udp, "ACK sip:1002@"+tb.pbx.Addr()+" SIP/2.0\nVia: SIP/2.0/UDP "+dev.Addr()+
		";branch=z9hG4bK-lok-ack;rport\n"+dialog+"CSeq: 1 ACK\n\n")
	if ack := tb.pbx.ExpectRequest(wait, sip.ACK); ack.Route() != nil {
		t.Errorf("ACK kept our Route: %s", ack.Route().Value())
	}
	if s, c := tb.srv.light.pending(); s != 2 || c != 2 {
		t.Fatalf("after the ACK: %d server and %d client light transactions, want 2 and 2 (the INVITEs)", s, c)
	}

	bye := "BYE sip:1002@" + tb.pbx.Addr() + " SIP/2.0\nVia: SIP/2.0/UDP " + dev.Addr() +
		";branch=z9hG4bK-lok-bye;rport\n" + dialog + "CSeq: 2 BYE\n\n"
	dev.Send(tb.udp, bye)
	in = tb.pbx.ExpectRequest(wait, sip.BYE)
	if s, c := tb.srv.light.pending(); s != 3 || c != 3 {
		t.Fatalf("BYE: %d server and %d client light transactions, want 3 and 3", s, c)
	}
	tb.pbx.Reply(tb.udp, in, 200, "OK")
	dev.ExpectResponse(wait, 200)
	dev.Send(tb.udp, bye) // a retransmission, answered from the transaction
	dev.ExpectResponse(wait, 200)
	tb.pbx.Quiet(300 * time.Millisecond)
}

func TestLightMethod(t *testing.T) {
	for in, want := range map[string]bool{
		"REGISTER sip:x SIP/2.0": true, "BYE sip:x SIP/2.0": true, "OPTIONS sip:x SIP/2.0": true,
		"MESSAGE sip:x SIP/2.0": true, "FOOBAR sip:x SIP/2.0": true,
		"INVITE sip:x SIP/2.0": false, "ACK sip:x SIP/2.0": false, "CANCEL sip:x SIP/2.0": false,
		"SIP/2.0 200 OK": false, "bye sip:x SIP/2.0": false, " BYE sip:x": false, "BYE": false, "": false,
		"\r\n\r\n": false, "AVERYLONGMETHODNAMEXXXXXXXX sip:x SIP/2.0": false,
	} {
		if got := lightMethod([]byte(in)); got != want {
			t.Errorf("lightMethod(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestLightInviteTimers: an INVITE the PBX does not answer is sent again
// after T1, then 2*T1 later (Timer A), and the caller gets 408 at Timer B;
// once the PBX sends a provisional response, neither timer runs (the
// relay's Timer C does).
func TestLightInviteTimers(t *testing.T) {
	tb := newTestBed(t)
	tb.srv.timerF.Store(int64(1600 * time.Millisecond)) // sent, T1, 3*T1, then the timeout
	dev := proxytest.NewUDP(t, "")
	dev.Send(tb.udp, invite(dev, "sip:1002@pbx.test", "ltimer-b"))
	var at []time.Duration
	start := time.Now()
	for len(at) < 4 {
		m, err := tb.pbx.Recv(3 * time.Second)
		if err != nil {
			break
		}
		if r, ok := m.(*sip.Request); ok && r.Method == sip.INVITE {
			at = append(at, time.Since(start))
		}
	}
	if len(at) != 3 {
		t.Fatalf("PBX got %d copies (at %v), want 3 (sent, T1, 3*T1)", len(at), at)
	}
	if gap := at[2] - at[1]; gap < 900*time.Millisecond {
		t.Fatalf("second retransmission %v after the first, want about 2*T1", gap)
	}
	dev.ExpectResponse(wait, 408)

	dev2 := proxytest.NewUDP(t, "") // dev goes on hearing its 408 until it ACKs
	dev2.Send(tb.udp, invite(dev2, "sip:1002@pbx.test", "ltimer-c"))
	in := tb.pbx.ExpectRequest(wait, sip.INVITE)
	tb.pbx.Reply(tb.udp, in, 180, "Ringing")
	dev2.ExpectResponse(wait, 180)
	tb.pbx.Quiet(2 * time.Second)      // no retransmission
	dev2.Quiet(200 * time.Millisecond) // and no 408
	tb.pbx.Reply(tb.udp, in, 486, "Busy Here")
	dev2.ExpectResponse(wait, 486)
}

// TestLightInviteServer: the light INVITE server transaction absorbs a
// retransmitted INVITE, answering it with the last provisional response;
// resends a failure on Timer G until the ACK comes (RFC 3261 §17.2.1);
// answers a CANCEL 200 and the INVITE 487, and a retransmitted CANCEL 200
// again without cancelling twice.
func TestLightInviteServer(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	inv := invite(dev, "sip:1002@pbx.test", "lsrv")
	dev.Send(tb.udp, inv)
	dev.ExpectResponse(wait, 100)
	in := tb.pbx.ExpectRequest(wait, sip.INVITE)
	tb.pbx.Reply(tb.udp, in, 180, "Ringing")
	dev.ExpectResponse(wait, 180)
	dev.Send(tb.udp, inv)
	dev.ExpectResponse(wait, 180) // the last provisional again
	tb.pbx.Quiet(300 * time.Millisecond)

	tb.pbx.Reply(tb.udp, in, 486, "Busy Here")
	busy := dev.ExpectResponse(wait, 486)
	tb.pbx.ExpectRequest(wait, sip.ACK)
	start := time.Now()
	dev.ExpectResponse(wait, 486) // no ACK yet: Timer G
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("486 resent after %v, want about T1", d)
	}
	toTag, _ := busy.To().Params.Get("tag")
	dev.Send(tb.udp, "ACK sip:1002@pbx.test SIP/2.0\nVia: SIP/2.0/UDP "+dev.Addr()+";branch=z9hG4bK-lsrv;rport\n"+
		"Max-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=ft-lsrv\nTo: <sip:1002@pbx.test>;tag="+toTag+
		"\nCall-ID: lsrv\nCSeq: 1 ACK\n\n")
	dev.Quiet(1500 * time.Millisecond)
	tb.pbx.Quiet(100 * time.Millisecond)

	dev.Send(tb.udp, invite(dev, "sip:1002@pbx.test", "lcancel"))
	in = tb.pbx.ExpectRequest(wait, sip.INVITE)
	tb.pbx.Reply(tb.udp, in, 180, "Ringing")
	dev.ExpectResponse(wait, 180)
	cancel := "CANCEL sip:1002@pbx.test SIP/2.0\nVia: SIP/2.0/UDP " + dev.Addr() + ";branch=z9hG4bK-lcancel;rport\n" +
		"Max-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=ft-lcancel\nTo: <sip:1002@pbx.test>\nCall-ID: lcancel\nCSeq: 1 CANCEL\n\n"
	dev.Send(tb.udp, cancel)
	got := map[string]bool{}
	for len(got) < 2 {
		if r, ok := dev.Expect(wait).(*sip.Response); ok && r.StatusCode >= 200 {
			got[itoa(r.StatusCode)+" "+string(r.CSeq().MethodName)] = true
		}
	}
	if !got["200 CANCEL"] || !got["487 INVITE"] {
		t.Fatalf("device got %v, want 200 for the CANCEL and 487 for the INVITE", got)
	}
	c := tb.pbx.ExpectRequest(wait, sip.CANCEL)
	dev.Send(tb.udp, cancel) // retransmitted: answered again, not cancelled again
	if r := dev.ExpectResponse(wait, 200); r.CSeq().MethodName != sip.CANCEL {
		t.Fatalf("answer to the retransmitted CANCEL: %v", r)
	}
	tb.pbx.Reply(tb.udp, c, 200, "OK")
	tb.pbx.Reply(tb.udp, in, 487, "Request Terminated")
	tb.pbx.ExpectRequest(wait, sip.ACK)
	tb.pbx.Quiet(300 * time.Millisecond)
}

// TestLightResponseToViaPort: without rport in the top Via, a response
// goes to the source address and the Via's port (RFC 3261 §18.2.2), as
// on sipgo's transactions; with rport, to the source port (RFC 3581).
func TestLightResponseToViaPort(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	listener := proxytest.NewUDP(t, "") // the port the Via names
	for _, m := range []string{"OPTIONS", "INVITE"} {
		dev.Send(tb.udp, m+" sip:1002@example.com SIP/2.0\nVia: SIP/2.0/UDP "+listener.Addr()+";branch=z9hG4bK-vp"+m+
			"\nMax-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=vp\nTo: <sip:1002@example.com>\nCall-ID: vp-"+m+
			"\nCSeq: 1 "+m+"\nContact: <sip:1001@"+dev.Addr()+">\n\n")
		if r := listener.ExpectResponse(wait, 403); r.CSeq().MethodName != sip.RequestMethod(m) {
			t.Fatalf("got %v", r)
		}
	}
	dev.Quiet(200 * time.Millisecond)
}

// TestAckBeforeBye: a BYE read right behind the ACK of its dialog is sent
// on after it, never before (a UA may answer a BYE before the ACK 481).
func TestAckBeforeBye(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	dev.Send(tb.udp, invite(dev, "sip:1002@pbx.test", "order"))
	in := tb.pbx.ExpectRequest(wait, sip.INVITE)
	rr := in.GetHeaders("Record-Route")[0].(*sip.RecordRouteHeader).Address
	tb.pbx.Reply(tb.udp, in, 200, "OK", "Contact: <sip:1002@"+tb.pbx.Addr()+">")
	ok := dev.ExpectResponse(wait, 200)
	toTag, _ := ok.To().Params.Get("tag")
	dialog := "Route: <" + rr.String() + ">\nMax-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=ft-order\n" +
		"To: <sip:1002@pbx.test>;tag=" + toTag + "\nCall-ID: order\n"
	for i := range 40 {
		n := itoa(i)
		dev.Send(tb.udp, "ACK sip:1002@"+tb.pbx.Addr()+" SIP/2.0\nVia: SIP/2.0/UDP "+dev.Addr()+
			";branch=z9hG4bK-order-ack"+n+";rport\n"+dialog+"CSeq: 1 ACK\n\n")
		dev.Send(tb.udp, "BYE sip:1002@"+tb.pbx.Addr()+" SIP/2.0\nVia: SIP/2.0/UDP "+dev.Addr()+
			";branch=z9hG4bK-order-bye"+n+";rport\n"+dialog+"CSeq: "+itoa(i+2)+" BYE\n\n")
		tb.pbx.ExpectRequest(wait, sip.ACK)
		bye := tb.pbx.ExpectRequest(wait, sip.BYE)
		tb.pbx.Reply(tb.udp, bye, 200, "OK")
		dev.ExpectResponse(wait, 200)
	}
}

func TestIdleWorkersLastInFirstOut(t *testing.T) {
	var w idleWorkers
	a, b, c := &idleWorker{}, &idleWorker{}, &idleWorker{}
	w.push(a)
	w.push(b)
	w.push(c)
	if got := w.pop(); got != c {
		t.Fatal("pop did not take the worker idle the shortest time")
	}
	w.push(c)
	if !w.remove(b) || w.remove(b) {
		t.Fatal("remove: want true once, then false")
	}
	if w.pop() != c || w.pop() != a || w.pop() != nil || w.len() != 0 {
		t.Fatal("stack order lost after a remove")
	}
}

// TestWorkersReusedLastInFirstOut: after a peak of five REGISTERs at once,
// requests one at a time all go to the worker that finished last; the
// other four wait untouched (to time out), rather than every worker of the
// peak taking its turn.
func TestWorkersReusedLastInFirstOut(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	const peak = 5
	var reqs []*sip.Request
	for i := range peak {
		dev.Send(tb.udp, register(dev, fmt.Sprintf("peak-%d", i)))
	}
	for range peak {
		reqs = append(reqs, tb.pbx.ExpectRequest(wait, sip.REGISTER))
	}
	for _, r := range reqs {
		tb.pbx.Reply(tb.udp, r, 200, "OK", "Contact: <sip:1001@"+dev.Addr()+">;expires=600")
	}
	for range peak {
		dev.ExpectResponse(wait, 200)
	}
	snapshot := func() []*idleWorker {
		t.Helper()
		deadline := time.Now().Add(wait)
		for tb.srv.idle.len() != peak {
			if time.Now().After(deadline) {
				t.Fatalf("%d idle workers, want %d", tb.srv.idle.len(), peak)
			}
			time.Sleep(time.Millisecond)
		}
		tb.srv.idle.mu.Lock()
		defer tb.srv.idle.mu.Unlock()
		return append([]*idleWorker(nil), tb.srv.idle.stack...)
	}
	before := snapshot()
	for i := range 5 {
		dev.Send(tb.udp, register(dev, fmt.Sprintf("after-%d", i)))
		r := tb.pbx.ExpectRequest(wait, sip.REGISTER)
		tb.pbx.Reply(tb.udp, r, 200, "OK", "Contact: <sip:1001@"+dev.Addr()+">;expires=600")
		dev.ExpectResponse(wait, 200)
		after := snapshot()
		for j := range before {
			if after[j] != before[j] {
				t.Fatalf("request %d: idle workers reordered (position %d of %d changed)", i, j, peak)
			}
		}
	}
}
