package main

import (
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/proxy/proxytest"
	"github.com/sipwake/sipwake/store/storetest"
)

// BenchmarkRegisterPassthrough relays REGISTERs (challenge, then
// credentials, then 200) through an in-process sipwake on the Redis store
// to a fake PBX answering from 127.0.0.2, one registration per op, for
// CPU profiles of the REGISTER path (go test -bench Register -cpuprofile).
func BenchmarkRegisterPassthrough(b *testing.B) {
	sw := registerBenchDaemon(b)
	dev := proxytest.NewUDP(b, "")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		registerOnce(b, dev, sw.UDP, i, 2*i+1)
	}
}

// BenchmarkRegisterPassthroughParallel runs the same registrations from
// many devices at once, so a CPU profile shows throughput cost rather
// than the latency of one request at a time.
func BenchmarkRegisterPassthroughParallel(b *testing.B) {
	sw := registerBenchDaemon(b)
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dev := proxytest.NewUDP(b, "")
		cseq := 0
		for pb.Next() {
			i := int(next.Add(1))
			cseq += 2
			registerOnce(b, dev, sw.UDP, i, cseq-1)
		}
	})
}

// registerBenchDaemon starts sipwake on a real redis-server in front of a
// fake PBX that challenges a REGISTER without credentials and accepts it
// with them.
func registerBenchDaemon(b *testing.B) *running {
	addr := storetest.StartRedis(b)
	pbx := proxytest.NewUDP(b, pbxIP)
	cfg := e2eConfig(b, nil, b.TempDir())
	cfg.Log.Level = "warn"
	cfg.SIP.Listen = []string{"udp://127.0.0.1:0"}
	cfg.Upstream.URI = "sip:" + pbx.Addr()
	cfg.Upstream.Domains = []string{"pbx.test"}
	cfg.Store.Driver = "redis"
	cfg.Store.Redis.Addresses = []string{addr}
	sw := startDaemon(b, cfg)

	// The fake PBX: 401 to a REGISTER without credentials, 200 echoing
	// the Contact otherwise.
	go func() {
		for {
			m, err := pbx.Recv(time.Minute)
			if err != nil {
				return
			}
			req, ok := m.(*sip.Request)
			if !ok {
				continue
			}
			if req.GetHeader("Authorization") == nil {
				pbx.Reply(sw.UDP, req, 401, "Unauthorized", `WWW-Authenticate: Digest realm="pbx.test", nonce="n1"`)
				continue
			}
			c := req.GetHeader("Contact")
			pbx.Reply(sw.UDP, req, 200, "OK", "Contact: "+c.Value())
		}
	}()
	return sw
}

// registerOnce does one registration of device i: REGISTER, 401,
// REGISTER with credentials, 200.
func registerOnce(b *testing.B, dev *proxytest.UA, sw string, i, cseq int) {
	reg := func(cseq int, auth bool) string {
		u := strconv.Itoa(200000 + i%1000)
		m := "REGISTER sip:pbx.test SIP/2.0\nVia: SIP/2.0/UDP " + dev.Addr() + ";branch=z9hG4bK-b" + strconv.Itoa(i) + "-" + strconv.Itoa(cseq) + ";rport\n" +
			"Max-Forwards: 70\nFrom: <sip:" + u + "@pbx.test>;tag=f" + u + "\nTo: <sip:" + u + "@pbx.test>\nCall-ID: bench-" + u + "-" + dev.Addr() + "\n" +
			"CSeq: " + strconv.Itoa(cseq) + " REGISTER\n" +
			"Contact: <sip:" + u + "@" + dev.Addr() + ";pn-provider=apns;pn-prid=" + strings.Repeat("ab", 32) + ";pn-param=TEAM123456.com.example.phone.voip>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-" + strconv.Itoa(100000000000+i%1000) + ">\";expires=600\n"
		if auth {
			m += `Authorization: Digest username="` + u + `", realm="pbx.test", nonce="n1", uri="sip:pbx.test", response="00000000000000000000000000000000"` + "\n"
		}
		return m + "\n"
	}
	wait := func(code int) {
		for {
			m, err := dev.Recv(5 * time.Second)
			if err != nil {
				b.Errorf("no %d: %v", code, err)
				return
			}
			if r, ok := m.(*sip.Response); ok && r.StatusCode >= 200 {
				if r.StatusCode != code {
					b.Errorf("got %d, want %d", r.StatusCode, code)
				}
				return
			}
		}
	}
	dev.Send(sw, reg(cseq, false))
	wait(401)
	dev.Send(sw, reg(cseq+1, true))
	wait(200)
}
