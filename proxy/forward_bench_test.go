package proxy

// Micro-benchmarks of the forwarding hot path: a real Server (UDP listener
// on 127.0.0.1, the sanity module, the forwarder) between a raw UDP caller
// on 127.0.0.1 and a raw UDP callee on 127.0.0.2. The fake peers work on
// bytes with reused buffers (no SIP parser, next to no allocation), so
// allocs/op is, to within a few, the proxy's own: sipgo's transport and
// transaction layers plus the forwarder.
//
//	go test -run '^$' -bench 'Forward|Parse' -benchmem ./proxy/
//	go test -run '^$' -bench 'ForwardCall' -cpuprofile cpu.out ./proxy/ && go tool pprof -top proxy.test cpu.out
//
// Metrics besides ns/op and allocs/op: cpu-µs/op is the process CPU time
// (user+system, every goroutine of the benchmark binary, fake peers
// included) per operation, comparable to "CPU-µs per call" of the SIPp
// load test (cmd/sipwake/internal/bench).

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// benchSDP is the offer of benchInvite.
const benchSDP = "v=0\r\n" +
	"o=Z 0 11223344 IN IP4 192.0.2.10\r\n" +
	"s=Z\r\n" +
	"c=IN IP4 192.0.2.10\r\n" +
	"t=0 0\r\n" +
	"m=audio 8000 RTP/AVP 106 9 98 101 0 8 3\r\n" +
	"a=rtpmap:106 opus/48000/2\r\n" +
	"a=rtpmap:98 telephone-event/48000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=sendrecv\r\n"

// benchInvite is a typical INVITE from a softphone (with SDP), as the
// parse benchmarks read it.
var benchInvite = "INVITE sip:1002@pbx.test SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---77ba58c5dbd0c9f7;rport\r\n" +
	"Max-Forwards: 70\r\n" +
	"Contact: <sip:1001@192.0.2.10:5060;transport=udp>\r\n" +
	"To: <sip:1002@pbx.test>\r\n" +
	"From: \"Alice\" <sip:1001@pbx.test>;tag=3b6fa2c1\r\n" +
	"Call-ID: ZjU3NTgyNmQ3NTU3ZGU2ZTE3NzY0ZWM0ZjM5ZTNhMTk\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Supported: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri\r\n" +
	"User-Agent: Zoiper v2.10.20.4\r\n" +
	"Allow-Events: presence, kpml, talk\r\n" +
	"Content-Length: " + strconv.Itoa(len(benchSDP)) + "\r\n" +
	"\r\n" + benchSDP

// BenchmarkParseInvite is sipgo parsing one typical INVITE, for reference:
// every message through the proxy is parsed once on arrival.
func BenchmarkParseInvite(b *testing.B) {
	data := []byte(benchInvite)
	p := sip.NewParser()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		m, err := p.ParseSIP(data)
		if err != nil {
			b.Fatal(err)
		}
		_ = m
	}
}

// BenchmarkParseCloneString is what the forwarder does to a request on top
// of parsing it: parse, Clone (the outgoing copy), add a Via, render it.
func BenchmarkParseCloneString(b *testing.B) {
	data := []byte(benchInvite)
	p := sip.NewParser()
	b.ReportAllocs()
	for b.Loop() {
		m, err := p.ParseSIP(data)
		if err != nil {
			b.Fatal(err)
		}
		out := m.(*sip.Request).Clone()
		params := sip.NewParams()
		params.Add("branch", "z9hG4bK.sw.bench")
		params.Add("rport", "")
		out.PrependHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
			Host: "127.0.0.1", Port: 5060, Params: params})
		if len(out.String()) == 0 {
			b.Fatal("empty")
		}
	}
}

// BenchmarkForwardInvite: one op = INVITE → proxy → callee, 200 OK →
// proxy → caller (two stateful transactions' worth of work in the proxy:
// server and client transaction, parse of INVITE and 200, Record-Route,
// Via, flow token). seq: one transaction at a time (latency-bound);
// window64: 64 callers in parallel (throughput).
func BenchmarkForwardInvite(b *testing.B) {
	for _, w := range []int{1, 64} {
		name := "seq"
		if w > 1 {
			name = "window" + strconv.Itoa(w)
		}
		b.Run(name, func(b *testing.B) { runForwardBench(b, w, false, nil) })
	}
}

// BenchmarkForwardCall: one op = a whole call as the SIPp load test makes
// it: INVITE/200, ACK, BYE/200 through the proxy, 64 callers in parallel.
func BenchmarkForwardCall(b *testing.B) {
	runForwardBench(b, 64, true, nil)
}

// BenchmarkForwardCallTap is BenchmarkForwardCall with the message tap
// the daemon always has: off (info level, no HEP: what capture costs when
// nothing consumes it), and on with a sink that masks every message (what
// HEP export adds on the SIP side and the tap's goroutine).
func BenchmarkForwardCallTap(b *testing.B) {
	b.Run("off", func(b *testing.B) {
		runForwardBench(b, 64, true, NewTap(TapConfig{}))
	})
	b.Run("hep", func(b *testing.B) {
		runForwardBench(b, 64, true, NewTap(TapConfig{Sinks: []PacketSink{maskingSink{}}, QueueSize: 1 << 16}))
	})
}

// maskingSink does the work of a HEP exporter's Capture short of the
// network: the masked copy.
type maskingSink struct{}

func (maskingSink) Capture(p *Packet) { _ = p.Masked() }

func runForwardBench(b *testing.B, window int, fullCall bool, tap *Tap) {
	uas := newRawUAS(b)
	if tap != nil {
		tap.Start()
		b.Cleanup(func() { _ = tap.Stop(context.Background()) })
	}
	b.Cleanup(uas.close) // after the proxy's stop (cleanups run last first)
	srv := startServer(b, Config{
		Tap:             tap,
		NodeID:          "bench",
		Listen:          []Listen{{Network: "udp", Addr: "127.0.0.1:0"}},
		TrustedSources:  []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		Upstream:        "sip:" + uas.addr.String() + ";transport=udp",
		UpstreamDomains: []string{"pbx.test"},
	})
	proxyAddr := netip.MustParseAddrPort(srv.Addr("udp"))

	callers := make([]*rawUAC, window)
	for i := range callers {
		callers[i] = newRawUAC(b, i, proxyAddr, uas.contact)
	}
	// Warm up (sockets, pools, the transaction layer's maps).
	for _, c := range callers {
		if err := c.call(fullCall); err != nil {
			b.Fatal(err)
		}
	}

	var next atomic.Int64
	var failed atomic.Value
	n := int64(b.N)
	cpu0 := processCPU()
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= n {
				if err := c.call(fullCall); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// processCPU is the user+system CPU time of this process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchUDP(b *testing.B, ip string) *net.UDPConn {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		b.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	return c
}

// rawUAS answers every INVITE and BYE with 200 (Via, From, To with a tag,
// Call-ID, CSeq and, for INVITE, Record-Route copied) and ignores ACKs.
type rawUAS struct {
	conn    *net.UDPConn
	addr    netip.AddrPort
	contact string
	done    chan struct{}
}

func newRawUAS(b *testing.B) *rawUAS {
	c := benchUDP(b, "127.0.0.2")
	u := &rawUAS{conn: c, addr: netip.MustParseAddrPort(c.LocalAddr().String()), done: make(chan struct{})}
	u.contact = "sip:callee@" + u.addr.String()
	go u.serve()
	return u
}

func (u *rawUAS) close() {
	_ = u.conn.Close()
	<-u.done
}

func (u *rawUAS) serve() {
	defer close(u.done)
	buf := make([]byte, 65535)
	out := make([]byte, 0, 4096)
	contact := []byte("Contact: <" + u.contact + ">\r\n")
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		msg := buf[:n]
		invite := bytes.HasPrefix(msg, []byte("INVITE "))
		if !invite && !bytes.HasPrefix(msg, []byte("BYE ")) {
			continue // ACK, or anything else
		}
		out = append(out[:0], "SIP/2.0 200 OK\r\n"...)
		out = copyResponseHeaders(out, msg, invite)
		if invite {
			out = append(out, contact...)
		}
		out = append(out, "Content-Length: 0\r\n\r\n"...)
		if _, err := u.conn.WriteToUDPAddrPort(out, from); err != nil {
			return
		}
	}
}

// copyResponseHeaders appends the request's headers a response repeats;
// To gets a tag when it has none.
func copyResponseHeaders(out, msg []byte, withRR bool) []byte {
	head := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		head = msg[:i+2]
	}
	_, head, _ = bytes.Cut(head, []byte("\r\n")) // request line
	for len(head) > 0 {
		line, rest, _ := bytes.Cut(head, []byte("\r\n"))
		head = rest
		name, _, _ := bytes.Cut(line, []byte(":"))
		switch {
		case bytes.EqualFold(name, []byte("Via")), bytes.EqualFold(name, []byte("From")),
			bytes.EqualFold(name, []byte("Call-ID")), bytes.EqualFold(name, []byte("CSeq")):
			out = append(append(out, line...), "\r\n"...)
		case bytes.EqualFold(name, []byte("Record-Route")):
			if withRR {
				out = append(append(out, line...), "\r\n"...)
			}
		case bytes.EqualFold(name, []byte("To")):
			out = append(out, line...)
			if !bytes.Contains(line, []byte(";tag=")) {
				out = append(out, ";tag=uas1"...)
			}
			out = append(out, "\r\n"...)
		}
	}
	return out
}

// rawUAC makes calls one after the other from its own socket.
type rawUAC struct {
	conn    *net.UDPConn
	local   string
	proxy   netip.AddrPort
	uasURI  string
	id      string
	seq     int
	buf     []byte
	out     []byte
	toLine  []byte
	rrValue []byte
}

func newRawUAC(b *testing.B, id int, proxy netip.AddrPort, uasURI string) *rawUAC {
	c := benchUDP(b, "127.0.0.1")
	b.Cleanup(func() { _ = c.Close() })
	return &rawUAC{conn: c, local: c.LocalAddr().String(), proxy: proxy, uasURI: uasURI,
		id: "w" + strconv.Itoa(id), buf: make([]byte, 65535), out: make([]byte, 0, 2048)}
}

func (c *rawUAC) call(full bool) error {
	c.seq++
	c.out = c.request(c.out[:0], "INVITE", "sip:1002@pbx.test", 1, nil, nil)
	res, err := c.exchange()
	if err != nil {
		return err
	}
	if !full {
		return nil
	}
	// ACK and BYE along the route set of the 200 (our Record-Route).
	c.toLine = c.toLine[:0]
	c.rrValue = c.rrValue[:0]
	head := res
	for len(head) > 0 {
		line, rest, _ := bytes.Cut(head, []byte("\r\n"))
		head = rest
		if len(line) == 0 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("To: ")); ok {
			c.toLine = append(c.toLine, v...)
		} else if v, ok := bytes.CutPrefix(line, []byte("Record-Route: ")); ok {
			c.rrValue = append(c.rrValue, v...)
		}
	}
	if len(c.rrValue) == 0 {
		return errString("200 OK without Record-Route")
	}
	c.out = c.request(c.out[:0], "ACK", c.uasURI, 1, c.toLine, c.rrValue)
	if _, err := c.conn.WriteToUDPAddrPort(c.out, c.proxy); err != nil {
		return err
	}
	c.out = c.request(c.out[:0], "BYE", c.uasURI, 2, c.toLine, c.rrValue)
	_, err = c.exchange()
	return err
}

// request renders a request of the current call.
func (c *rawUAC) request(b []byte, method, ruri string, cseq int, to, route []byte) []byte {
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, ruri...)
	b = append(b, " SIP/2.0\r\nVia: SIP/2.0/UDP "...)
	b = append(b, c.local...)
	b = append(b, ";branch=z9hG4bK-"...)
	b = append(b, c.id...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(c.seq), 10)
	b = append(b, method...)
	b = append(b, ";rport\r\nMax-Forwards: 70\r\n"...)
	if route != nil {
		b = append(b, "Route: "...)
		b = append(b, route...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "From: <sip:1001@pbx.test>;tag=f"...)
	b = append(b, c.id...)
	b = append(b, "\r\nTo: "...)
	if to != nil {
		b = append(b, to...)
	} else {
		b = append(b, "<sip:1002@pbx.test>"...)
	}
	b = append(b, "\r\nCall-ID: "...)
	b = append(b, c.id...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(c.seq), 10)
	b = append(b, "@bench\r\nCSeq: "...)
	b = strconv.AppendInt(b, int64(cseq), 10)
	b = append(b, ' ')
	b = append(b, method...)
	b = append(b, "\r\nContact: <sip:1001@"...)
	b = append(b, c.local...)
	b = append(b, ">\r\nContent-Length: 0\r\n\r\n"...)
	return b
}

// exchange sends c.out and waits for its 200, skipping provisional
// responses and stale messages of earlier calls.
func (c *rawUAC) exchange() ([]byte, error) {
	if _, err := c.conn.WriteToUDPAddrPort(c.out, c.proxy); err != nil {
		return nil, err
	}
	callID := c.callIDLine()
	deadline := time.Now().Add(5 * time.Second)
	_ = c.conn.SetReadDeadline(deadline)
	for {
		n, _, err := c.conn.ReadFromUDPAddrPort(c.buf)
		if err != nil {
			return nil, err
		}
		m := c.buf[:n]
		if !bytes.Contains(m, callID) {
			continue
		}
		switch {
		case bytes.HasPrefix(m, []byte("SIP/2.0 200 ")):
			return m, nil
		case bytes.HasPrefix(m, []byte("SIP/2.0 1")):
			continue
		default:
			line, _, _ := bytes.Cut(m, []byte("\r\n"))
			return nil, errString("unexpected answer: " + string(line))
		}
	}
}

// callIDLine returns the Call-ID header line of the current call, from
// c.out.
func (c *rawUAC) callIDLine() []byte {
	i := bytes.Index(c.out, []byte("\r\nCall-ID: "))
	if i < 0 {
		return nil
	}
	j := bytes.Index(c.out[i+2:], []byte("\r\n"))
	return c.out[i+2 : i+2+j]
}

type errString string

func (e errString) Error() string { return string(e) }
