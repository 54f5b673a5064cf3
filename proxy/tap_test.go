package proxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sipwake/sipwake/proxy/proxytest"
)

// recordSink keeps a copy of every packet; with block set, Capture waits
// on it first (a stuck exporter).
type recordSink struct {
	mu    sync.Mutex
	pkts  []Packet
	block chan struct{}
}

func (r *recordSink) Capture(p *Packet) {
	if r.block != nil {
		<-r.block
	}
	cp := *p
	cp.Data = bytes.Clone(p.Data)
	cp.masked = nil
	r.mu.Lock()
	r.pkts = append(r.pkts, cp)
	r.mu.Unlock()
}

// waitFor returns the packets once n have arrived.
func (r *recordSink) waitFor(t *testing.T, n int) []Packet {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		r.mu.Lock()
		got := append([]Packet(nil), r.pkts...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, p := range got {
				b.WriteString(describePacket(p) + "\n")
			}
			t.Fatalf("%d packets captured, want %d:\n%s", len(got), n, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func describePacket(p Packet) string {
	line, _, _ := strings.Cut(string(p.Data), "\r\n")
	return p.Direction.String() + " " + p.Transport + " " + p.Src().String() + " -> " + p.Dst().String() + " " + line
}

// find returns the packets matching dir, transport and first line prefix.
func find(pkts []Packet, dir Direction, transport, prefix string) []Packet {
	var out []Packet
	for _, p := range pkts {
		if p.Direction == dir && p.Transport == transport && bytes.HasPrefix(p.Data, []byte(prefix)) {
			out = append(out, p)
		}
	}
	return out
}

// one returns the single packet matching, failing otherwise.
func one(t *testing.T, pkts []Packet, dir Direction, transport, prefix string) Packet {
	t.Helper()
	got := find(pkts, dir, transport, prefix)
	if len(got) != 1 {
		var b strings.Builder
		for _, p := range pkts {
			b.WriteString(describePacket(p) + "\n")
		}
		t.Fatalf("%d packets %s %s %q, want 1:\n%s", len(got), dir, transport, prefix, b.String())
	}
	return got[0]
}

// startTapped starts a proxy with a started tap, UDP, TCP and TLS
// listeners on 127.0.0.1 and the given upstream (trusted 127.0.0.2).
func startTapped(t *testing.T, tap *Tap, upstream string) *Server {
	t.Helper()
	tap.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = tap.Stop(ctx) // after the proxy's stop (cleanups run last first)
	})
	return startServer(t, Config{
		NodeID: "n1",
		Listen: []Listen{{Network: "udp", Addr: "127.0.0.1:0"}, {Network: "tcp", Addr: "127.0.0.1:0"},
			{Network: "tls", Addr: "127.0.0.1:0"}},
		TLS:             testTLSConfig(t),
		TrustedSources:  []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		Upstream:        upstream,
		UpstreamDomains: []string{"pbx.test"},
		Logger:          testLogger(t),
		Tap:             tap,
	})
}

func testTLSConfig(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sipwake.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"sipwake.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func options(from, transport, ruri, callID string) string {
	return "OPTIONS " + ruri + " SIP/2.0\nVia: SIP/2.0/" + transport + " " + from + ";branch=z9hG4bK-" + callID + ";rport\n" +
		"Max-Forwards: 70\nFrom: <sip:1001@pbx.test>;tag=t-" + callID + "\nTo: <" + ruri + ">\n" +
		"Call-ID: " + callID + "\nCSeq: 1 OPTIONS\n\n"
}

// TestTapUDP: a request from a device to the PBX and its answer, over
// UDP both ways: four packets, the received ones byte for byte as sent,
// with the right addresses, transport and Call-ID.
func TestTapUDP(t *testing.T) {
	sink := &recordSink{}
	pbx := proxytest.NewUDP(t, "127.0.0.2")
	srv := startTapped(t, NewTap(TapConfig{Sinks: []PacketSink{sink}}), "sip:"+pbx.Addr())
	dev := proxytest.NewUDP(t, "")
	sent := proxytest.CRLF(options(dev.Addr(), "UDP", "sip:1002@pbx.test", "tap-udp"))
	dev.SendRaw(srv.Addr("udp"), []byte(sent))
	req := pbx.ExpectRequest(wait, sip.OPTIONS)
	reply := proxytest.ResponseText(req, 200, "OK", "pbx1")
	pbx.SendRaw(srv.Addr("udp"), []byte(reply))
	dev.ExpectResponse(wait, 200)

	pkts := sink.waitFor(t, 4)
	udp := netip.MustParseAddrPort(srv.Addr("udp"))
	devAP, pbxAP := netip.MustParseAddrPort(dev.Addr()), netip.MustParseAddrPort(pbx.Addr())
	in := one(t, pkts, DirIn, "UDP", "OPTIONS")
	if string(in.Data) != sent || in.Src() != devAP || in.Dst() != udp {
		t.Errorf("received OPTIONS %s:\n%s", describePacket(in), in.Data)
	}
	out := one(t, pkts, DirOut, "UDP", "OPTIONS")
	if out.Src() != udp || out.Dst() != pbxAP {
		t.Errorf("forwarded OPTIONS %s", describePacket(out))
	}
	if fwd, err := sip.NewParser().ParseSIP(out.Data); err != nil || len(fwd.(*sip.Request).GetHeaders("Via")) != 2 {
		t.Errorf("forwarded OPTIONS is not the proxied request (%v):\n%s", err, out.Data)
	}
	res := one(t, pkts, DirIn, "UDP", "SIP/2.0 200")
	if string(res.Data) != reply || res.Src() != pbxAP || res.Dst() != udp {
		t.Errorf("PBX answer %s:\n%s", describePacket(res), res.Data)
	}
	back := one(t, pkts, DirOut, "UDP", "SIP/2.0 200")
	if back.Src() != udp || back.Dst() != devAP {
		t.Errorf("relayed answer %s", describePacket(back))
	}
	for _, p := range pkts {
		if p.CallID != "tap-udp" || p.Time.IsZero() {
			t.Errorf("packet %s: call id %q, time %v", describePacket(p), p.CallID, p.Time)
		}
	}
}

// String makes a Packet print in failure messages.
func (p Packet) String() string { return describePacket(p) }

// TestTapStreams: over TCP, a message split across reads, two messages in
// one write and keep-alives between them come out as whole messages;
// over TLS the transport says TLS; a request forwarded over a TCP
// connection sipgo opened to the PBX is captured too.
func TestTapStreams(t *testing.T) {
	sink := &recordSink{}
	pbx := proxytest.ListenTCP(t, "127.0.0.2:0")
	srv := startTapped(t, NewTap(TapConfig{Sinks: []PacketSink{sink}}), "sip:"+pbx.Addr()+";transport=tcp")

	dev := proxytest.DialTCP(t, "", srv.Addr("tcp"))
	m1 := proxytest.CRLF(options(dev.Addr(), "TCP", "sip:"+srv.Addr("tcp"), "tcp-1"))
	m2 := proxytest.CRLF(options(dev.Addr(), "TCP", "sip:"+srv.Addr("tcp"), "tcp-2"))
	m3 := proxytest.CRLF(options(dev.Addr(), "TCP", "sip:"+srv.Addr("tcp"), "tcp-3"))
	dev.SendRaw("", []byte(m1[:40]))
	time.Sleep(50 * time.Millisecond)
	dev.SendRaw("", []byte(m1[40:]+"\r\n\r\n"))
	dev.ExpectResponse(wait, 200)
	dev.SendRaw("", []byte(m2+"\r\n"+m3))
	dev.ExpectResponse(wait, 200)
	dev.ExpectResponse(wait, 200)

	c, err := tls.Dial("tcp", srv.Addr("tls"), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test peer
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m4 := proxytest.CRLF(options(c.LocalAddr().String(), "TLS", "sip:"+srv.Addr("tls"), "tls-4"))
	if _, err := c.Write([]byte(m4)); err != nil {
		t.Fatal(err)
	}

	// A device request forwarded to the PBX over TCP.
	udpDev := proxytest.NewUDP(t, "")
	udpDev.Send(srv.Addr("udp"), options(udpDev.Addr(), "UDP", "sip:1002@pbx.test", "tcp-up"))
	req := pbx.ExpectRequest(wait, sip.OPTIONS)
	reply := proxytest.ResponseText(req, 200, "OK", "pbx1")
	pbx.SendRaw("", []byte(reply))
	udpDev.ExpectResponse(wait, 200)

	pkts := sink.waitFor(t, 12)
	tcp := netip.MustParseAddrPort(srv.Addr("tcp"))
	for _, m := range []string{m1, m2, m3} {
		var got []Packet
		for _, p := range find(pkts, DirIn, "TCP", "OPTIONS") {
			if string(p.Data) == m {
				got = append(got, p)
			}
		}
		if len(got) != 1 || got[0].Dst() != tcp || got[0].Src().String() != dev.Addr() {
			t.Errorf("message %q captured %d times: %v", m[:30], len(got), got)
		}
	}
	if n := len(find(pkts, DirOut, "TCP", "SIP/2.0 200")); n != 3 {
		t.Errorf("%d answers over TCP captured, want 3", n)
	}
	tlsIn := one(t, pkts, DirIn, "TLS", "OPTIONS")
	if string(tlsIn.Data) != m4 || tlsIn.Dst().String() != srv.Addr("tls") {
		t.Errorf("TLS request %v", tlsIn)
	}
	if tlsOut := one(t, pkts, DirOut, "TLS", "SIP/2.0 200"); tlsOut.Dst().String() != c.LocalAddr().String() {
		t.Errorf("TLS answer %v", tlsOut)
	}
	up := one(t, pkts, DirOut, "TCP", "OPTIONS sip:1002@pbx.test")
	if up.Dst().String() != pbx.Addr() || up.Src().Port() == tcp.Port() || up.CallID != "tcp-up" {
		t.Errorf("request on the connection to the PBX %v", up)
	}
	if upRes := one(t, pkts, DirIn, "TCP", "SIP/2.0 200"); string(upRes.Data) != reply || upRes.Src().String() != pbx.Addr() || upRes.Dst() != up.Src() {
		t.Errorf("answer on the connection to the PBX %v", upRes)
	}
}

// TestTapTrace: at debug level every message is logged, masked; at info
// level only those a trace switch selects, until it is cleared.
func TestTapTrace(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	level := zap.NewAtomicLevelAt(zapcore.DebugLevel)
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&bytes.Buffer{}), level))
	log = zap.New(zapcore.NewTee(log.Core(), levelCore{core, level}))
	tap := NewTap(TapConfig{Logger: log})
	pbx := proxytest.NewUDP(t, "127.0.0.2")
	srv := startTapped(t, tap, "sip:"+pbx.Addr())
	dev := proxytest.NewUDP(t, "")

	exchange := func(user, callID string) {
		t.Helper()
		msg := "REGISTER sip:pbx.test SIP/2.0\nVia: SIP/2.0/UDP " + dev.Addr() + ";branch=z9hG4bK-" + callID + ";rport\n" +
			"Max-Forwards: 70\nFrom: <sip:" + user + "@pbx.test>;tag=r" + callID + "\nTo: <sip:" + user + "@PBX.test>\n" +
			"Call-ID: " + callID + "\nCSeq: 1 REGISTER\n" +
			"Contact: <sip:" + user + "@" + dev.Addr() + ";pn-provider=apns;pn-prid=" + apnsToken + ">\n" +
			`Authorization: Digest username="` + user + `", realm="pbx.test", nonce="n", uri="sip:pbx.test", response="` + digestResp + `"` + "\n\n"
		dev.Send(srv.Addr("udp"), msg)
		req := pbx.ExpectRequest(wait, sip.REGISTER)
		pbx.Reply(srv.Addr("udp"), req, 403, "Forbidden")
		dev.ExpectResponse(wait, 403)
	}
	waitLogs := func(n int) []observer.LoggedEntry {
		t.Helper()
		deadline := time.Now().Add(wait)
		for logs.FilterMessage("sip message").Len() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d trace lines, want %d", logs.FilterMessage("sip message").Len(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		var out []observer.LoggedEntry
		for _, e := range logs.TakeAll() {
			if e.Message == "sip message" {
				out = append(out, e)
			}
		}
		return out
	}

	exchange("1001", "tr-1")
	lines := waitLogs(4)
	if len(lines) != 4 {
		t.Fatalf("%d lines at debug level, want 4", len(lines))
	}
	dirs := map[string]int{}
	for _, e := range lines {
		f := e.ContextMap()
		if e.Level != zapcore.DebugLevel || f["call_id"] != "tr-1" || f["transport"] != "udp" || f["src"] == "" || f["dst"] == "" ||
			f["method"] != "REGISTER" || f["cseq"] != uint32(1) {
			t.Errorf("trace line %v %v", e.Level, f)
		}
		dirs[f["direction"].(string)]++
		raw := f["raw"].(string)
		for _, s := range []string{apnsToken, digestResp} {
			if strings.Contains(raw, s) {
				t.Errorf("trace line holds a secret: %s", raw)
			}
		}
	}
	if dirs["in"] != 2 || dirs["out"] != 2 {
		t.Errorf("directions %v", dirs)
	}

	level.SetLevel(zapcore.InfoLevel)
	if tap.on() {
		t.Error("tap on at info level with no switch and no sink")
	}
	sw, err := tap.AddTrace(TraceSwitch{AOR: "1001@pbx.test"}, time.Minute)
	if err != nil || sw.ID == "" || sw.AOR != "1001@pbx.test" || time.Until(sw.Expires) < 50*time.Second {
		t.Fatalf("AddTrace = %+v, %v", sw, err)
	}
	if _, err := tap.AddTrace(TraceSwitch{CallID: "tr-4"}, 0); err != nil {
		t.Fatal(err)
	}
	exchange("1002", "tr-2")
	exchange("1001", "tr-3")
	exchange("1003", "tr-4")
	lines = waitLogs(8)
	for _, e := range lines {
		f := e.ContextMap()
		if e.Level != zapcore.InfoLevel || (f["call_id"] != "tr-3" && f["call_id"] != "tr-4") || f["trace"] == "" {
			t.Errorf("trace line %v %v", e.Level, f)
		}
	}
	if len(lines) != 8 {
		t.Errorf("%d lines at info level with two switches, want 8", len(lines))
	}
	if got := tap.Traces(); len(got) != 2 || got[0].ID != sw.ID || got[1].CallID != "tr-4" {
		t.Errorf("Traces() = %+v", got)
	}
	if n := tap.ClearTraces(sw.ID); n != 1 || len(tap.Traces()) != 1 {
		t.Errorf("ClearTraces(id) = %d, %d left", n, len(tap.Traces()))
	}
	if n := tap.ClearTraces(""); n != 1 || len(tap.Traces()) != 0 || tap.on() {
		t.Errorf("ClearTraces() = %d", n)
	}
	exchange("1001", "tr-5")
	time.Sleep(200 * time.Millisecond)
	if n := logs.FilterMessage("sip message").Len(); n != 0 {
		t.Errorf("%d lines after the switches were cleared", n)
	}
}

// levelCore is an observer core that follows an atomic level.
type levelCore struct {
	zapcore.Core
	level zap.AtomicLevel
}

func (c levelCore) Enabled(l zapcore.Level) bool { return c.level.Enabled(l) }
func (c levelCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}
func (c levelCore) With(f []zapcore.Field) zapcore.Core { return levelCore{c.Core.With(f), c.level} }

func TestTraceSwitches(t *testing.T) {
	tap := NewTap(TapConfig{})
	for _, c := range []struct {
		sw  TraceSwitch
		d   time.Duration
		err error
	}{
		{TraceSwitch{}, time.Minute, ErrTraceSelector},
		{TraceSwitch{AOR: "sip:a@b", CallID: "x"}, time.Minute, ErrTraceSelector},
		{TraceSwitch{AOR: "sip:pbx.test"}, time.Minute, ErrTraceAOR},
		{TraceSwitch{AOR: "tel:+123"}, time.Minute, ErrTraceAOR},
		{TraceSwitch{CallID: "x"}, MaxTraceDuration + time.Second, ErrTraceDuration},
		{TraceSwitch{CallID: "x"}, -time.Second, ErrTraceDuration},
	} {
		if _, err := tap.AddTrace(c.sw, c.d); err != c.err {
			t.Errorf("AddTrace(%+v, %s) = %v, want %v", c.sw, c.d, err, c.err)
		}
	}
	sw, err := tap.AddTrace(TraceSwitch{CallID: "short"}, 30*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	tap.Start()
	defer func() { _ = tap.Stop(context.Background()) }()
	if !tap.on() || len(tap.Traces()) != 1 || tap.Traces()[0].ID != sw.ID {
		t.Errorf("a fresh switch is not on")
	}
	time.Sleep(50 * time.Millisecond)
	if tap.on() || len(tap.Traces()) != 0 {
		t.Errorf("an expired switch is still on")
	}
	for i := 0; i < maxTraceSwitches; i++ {
		if _, err := tap.AddTrace(TraceSwitch{CallID: "c"}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tap.AddTrace(TraceSwitch{CallID: "c"}, time.Minute); err != ErrTraceFull {
		t.Errorf("switch %d: %v", maxTraceSwitches+1, err)
	}
	var nilTap *Tap
	if nilTap.on() {
		t.Error("a nil tap is on")
	}
}

// TestTapNeverBlocksSIP: with its consumer stuck, the tap drops what does
// not fit its queue, counts it, and SIP goes on at full speed.
func TestTapNeverBlocksSIP(t *testing.T) {
	sink := &recordSink{block: make(chan struct{})}
	reg := prometheus.NewRegistry()
	tap := NewTap(TapConfig{Sinks: []PacketSink{sink}, QueueSize: 4, Registerer: reg})
	pbx := proxytest.NewUDP(t, "127.0.0.2")
	srv := startTapped(t, tap, "sip:"+pbx.Addr())
	t.Cleanup(func() { close(sink.block) })
	dev := proxytest.NewUDP(t, "")
	start := time.Now()
	for i := 0; i < 40; i++ {
		id := "nb-" + itoa(i)
		dev.Send(srv.Addr("udp"), options(dev.Addr(), "UDP", "sip:"+srv.Addr("udp"), id))
		dev.ExpectResponse(wait, 200)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("40 OPTIONS took %s with the tap stuck", d)
	}
	if n := counterValue(t, reg, "sipwake_sip_capture_dropped_total"); n < 40 {
		t.Errorf("sipwake_sip_capture_dropped_total = %v, want at least 40", n)
	}
}

// TestTapStopFlushes: Stop hands what is queued to the sinks.
func TestTapStopFlushes(t *testing.T) {
	sink := &recordSink{}
	tap := NewTap(TapConfig{Sinks: []PacketSink{sink}})
	tap.Start()
	for i := 0; i < 100; i++ {
		tap.capture(DirIn, "UDP", "127.0.0.1:5060", "127.0.0.1:4000", []byte(proxytest.CRLF(options("127.0.0.1:4000", "UDP", "sip:x@y", "f-"+itoa(i)))))
	}
	if err := tap.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(sink.pkts) != 100 {
		t.Errorf("%d packets after Stop, want 100", len(sink.pkts))
	}
	tap.capture(DirIn, "UDP", "127.0.0.1:5060", "127.0.0.1:4000", []byte("OPTIONS sip:x SIP/2.0\r\n\r\n"))
	if tap.on() {
		t.Error("tap on after Stop")
	}
}

// counterValue sums the counter name of reg over its labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		sum := 0.0
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
		return sum
	}
	t.Fatalf("%s is not registered", name)
	return 0
}
