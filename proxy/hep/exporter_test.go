package hep

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/proxy/hep/heptest"
)

const token = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0"

func register(i int) []byte {
	return []byte("REGISTER sip:pbx.test SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-" + strconv.Itoa(i) + "\r\n" +
		"Call-ID: reg-" + strconv.Itoa(i) + "\r\n" +
		"CSeq: 1 REGISTER\r\n" +
		"Contact: <sip:1001@192.0.2.10:5060;pn-provider=apns;pn-prid=" + token + ">\r\n" +
		"Content-Length: 0\r\n\r\n")
}

func packet(i int) *proxy.Packet {
	return &proxy.Packet{Time: time.Now(), Direction: proxy.DirIn, Transport: "UDP",
		Local: netip.MustParseAddrPort("192.0.2.1:5060"), Remote: netip.MustParseAddrPort("192.0.2.10:5060"),
		Data: register(i), CallID: "reg-" + strconv.Itoa(i)}
}

func newExporter(t *testing.T, cfg Config) (*Exporter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = e.Stop(ctx)
	})
	return e, reg
}

func results(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sipwake_hep_packets_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}

func TestExporterUDP(t *testing.T) {
	rcv := heptest.ListenUDP(t)
	e, reg := newExporter(t, Config{Address: rcv.Address(), Agent: Agent{CaptureID: 2001, NodeName: "edge", Password: "pw"}})
	for i := range 20 {
		e.Capture(packet(i))
	}
	pkts, ok := rcv.Wait(5*time.Second, func(p []heptest.Packet) bool { return len(p) == 20 })
	if !ok {
		t.Fatalf("%d packets received, want 20", len(pkts))
	}
	for i, p := range pkts {
		if p.CorrelationID != "reg-"+strconv.Itoa(i) || p.Src.String() != "192.0.2.10:5060" || p.Dst.String() != "192.0.2.1:5060" ||
			p.Proto != 17 || p.CaptureID != 2001 || p.NodeName != "edge" || p.AuthKey != "pw" {
			t.Errorf("packet %d: %+v", i, p)
		}
		if strings.Contains(string(p.Payload), token) || !strings.Contains(string(p.Payload), proxy.Mask(token)) {
			t.Errorf("packet %d payload is not masked:\n%s", i, p.Payload)
		}
	}
	if r := results(t, reg); r["sent"] != 20 || r["dropped"] != 0 || r["error"] != 0 {
		t.Errorf("results %v", r)
	}
}

// TestExporterTCP: packets back to back on one connection, unmasked when
// configured; a connection the capture server closed is opened again.
func TestExporterTCP(t *testing.T) {
	rcv := heptest.ListenTCP(t)
	e, reg := newExporter(t, Config{Address: rcv.Address(), Unmasked: true})
	for i := range 10 {
		e.Capture(packet(i))
	}
	pkts, ok := rcv.Wait(5*time.Second, func(p []heptest.Packet) bool { return len(p) == 10 })
	if !ok {
		t.Fatalf("%d packets received, want 10", len(pkts))
	}
	if string(pkts[3].Payload) != string(register(3)) || pkts[3].Proto != 17 || pkts[3].Transport != "tcp" {
		t.Errorf("unmasked payload:\n%s", pkts[3].Payload)
	}
	rcv.Disconnect()
	deadline := time.Now().Add(5 * time.Second)
	for i := 10; rcv.Accepted() < 2; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no new connection after the capture server closed the first")
		}
		e.Capture(packet(i))
		time.Sleep(20 * time.Millisecond)
	}
	before := len(rcv.Packets())
	e.Capture(packet(1000))
	if _, ok := rcv.Wait(5*time.Second, func(p []heptest.Packet) bool {
		return len(p) > before && p[len(p)-1].CorrelationID == "reg-1000"
	}); !ok {
		t.Errorf("nothing received on the new connection")
	}
	if r := results(t, reg); r["sent"] < 11 {
		t.Errorf("results %v", r)
	}
}

// TestExporterNeverBlocks: with the capture server down, or up but not
// reading, Capture returns at once, the overflow is counted as dropped,
// and Stop returns when its context ends.
func TestExporterNeverBlocks(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := l.Addr().String()
	_ = l.Close() // nothing listens there any more

	stuck, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	go func() {
		for {
			c, err := stuck.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepted, never read
		}
	}()

	for _, c := range []struct{ name, addr string }{{"down", downAddr}, {"not reading", stuck.Addr().String()}} {
		t.Run(c.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e, err := New(Config{Address: "tcp://" + c.addr, QueueSize: 16, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			e.Start()
			big := packet(0)
			big.Data = append(register(0), make([]byte, 32<<10)...)
			start := time.Now()
			for range 5000 {
				e.Capture(big)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("5000 captures took %s", d)
			}
			r := results(t, reg)
			if r["dropped"] < 4000 {
				t.Errorf("results %v: want most dropped", r)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start = time.Now()
			_ = e.Stop(ctx)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Stop took %s", d)
			}
			r = results(t, reg)
			if total := r["sent"] + r["dropped"] + r["error"]; total != 5000 {
				t.Errorf("results %v: %v counted, want every one of the 5000", r, total)
			}
			e.Capture(big) // after Stop: dropped, no panic
		})
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Config{Address: "http://x:1"}); err == nil {
		t.Error("http address accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{Address: "udp://127.0.0.1:9", Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Address: "udp://127.0.0.1:9", Registerer: reg}); err == nil {
		t.Error("a second exporter on one registry accepted")
	}
}
