package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sipwake/sipwake/proxy/proxytest"
)

const wait = 5 * time.Second

// testBed is a proxy with UDP and TCP listeners on 127.0.0.1, a fake PBX
// on 127.0.0.2 (trusted) serving pbx.test, and a module that resolves the
// Request-URI user "dev" to the device UA given by devTarget.
type testBed struct {
	srv       *Server
	pbx       *proxytest.UA
	udp, tcp  string
	devTarget atomic.Pointer[Target]
}

func newTestBed(t *testing.T) *testBed {
	t.Helper()
	tb := &testBed{}
	tb.pbx = proxytest.NewUDP(t, "127.0.0.2")
	srv := startServer(t, Config{
		NodeID:          "n1",
		Listen:          []Listen{{Network: "udp", Addr: "127.0.0.1:0"}, {Network: "tcp", Addr: "127.0.0.1:0"}},
		TrustedSources:  []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		Upstream:        "sip:" + tb.pbx.Addr(),
		UpstreamDomains: []string{"pbx.test"},
		Logger:          testLogger(t),
	}, resolver{tb})
	tb.srv, tb.udp, tb.tcp = srv, srv.Addr("udp"), srv.Addr("tcp")
	return tb
}

// startServer starts a proxy with cfg and the Sanity module, then mods,
// and stops it when the test ends.
func startServer(t testing.TB, cfg Config, mods ...Module) *Server {
	t.Helper()
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Use(append([]Module{NewSanity(srv)}, mods...)...)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = srv.Stop(ctx)
	})
	return srv
}

// testLogger logs to a buffer printed when the test fails. (zaptest's
// logger panics when a connection reader logs its close after the test
// returned, which sipgo's per-connection goroutines may do.)
func testLogger(t *testing.T) *zap.Logger {
	buf := &lockedBuffer{}
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy log:\n%s", buf.String())
		}
	})
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(buf), zapcore.DebugLevel))
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type resolver struct{ tb *testBed }

func (resolver) Name() string { return "resolver" }
func (m resolver) Wrap(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, r *Request) {
		if t := m.tb.devTarget.Load(); r.Msg.Recipient.User == "dev" && t != nil && r.Trusted {
			r.Target = t
		}
		next.ServeSIP(ctx, r)
	})
}

func invite(from *proxytest.UA, ruri, callID string, extra ...string) string {
	tp := "UDP"
	if strings.HasPrefix(from.Addr(), "") && fromIsTCP(from) {
		tp = "TCP"
	}
	return "INVITE " + ruri + " SIP/2.0\n" +
		"Via: SIP/2.0/" + tp + " " + from.Addr() + ";branch=z9hG4bK-" + callID + ";rport\n" +
		"Max-Forwards: 70\n" +
		"From: <sip:1001@pbx.test>;tag=ft-" + callID + "\n" +
		"To: <" + ruri + ">\n" +
		"Call-ID: " + callID + "\n" +
		"CSeq: 1 INVITE\n" +
		"Contact: <sip:1001@" + from.Addr() + ">\n" +
		strings.Join(append(extra, ""), "\n") +
		"\n"
}

func fromIsTCP(u *proxytest.UA) bool { return u.Network() == "tcp" }

func TestOptionsToProxyAnsweredThenDraining(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	opt := func(id string) string {
		return "OPTIONS sip:" + tb.udp + " SIP/2.0\nVia: SIP/2.0/UDP " + dev.Addr() + ";branch=z9hG4bK-" + id + "\n" +
			"Max-Forwards: 0\nFrom: <sip:probe@x>;tag=1\nTo: <sip:" + tb.udp + ">\nCall-ID: " + id + "\nCSeq: 1 OPTIONS\n\n"
	}
	dev.Send(tb.udp, opt("o1"))
	dev.ExpectResponse(wait, 200)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := tb.srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	dev.Send(tb.udp, opt("o2"))
	res := dev.ExpectResponse(wait, 503)
	if res.GetHeader("Retry-After") == nil {
		t.Error("503 while draining without Retry-After")
	}
	dev.Send(tb.udp, invite(dev, "sip:1002@pbx.test", "c-drain"))
	dev.ExpectResponse(wait, 503)
	tb.pbx.Quiet(300 * time.Millisecond)
}

func TestCallDeviceToPBXAndBack(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	dev.Send(tb.udp, invite(dev, "sip:1002@pbx.test", "call1"))

	in := tb.pbx.ExpectRequest(wait, sip.INVITE)
	vias := in.GetHeaders("Via")
	if len(vias) != 2 {
		t.Fatalf("want 2 Via, got %d", len(vias))
	}
	top := vias[0].(*sip.ViaHeader)
	if b, _ := top.Params.Get("branch"); !strings.HasPrefix(b, branchPrefix) {
		t.Errorf("our branch %q lacks prefix", b)
	}
	devVia := vias[1].(*sip.ViaHeader)
	if rp, _ := devVia.Params.Get("rport"); rp != itoa(dev.Port()) {
		t.Errorf("device Via rport=%q, want %d", rp, dev.Port())
	}
	if mf := in.MaxForwards(); mf == nil || *mf != 69 {
		t.Errorf("Max-Forwards %v, want 69", mf)
	}
	rr := in.GetHeaders("Record-Route")
	if len(rr) != 1 {
		t.Fatalf("want one Record-Route (same listener both legs), got %d", len(rr))
	}
	rru := rr[0].(*sip.RecordRouteHeader).Address
	if !rru.UriParams.Has("lr") || rru.User == "" {
		t.Errorf("record-route %s: want lr and a flow token", rru.String())
	}

	tb.pbx.Reply(tb.udp, in, 180, "Ringing")
	r180 := dev.ExpectResponse(wait, 180)
	if len(r180.GetHeaders("Via")) != 1 {
		t.Errorf("our Via not removed from 180")
	}
	tb.pbx.Reply(tb.udp, in, 200, "OK", "Contact: <sip:1002@"+tb.pbx.Addr()+">")
	ok := dev.ExpectResponse(wait, 200)
	toTag, _ := ok.To().Params.Get("tag")

	// ACK from the device along the route set reaches the PBX.
	route := "Route: <" + rru.String() + ">"
	dev.Send(tb.udp, "ACK sip:1002@"+tb.pbx.Addr()+" SIP/2.0\nVia: SIP/2.0/UDP "+dev.Addr()+";branch=z9hG4bK-ack1;rport\n"+
		route+"\nMax-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=ft-call1\nTo: <sip:1002@pbx.test>;tag="+toTag+
		"\nCall-ID: call1\nCSeq: 1 ACK\n\n")
	tb.pbx.ExpectRequest(wait, sip.ACK)

	// BYE from the PBX (trusted) along the route set reaches the device.
	tb.pbx.Send(tb.udp, "BYE sip:1001@10.9.9.9:5060 SIP/2.0\nVia: SIP/2.0/UDP "+tb.pbx.Addr()+";branch=z9hG4bK-bye1;rport\n"+
		route+"\nMax-Forwards: 70\nFrom: <sip:1002@pbx.test>;tag="+toTag+"\nTo: <sip:1001@pbx.test>;tag=ft-call1"+
		"\nCall-ID: call1\nCSeq: 2 BYE\n\n")
	bye := dev.ExpectRequest(wait, sip.BYE)
	if bye.Route() != nil {
		t.Errorf("our Route not removed: %s", bye.Route().Value())
	}
	dev.Reply(tb.udp, bye, 200, "OK")
	tb.pbx.ExpectResponse(wait, 200)
}

func TestForgedFlowTokenRefused(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	dev.Send(tb.udp, invite(dev, "sip:1002@pbx.test", "call2"))
	in := tb.pbx.ExpectRequest(wait, sip.INVITE)
	rru := in.GetHeaders("Record-Route")[0].(*sip.RecordRouteHeader).Address
	tb.pbx.Reply(tb.udp, in, 486, "Busy Here")
	dev.ExpectResponse(wait, 486)

	// The same token in another dialog is refused.
	other := proxytest.NewUDP(t, "127.0.0.3")
	other.Send(tb.udp, "BYE sip:victim@127.0.0.1:9 SIP/2.0\nVia: SIP/2.0/UDP "+other.Addr()+";branch=z9hG4bK-f1\n"+
		"Route: <"+rru.String()+">\nMax-Forwards: 70\nFrom: <sip:x@y>;tag=a\nTo: <sip:v@w>;tag=b\nCall-ID: not-call2\nCSeq: 5 BYE\n\n")
	other.ExpectResponse(wait, 403)
}

func TestNoOpenRelay(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	cases := []struct {
		name string
		ua   *proxytest.UA
		ruri string
		want int
	}{
		{"device to foreign domain", dev, "sip:someone@evil.example", 403},
		{"device to an address", dev, "sip:someone@127.0.0.2:5999", 403},
		{"trusted source to unknown user", nil, "sip:nobody@pbx.test", 404},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ua := c.ua
			if ua == nil {
				ua = proxytest.NewUDP(t, "127.0.0.2")
			}
			ua.Send(tb.udp, invite(ua, c.ruri, "relay"+itoa(i)))
			ua.ExpectResponse(wait, c.want)
		})
	}
	tb.pbx.Quiet(300 * time.Millisecond)
}

func TestRequestValidation(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	cases := []struct {
		name  string
		ruri  string
		extra []string
		mf    string
		want  int
	}{
		{"max-forwards zero", "sip:1002@pbx.test", nil, "0", 483},
		// §16.3 step 3 comes before the routing decision (403 here).
		{"max-forwards zero, foreign domain", "sip:1002@example.com", nil, "0", 483},
		{"proxy-require", "sip:1002@pbx.test", []string{"Proxy-Require: foo, bar"}, "70", 420},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := invite(dev, c.ruri, "val"+itoa(i), c.extra...)
			msg = strings.Replace(msg, "Max-Forwards: 70", "Max-Forwards: "+c.mf, 1)
			dev.Send(tb.udp, msg)
			res := dev.ExpectResponse(wait, c.want)
			if c.want == 420 && !strings.Contains(res.GetHeader("Unsupported").Value(), "foo") {
				t.Errorf("420 without Unsupported: foo")
			}
		})
	}
	tb.pbx.Quiet(300 * time.Millisecond)
}

func TestLoopDetected(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	dev.Send(tb.udp, invite(dev, "sip:1002@pbx.test", "loop1"))
	in := tb.pbx.ExpectRequest(wait, sip.INVITE)
	// The request comes back to us unchanged (same Request-URI), one more
	// hop on top: a loop.
	back := proxytest.NewUDP(t, "127.0.0.4")
	var b strings.Builder
	b.WriteString("INVITE " + in.Recipient.String() + " SIP/2.0\r\n")
	b.WriteString("Via: SIP/2.0/UDP " + back.Addr() + ";branch=z9hG4bK-back\r\n")
	for _, h := range in.Headers() {
		if h.Name() == "Content-Length" {
			continue
		}
		b.WriteString(h.Name() + ": " + h.Value() + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	back.SendRaw(tb.udp, []byte(b.String()))
	back.ExpectResponse(wait, 482)
}

func TestCancelForwarded(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	inv := invite(dev, "sip:1002@pbx.test", "cancel1")
	dev.Send(tb.udp, inv)
	in := tb.pbx.ExpectRequest(wait, sip.INVITE)
	tb.pbx.Reply(tb.udp, in, 180, "Ringing")
	dev.ExpectResponse(wait, 180)

	dev.Send(tb.udp, "CANCEL sip:1002@pbx.test SIP/2.0\nVia: SIP/2.0/UDP "+dev.Addr()+";branch=z9hG4bK-cancel1;rport\n"+
		"Max-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=ft-cancel1\nTo: <sip:1002@pbx.test>\nCall-ID: cancel1\nCSeq: 1 CANCEL\n"+
		"Reason: SIP;cause=487;text=\"user hung up\"\n\n")
	// 200 for the CANCEL and 487 for the INVITE, in either order.
	got := map[int]bool{}
	for len(got) < 2 {
		m := dev.Expect(wait)
		if r, ok := m.(*sip.Response); ok && r.StatusCode != 100 && r.StatusCode != 180 {
			got[r.StatusCode] = true
		}
	}
	if !got[200] || !got[487] {
		t.Fatalf("device got %v, want 200 (CANCEL) and 487", got)
	}
	c := tb.pbx.ExpectRequest(wait, sip.CANCEL)
	if v, _ := c.Via().Params.Get("branch"); v != mustBranch(in) {
		t.Errorf("CANCEL branch %s differs from INVITE's %s", v, mustBranch(in))
	}
	if c.GetHeader("Reason") == nil {
		t.Errorf("CANCEL lost the caller's Reason")
	}
	tb.pbx.Reply(tb.udp, c, 200, "OK")
	tb.pbx.Reply(tb.udp, in, 487, "Request Terminated")
	ack := tb.pbx.ExpectRequest(wait, sip.ACK)
	if v, _ := ack.Via().Params.Get("branch"); v != mustBranch(in) {
		t.Errorf("ACK for 487 has branch %s, want the INVITE's", v)
	}
}

func TestTCPDeviceDoubleRecordRouteAndFlow(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.DialTCP(t, "", tb.tcp)
	dev.Send("", invite(dev, "sip:1002@pbx.test", "tcp1"))
	in := tb.pbx.ExpectRequest(wait, sip.INVITE)
	rr := in.GetHeaders("Record-Route")
	if len(rr) != 2 {
		t.Fatalf("want a doubled Record-Route across TCP/UDP, got %d", len(rr))
	}
	top := rr[0].(*sip.RecordRouteHeader).Address
	if tp, _ := top.UriParams.Get("transport"); tp != "udp" {
		t.Errorf("top Record-Route faces the PBX leg: transport=%q", tp)
	}
	tb.pbx.Reply(tb.udp, in, 200, "OK", "Contact: <sip:1002@"+tb.pbx.Addr()+">")
	ok := dev.ExpectResponse(wait, 200)
	toTag, _ := ok.To().Params.Get("tag")
	// The PBX's BYE uses the reversed route set and must come down the
	// device's own TCP connection.
	r0 := rr[0].(*sip.RecordRouteHeader).Address
	r1 := rr[1].(*sip.RecordRouteHeader).Address
	tb.pbx.Send(tb.udp, "BYE sip:1001@192.0.2.1:5060;transport=tcp SIP/2.0\nVia: SIP/2.0/UDP "+tb.pbx.Addr()+";branch=z9hG4bK-tbye;rport\n"+
		"Route: <"+r0.String()+">\nRoute: <"+r1.String()+">\nMax-Forwards: 70\nFrom: <sip:1002@pbx.test>;tag="+toTag+
		"\nTo: <sip:1001@pbx.test>;tag=ft-tcp1\nCall-ID: tcp1\nCSeq: 2 BYE\n\n")
	bye := dev.ExpectRequest(wait, sip.BYE)
	dev.Reply("", bye, 200, "OK")
	tb.pbx.ExpectResponse(wait, 200)
}

func TestTrustedToResolvedDevice(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	u := sip.Uri{Scheme: "sip", User: "1001", Host: "10.0.0.9", Port: 5060}
	tb.devTarget.Store(&Target{URI: &u, Dest: dev.Addr(), Transport: "UDP", Flow: true, Device: true})
	tb.pbx.Send(tb.udp, invite(tb.pbx, "sip:dev@"+tb.udp, "pbx1"))
	in := dev.ExpectRequest(wait, sip.INVITE)
	if in.Recipient.User != "1001" || in.Recipient.Host != "10.0.0.9" {
		t.Errorf("Request-URI %s, want the device contact", in.Recipient.String())
	}
	dev.Reply(tb.udp, in, 486, "Busy Here")
	tb.pbx.ExpectResponse(wait, 486)
	dev.ExpectRequest(wait, sip.ACK) // hop-by-hop ACK for the 486

	// The same request from an untrusted source is not resolved.
	other := proxytest.NewUDP(t, "127.0.0.5")
	other.Send(tb.udp, invite(other, "sip:dev@"+tb.udp, "pbx2"))
	other.ExpectResponse(wait, 403)
	dev.Quiet(300 * time.Millisecond)
}

func mustBranch(r *sip.Request) string { b, _ := r.Via().Params.Get("branch"); return b }

func itoa(n int) string { return strconvItoa(n) }

// TestLargeRequestGoesOverTCP: a request over 1300 bytes for the UDP
// upstream is sent over TCP instead (RFC 3261 §18.1.1), with a TCP Via.
func TestLargeRequestGoesOverTCP(t *testing.T) {
	tb := newTestBed(t)
	tcpPBX := proxytest.ListenTCP(t, tb.pbx.Addr()) // same port as the UDP fake PBX
	dev := proxytest.NewUDP(t, "")
	sdp := "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0 8 101\n" +
		strings.Repeat("a=x-padding:0123456789012345678901234567890123456789\n", 30)
	msg := invite(dev, "sip:1002@pbx.test", "big1", "Content-Type: application/sdp") + sdp
	dev.Send(tb.udp, msg)
	in := tcpPBX.ExpectRequest(wait, sip.INVITE)
	if tp := in.Via().Transport; tp != "TCP" {
		t.Errorf("top Via transport %s, want TCP", tp)
	}
	if len(in.Body()) < 1300 {
		t.Errorf("body truncated to %d bytes", len(in.Body()))
	}
	tcpPBX.Reply("", in, 486, "Busy Here")
	dev.ExpectResponse(wait, 486)
	tb.pbx.Quiet(200 * time.Millisecond)
}

// TestDrainLetsTransactionsFinish: Drain waits for the transaction in
// flight, which completes normally, while new requests get 503.
func TestDrainLetsTransactionsFinish(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	dev.Send(tb.udp, invite(dev, "sip:1002@pbx.test", "inflight1"))
	in := tb.pbx.ExpectRequest(wait, sip.INVITE)

	drained := startDrain(t, tb.srv, "a transaction in flight")
	other := proxytest.NewUDP(t, "")
	other.Send(tb.udp, invite(other, "sip:1003@pbx.test", "new1"))
	other.ExpectResponse(wait, 503)

	tb.pbx.Reply(tb.udp, in, 200, "OK", "Contact: <sip:1002@"+tb.pbx.Addr()+">")
	ok := dev.ExpectResponse(wait, 200)
	// The call is in progress: the drain waits for it to end, and its
	// in-dialog requests still flow.
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) with a call in progress", err)
	case <-time.After(300 * time.Millisecond):
	}
	if n := tb.srv.Dialogs(); n != 1 {
		t.Fatalf("Dialogs = %d during the call, want 1", n)
	}
	toTag, _ := ok.To().Params.Get("tag")
	route := "Route: <" + in.GetHeader("Record-Route").(*sip.RecordRouteHeader).Address.String() + ">"
	dev.Send(tb.udp, "BYE sip:1002@"+tb.pbx.Addr()+" SIP/2.0\nVia: SIP/2.0/UDP "+dev.Addr()+";branch=z9hG4bK-dbye;rport\n"+
		route+"\nMax-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=ft-inflight1\nTo: <sip:1002@pbx.test>;tag="+toTag+
		"\nCall-ID: inflight1\nCSeq: 2 BYE\n\n")
	bye := tb.pbx.ExpectRequest(wait, sip.BYE)
	tb.pbx.Reply(tb.udp, bye, 200, "OK")
	dev.ExpectResponse(wait, 200)
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Drain did not return after the call ended")
	}
	if n := tb.srv.Dialogs(); n != 0 {
		t.Fatalf("Dialogs = %d after the BYE", n)
	}
}

// startDrain starts srv.Drain and fails the test if it returns within
// 300 ms, while what is still going on.
func startDrain(t *testing.T, srv *Server, what string) <-chan error {
	t.Helper()
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- srv.Drain(ctx)
	}()
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) with %s", err, what)
	case <-time.After(300 * time.Millisecond):
	}
	return drained
}

// TestCRLFKeepAlive: a double-CRLF ping on a TCP flow gets a CRLF pong
// (RFC 5626 §3.5.1) and the connection stays usable.
func TestCRLFKeepAlive(t *testing.T) {
	tb := newTestBed(t)
	c, err := net.DialTimeout("tcp", tb.tcp, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte("\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	pong := make([]byte, 2)
	if _, err := io.ReadFull(c, pong); err != nil || string(pong) != "\r\n" {
		t.Fatalf("pong %q, %v", pong, err)
	}
	opt := "OPTIONS sip:" + tb.tcp + ";transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP " + c.LocalAddr().String() + ";branch=z9hG4bK-ka1\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:probe@x>;tag=1\r\nTo: <sip:" + tb.tcp + ">\r\nCall-ID: ka1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(opt)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SIP/2.0 200") {
		t.Fatalf("after the keep-alive: %q, %v", line, err)
	}
}

// TestMaxMessageBytes: a message over sip.max_message_bytes is dropped on
// UDP (the listener keeps serving) and closes its TCP connection.
func TestMaxMessageBytes(t *testing.T) {
	pbx := proxytest.NewUDP(t, "127.0.0.2")
	srv := startServer(t, Config{
		Listen:          []Listen{{Network: "udp", Addr: "127.0.0.1:0"}, {Network: "tcp", Addr: "127.0.0.1:0"}},
		Upstream:        "sip:" + pbx.Addr(),
		UpstreamDomains: []string{"pbx.test"},
		MaxMessageBytes: 1500,
		Logger:          testLogger(t),
	})

	dev := proxytest.NewUDP(t, "")
	big := invite(dev, "sip:1002@pbx.test", "big2", "Content-Type: text/plain") + strings.Repeat("x", 2000)
	dev.Send(srv.Addr("udp"), big)
	dev.Quiet(300 * time.Millisecond)
	pbx.Quiet(100 * time.Millisecond)
	dev.Send(srv.Addr("udp"), invite(dev, "sip:1002@pbx.test", "small2"))
	in := pbx.ExpectRequest(wait, sip.INVITE) // still serving
	pbx.Reply(srv.Addr("udp"), in, 486, "Busy Here")
	dev.ExpectResponse(wait, 486)

	c, err := net.DialTimeout("tcp", srv.Addr("tcp"), wait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte(proxytest.CRLF(big))); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("TCP connection still open after an oversized message (read %d bytes, %v)", n, err)
	}
}

// TestUpstreamProbe: with UpstreamProbe set, the PBX gets an OPTIONS at
// start and then periodically, and sipwake_upstream_up follows whether it
// answers, with no other traffic.
func TestUpstreamProbe(t *testing.T) {
	pbx := proxytest.NewUDP(t, "127.0.0.2")
	reg := prometheus.NewRegistry()
	srv := startServer(t, Config{
		NodeID:        "n1",
		Listen:        []Listen{{Network: "udp", Addr: "127.0.0.1:0"}},
		Upstream:      "sip:" + pbx.Addr(),
		UpstreamProbe: 300 * time.Millisecond,
		Logger:        testLogger(t),
		Registerer:    reg,
	})
	up := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "sipwake_upstream_up" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	opt := pbx.ExpectRequest(wait, sip.OPTIONS)
	pbx.Reply(srv.Addr("udp"), opt, 200, "OK")
	deadline := time.Now().Add(wait)
	for up() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("sipwake_upstream_up = %v after the PBX answered", up())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The PBX stops answering: the next probe times out and the gauge
	// drops.
	pbx.ExpectRequest(wait, sip.OPTIONS)
	deadline = time.Now().Add(wait)
	for up() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("sipwake_upstream_up = %v with the PBX silent", up())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCompletedNonInviteKeptT4: a completed non-INVITE server transaction
// over UDP absorbs retransmissions (answered again, nothing relayed) for
// T4, then is gone, as in Kamailio's tm (wt_timer), instead of holding its
// messages for Timer J's 32 s: a request retransmitted after that is
// relayed again.
func TestCompletedNonInviteKeptT4(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	msg := "MESSAGE sip:1002@pbx.test SIP/2.0\nVia: SIP/2.0/UDP " + dev.Addr() + ";branch=z9hG4bK-msg-t4;rport\n" +
		"Max-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=ft-t4\nTo: <sip:1002@pbx.test>\nCall-ID: t4\nCSeq: 1 MESSAGE\n" +
		"Content-Type: text/plain\nContent-Length: 2\n\nhi"
	dev.Send(tb.udp, msg)
	in := tb.pbx.ExpectRequest(wait, sip.MESSAGE)
	tb.pbx.Reply(tb.udp, in, 200, "OK")
	dev.ExpectResponse(wait, 200)

	time.Sleep(sip.T4 / 2)
	dev.Send(tb.udp, msg) // within T4: answered from the transaction
	dev.ExpectResponse(wait, 200)
	tb.pbx.Quiet(300 * time.Millisecond)

	time.Sleep(sip.T4/2 + time.Second)
	dev.Send(tb.udp, msg) // after T4: a new transaction
	again := tb.pbx.ExpectRequest(wait, sip.MESSAGE)
	tb.pbx.Reply(tb.udp, again, 200, "OK")
	dev.ExpectResponse(wait, 200)
}

// TestInviteAcceptedKeptT4: after a 2xx both INVITE transactions live T4
// instead of Timer L/M's 32 s: meanwhile an INVITE retransmission is
// absorbed; then a 2xx the PBX retransmits still reaches the caller
// (relayed without a transaction, RFC 6026), and an INVITE retransmission
// is relayed as a new request.
func TestInviteAcceptedKeptT4(t *testing.T) {
	tb := newTestBed(t)
	dev := proxytest.NewUDP(t, "")
	inv := invite(dev, "sip:1002@pbx.test", "acc-t4")
	dev.Send(tb.udp, inv)
	dev.ExpectResponse(wait, 100)
	in := tb.pbx.ExpectRequest(wait, sip.INVITE)
	ok := "Contact: <sip:1002@" + tb.pbx.Addr() + ">"
	tb.pbx.Reply(tb.udp, in, 200, "OK", ok)
	dev.ExpectResponse(wait, 200)

	time.Sleep(sip.T4 / 2)
	dev.Send(tb.udp, inv) // within T4: absorbed by the server transaction
	tb.pbx.Quiet(300 * time.Millisecond)

	time.Sleep(sip.T4/2 + time.Second)
	tb.pbx.Reply(tb.udp, in, 200, "OK", ok) // both transactions are gone
	dev.ExpectResponse(wait, 200)
	// A retransmission now is a new transaction (the PBX answers a merged
	// request itself, RFC 3261 §8.2.2.2).
	dev.Send(tb.udp, inv)
	tb.pbx.ExpectRequest(wait, sip.INVITE)
}

// TestIsOwnURITransport: a URI is ours when it names one of our listeners,
// by transport as well as port. A device on TCP whose port number equals
// our UDP listener's is not us: its contact was taken for a sipwake
// contact, and the ACK and re-INVITE of its call were lost (404).
func TestIsOwnURITransport(t *testing.T) {
	tb := newTestBed(t)
	udpPort := netip.MustParseAddrPort(tb.udp).Port()
	tcpPort := netip.MustParseAddrPort(tb.tcp).Port()
	for _, tc := range []struct {
		uri  string
		want bool
	}{
		{fmt.Sprintf("sip:dev@127.0.0.1:%d", udpPort), true},
		{fmt.Sprintf("sip:127.0.0.1:%d;transport=udp;lr", udpPort), true},
		{fmt.Sprintf("sip:dev@127.0.0.1:%d;transport=tcp", udpPort), udpPort == tcpPort},
		{fmt.Sprintf("sip:127.0.0.1:%d;transport=tcp;lr", tcpPort), true},
		{fmt.Sprintf("sip:127.0.0.1:%d;transport=TCP", tcpPort), true},
		{fmt.Sprintf("sip:127.0.0.1:%d;transport=udp", tcpPort), udpPort == tcpPort},
		{fmt.Sprintf("sip:127.0.0.1:%d", tcpPort), true},
		{fmt.Sprintf("sips:127.0.0.1:%d", tcpPort), false}, // no TLS listener
		{fmt.Sprintf("sip:dev@192.0.2.1:%d", udpPort), false},
	} {
		var u sip.Uri
		if err := sip.ParseUri(tc.uri, &u); err != nil {
			t.Fatal(err)
		}
		if got := tb.srv.IsOwnURI(&u); got != tc.want {
			t.Errorf("IsOwnURI(%s) = %v, want %v", tc.uri, got, tc.want)
		}
	}
}
