package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/proxy/hep/heptest"
	"github.com/sipwake/sipwake/proxy/proxytest"
)

// hepToken is the push token of the HEP tests: it must never appear in full in a masked
// HEP payload or in a log line.
const hepToken = "c0ffee0ddba11f00dfacade5eedbeef1234567890abcdef0fedcba098765432a"

// hepFlow is a device's side of a scripted exchange through sipwake: what it sent, byte
// for byte, and the final responses it got.
type hepFlow struct {
	t       *testing.T
	ua      *proxytest.UA
	sw      string
	sent    [][]byte
	got     []*sip.Response
	secrets []string // digest responses and bodies sent
}

func (f *hepFlow) send(msg string) *sip.Response {
	f.t.Helper()
	b := []byte(proxytest.CRLF(msg))
	f.sent = append(f.sent, b)
	f.ua.SendRaw(f.sw, b)
	res := waitFinal(f.t, f.ua)
	f.got = append(f.got, res)
	return res
}

// register registers user with a push token, through the PBX's challenge.
func (f *hepFlow) register(user string) {
	f.t.Helper()
	callID := "hep-reg-" + user + "-" + strconv.Itoa(f.ua.Port())
	req := func(cseq int, auth string) string {
		m := "REGISTER sip:pbx.test SIP/2.0\n" +
			"Via: SIP/2.0/" + strings.ToUpper(f.ua.Network()) + " " + f.ua.Addr() + ";branch=z9hG4bK-hr" + strconv.Itoa(cseq) + callID + ";rport\n" +
			"Max-Forwards: 70\nFrom: <sip:" + user + "@pbx.test>;tag=hr" + user + "\nTo: <sip:" + user + "@pbx.test>\n" +
			"Call-ID: " + callID + "\nCSeq: " + strconv.Itoa(cseq) + " REGISTER\n" +
			"Contact: <sip:" + user + "@" + f.ua.Addr() + ";transport=" + f.ua.Network() + ";pn-provider=apns;pn-prid=" + hepToken +
			";pn-param=TEAM123456.com.example.phone.voip>;+sip.instance=\"<urn:uuid:0a0a0a0a-1111-4222-8333-" + user + "44444444>\";expires=600\n"
		if auth != "" {
			m += "Authorization: " + auth + "\n"
		}
		return m + "\n"
	}
	res := f.send(req(1, ""))
	if res.StatusCode != 401 {
		f.t.Fatalf("REGISTER: %d, want a 401 challenge", res.StatusCode)
	}
	auth := authorization(user, "pbx.test", "pw"+user, "REGISTER", "sip:pbx.test", paramOf(res.GetHeader("WWW-Authenticate").Value(), "nonce"))
	f.secrets = append(f.secrets, paramOf(auth, "response"))
	if res := f.send(req(2, auth)); res.StatusCode != 200 {
		f.t.Fatalf("REGISTER with credentials: %d", res.StatusCode)
	}
}

// message sends a MESSAGE from user to peer through the PBX's proxy challenge; the PBX
// answers 404 (peer is not registered) once authenticated.
func (f *hepFlow) message(user, peer, text string) {
	f.t.Helper()
	callID := "hep-msg-" + user + "-" + strconv.Itoa(f.ua.Port())
	req := func(cseq int, auth string) string {
		m := "MESSAGE sip:" + peer + "@pbx.test SIP/2.0\n" +
			"Via: SIP/2.0/" + strings.ToUpper(f.ua.Network()) + " " + f.ua.Addr() + ";branch=z9hG4bK-hm" + strconv.Itoa(cseq) + callID + ";rport\n" +
			"Max-Forwards: 70\nFrom: <sip:" + user + "@pbx.test>;tag=hm" + user + "\nTo: <sip:" + peer + "@pbx.test>\n" +
			"Call-ID: " + callID + "\nCSeq: " + strconv.Itoa(cseq) + " MESSAGE\nContent-Type: text/plain\n"
		if auth != "" {
			m += "Proxy-Authorization: " + auth + "\n"
		}
		return m + "\n" + text
	}
	f.secrets = append(f.secrets, text)
	res := f.send(req(1, ""))
	if res.StatusCode != 407 {
		f.t.Fatalf("MESSAGE: %d, want a 407 challenge", res.StatusCode)
	}
	auth := authorization(user, "pbx.test", "pw"+user, "MESSAGE", "sip:"+peer+"@pbx.test", paramOf(res.GetHeader("Proxy-Authenticate").Value(), "nonce"))
	f.secrets = append(f.secrets, paramOf(auth, "response"))
	if res := f.send(req(2, auth)); res.StatusCode != 404 {
		f.t.Fatalf("MESSAGE with credentials: %d, want 404", res.StatusCode)
	}
}

// sipFacts are what a check compares of a SIP message.
type sipFacts struct {
	first, callID, cseq string
}

func facts(b []byte) sipFacts {
	m, err := sip.NewParser().ParseSIP(b)
	if err != nil {
		return sipFacts{first: "unparsable: " + err.Error()}
	}
	first, _, _ := strings.Cut(m.String(), "\r\n")
	f := sipFacts{first: first}
	if h := m.CallID(); h != nil {
		f.callID = h.Value()
	}
	if h := m.CSeq(); h != nil {
		f.cseq = h.Value()
	}
	return f
}

func describeHEP(pkts []heptest.Packet) string {
	var b strings.Builder
	for _, p := range pkts {
		first, _, _ := strings.Cut(string(p.Payload), "\r\n")
		fmt.Fprintf(&b, "%s -> %s proto %d cid %q: %s\n", p.Src, p.Dst, p.Proto, p.CorrelationID, first)
	}
	return b.String()
}

// checkHEPFlow checks that every message the device and the PBX exchanged through sipwake
// is in pkts, in both directions, with the right addresses, transport (IP protocol devProto
// on the device's side, UDP on the PBX's) and correlation id: the device's requests byte
// for byte as sent (masked unless unmasked). sw is the listener the device uses, swUp the
// one facing the PBX.
func checkHEPFlow(t *testing.T, pkts []heptest.Packet, f *hepFlow, dev, sw, swUp, pbx string, devProto uint8, unmasked bool) {
	t.Helper()
	has := func(src, dst string, want sipFacts, payload []byte) bool {
		proto := devProto
		if src == pbx || dst == pbx {
			proto = 17
		}
		for _, p := range pkts {
			if p.Src.String() != src || p.Dst.String() != dst || p.Proto != proto || p.Family != 2 || p.ProtoType != 1 {
				continue
			}
			got := facts(p.Payload)
			if payload != nil && !bytes.Equal(p.Payload, payload) {
				continue
			}
			if got.callID == want.callID && got.cseq == want.cseq && strings.HasPrefix(got.first, want.first) &&
				p.CorrelationID == want.callID {
				return true
			}
		}
		return false
	}
	for i, b := range f.sent {
		req := facts(b)
		want := b
		if !unmasked {
			want = proxy.MaskMessage(b)
		}
		if !has(dev, sw, req, want) {
			t.Errorf("device request %q (%s) not captured as sent, device -> sipwake", req.first, req.cseq)
		}
		method, _, _ := strings.Cut(req.first, " ")
		if !has(swUp, pbx, sipFacts{first: method + " ", callID: req.callID, cseq: req.cseq}, nil) {
			t.Errorf("request %s (%s) not captured sipwake -> PBX", method, req.cseq)
		}
		res := f.got[i]
		status := sipFacts{first: "SIP/2.0 " + strconv.Itoa(res.StatusCode) + " ", callID: req.callID, cseq: req.cseq}
		if !has(pbx, swUp, status, nil) {
			t.Errorf("response %d to %s (%s) not captured PBX -> sipwake", res.StatusCode, method, req.cseq)
		}
		if !has(sw, dev, status, nil) {
			t.Errorf("response %d to %s (%s) not captured sipwake -> device", res.StatusCode, method, req.cseq)
		}
	}
	if t.Failed() {
		t.Logf("HEP packets:\n%s", describeHEP(pkts))
	}
}

// hepMetric reads one sample of sipwake_hep_packets_total from /metrics.
func hepMetric(t *testing.T, sw *running, result string) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+sw.ops.Addr().String()+"/metrics")
	m := regexp.MustCompile(`(?m)^sipwake_hep_packets_total\{result="` + result + `"\} (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no sipwake_hep_packets_total{result=%q}", result)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// traceLines returns the "sip message" log lines of the daemon, decoded.
func traceLines(t *testing.T, sw *running) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(sw.logs.String(), "\n") {
		if !strings.Contains(line, `"msg":"sip message"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestE2ETraceAndHEP: a device registers through the PBX's challenge with a push token and
// sends a MESSAGE through its proxy challenge. Every message the device and the PBX
// exchanged through sipwake reaches the HEP receiver (UDP, masked; TCP, unmasked), in both
// directions, with the right addresses, transport and Call-ID as correlation id; no push
// token, digest response or message body is in clear in a masked payload or in any log
// line; the debug trace logs every message.
func TestE2ETraceAndHEP(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	for _, c := range []struct {
		name     string
		rcv      func(testing.TB) *heptest.Receiver
		unmasked bool
		user     string
		device   string // how the device reaches sipwake
	}{
		{"udp masked", heptest.ListenUDP, false, "1001", "udp"},
		{"tcp unmasked, device over TCP", heptest.ListenTCP, true, "1002", "tcp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rcv := c.rcv(t)
			cfg := e2eConfig(t, kam, t.TempDir())
			cfg.HEP.Address, cfg.HEP.NodeName, cfg.HEP.Unmasked = rcv.Address(), "edge-e2e", c.unmasked
			start := time.Now().Add(-time.Second)
			sw := startDaemon(t, cfg)
			dev, swAddr, devProto := proxytest.NewUDP(t, ""), sw.UDP, uint8(17)
			if c.device == "tcp" {
				dev, swAddr, devProto = proxytest.DialTCP(t, "", sw.TCP), sw.TCP, 6
			}
			f := &hepFlow{t: t, ua: dev, sw: swAddr}
			f.register(c.user)
			f.message(c.user, "1009", "the door code is 4711, tell nobody ("+c.user+")")
			pkts, _ := rcv.Wait(10*time.Second, func(p []heptest.Packet) bool { return len(p) >= 16 })
			checkHEPFlow(t, pkts, f, dev.Addr(), swAddr, sw.UDP, kam.UDPAddr, devProto, c.unmasked)

			secrets := append([]string{hepToken}, f.secrets...)
			for _, p := range pkts {
				if p.CaptureID != 2001 || p.NodeName != "edge-e2e" || p.Transport != rcv.Address()[:3] ||
					p.Time.Before(start) || p.Time.After(time.Now()) {
					t.Errorf("packet %s -> %s: capture id %d, node %q, over %s, at %s", p.Src, p.Dst, p.CaptureID, p.NodeName, p.Transport, p.Time)
				}
				if c.unmasked {
					continue
				}
				for _, s := range secrets {
					if strings.Contains(string(p.Payload), s) {
						t.Errorf("HEP payload holds %q in clear:\n%s", s, p.Payload)
					}
				}
			}
			// The trace log: every message at debug level, masked, whatever hep.unmasked says.
			lines := traceLines(t, sw)
			perCall := map[string]map[string]int{}
			for _, l := range lines {
				cid, _ := l["call_id"].(string)
				if perCall[cid] == nil {
					perCall[cid] = map[string]int{}
				}
				perCall[cid][l["direction"].(string)]++
				if l["logger"] != "sipwake.trace" || l["level"] != "debug" || (l["transport"] != "udp" && l["transport"] != c.device) ||
					l["src"] == "" || l["dst"] == "" {
					t.Errorf("trace line %v", l)
				}
			}
			for _, cid := range []string{"hep-reg-" + c.user + "-" + strconv.Itoa(dev.Port()), "hep-msg-" + c.user + "-" + strconv.Itoa(dev.Port())} {
				if perCall[cid]["in"] < 4 || perCall[cid]["out"] < 4 {
					t.Errorf("trace of %s: %v, want 4 in and 4 out at least", cid, perCall[cid])
				}
			}
			logs := sw.logs.String()
			for _, s := range secrets {
				if strings.Contains(logs, s) {
					t.Errorf("the log holds %q in clear", s)
				}
			}
			if n := hepMetric(t, sw, "sent"); n < 16 {
				t.Errorf("sipwake_hep_packets_total{result=sent} = %v, want 16 at least", n)
			}
		})
	}
}

// TestE2EHEPReceiverDownNeverDelaysSIP: with the HEP receiver down (nothing listens on its
// TCP port), SIP is answered as fast as ever, and nothing is counted sent.
func TestE2EHEPReceiverDownNeverDelaysSIP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	_ = l.Close()

	cfg := e2eConfig(t, nil, t.TempDir())
	cfg.HEP.Address = "tcp://" + down
	sw := startDaemon(t, cfg)
	ua := proxytest.NewUDP(t, "")
	start := time.Now()
	var slowest time.Duration
	for i := range 300 {
		t0 := time.Now()
		ua.Send(sw.UDP, "OPTIONS sip:"+sw.UDP+" SIP/2.0\nVia: SIP/2.0/UDP "+ua.Addr()+";branch=z9hG4bK-down"+strconv.Itoa(i)+
			"\nMax-Forwards: 70\nFrom: <sip:probe@test>;tag=d\nTo: <sip:"+sw.UDP+">\nCall-ID: down-"+strconv.Itoa(i)+"\nCSeq: 1 OPTIONS\n\n")
		ua.ExpectResponse(rawWait, 200)
		slowest = max(slowest, time.Since(t0))
	}
	if d := time.Since(start); d > 10*time.Second || slowest > time.Second {
		t.Errorf("300 OPTIONS took %s, the slowest %s, with the HEP receiver down", d, slowest)
	}
	if n := hepMetric(t, sw, "sent"); n != 0 {
		t.Errorf("sipwake_hep_packets_total{result=sent} = %v with the receiver down", n)
	}
	if !strings.Contains(sw.logs.String(), `"msg":"hep export down"`) {
		t.Error("no 'hep export down' log line")
	}
}

// TestE2ETraceSwitch: at log level info, a trace switch set through the admin API logs the
// messages of one AOR at info level, masked, and nothing of another AOR; once cleared,
// nothing more.
func TestE2ETraceSwitch(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	cfg := e2eConfig(t, kam, t.TempDir())
	cfg.Log.Level = "info"
	sw := startDaemon(t, cfg)
	admin := "http://" + sw.admin.Addr().String()
	call := func(method, path, body string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, admin+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := call(http.MethodPut, "/v1/trace", `{"aor": "sip:1001@pbx.test", "duration": "1m"}`); code != 200 || !strings.Contains(body, `"aor":"sip:1001@pbx.test"`) {
		t.Fatalf("PUT /v1/trace = %d %s", code, body)
	}
	if code, body := call(http.MethodGet, "/v1/trace", ""); code != 200 || strings.Count(body, `"id"`) != 1 {
		t.Fatalf("GET /v1/trace = %d %s", code, body)
	}
	params := ";pn-provider=apns;pn-prid=" + hepToken + ";pn-param=TEAM123456.com.example.phone.voip"
	dev1, dev2 := proxytest.NewUDP(t, ""), proxytest.NewUDP(t, "")
	cseq1, cseq2 := 0, 0
	if res := rawRegister(t, dev1, sw.UDP, "1001", "pw1001", params, "", &cseq1); res.StatusCode != 200 {
		t.Fatalf("register 1001: %d", res.StatusCode)
	}
	if res := rawRegister(t, dev2, sw.UDP, "1002", "pw1002", params, "", &cseq2); res.StatusCode != 200 {
		t.Fatalf("register 1002: %d", res.StatusCode)
	}
	traced := func() (n1001, other int) {
		for _, l := range traceLines(t, sw) {
			if l["level"] != "info" || l["trace"] == "" {
				t.Errorf("trace line %v", l)
			}
			if strings.HasPrefix(l["call_id"].(string), "reg-1001-") {
				n1001++
			} else {
				other++
			}
		}
		return n1001, other
	}
	deadline := time.Now().Add(5 * time.Second)
	n1001, other := traced()
	for n1001 < 8 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		n1001, other = traced()
	}
	// REGISTER, 401, REGISTER, 200 in from one side and out to the other.
	if n1001 < 8 || other != 0 {
		t.Errorf("%d lines of 1001's registration, %d of others; want 8 and 0", n1001, other)
	}
	if strings.Contains(sw.logs.String(), hepToken) {
		t.Error("the log holds the push token in clear")
	}

	if code, body := call(http.MethodDelete, "/v1/trace", ""); code != 200 || body != `{"cleared":1}`+"\n" {
		t.Fatalf("DELETE /v1/trace = %d %s", code, body)
	}
	if res := rawRegister(t, dev1, sw.UDP, "1001", "pw1001", params, "", &cseq1); res.StatusCode != 200 {
		t.Fatalf("register 1001 again: %d", res.StatusCode)
	}
	time.Sleep(300 * time.Millisecond)
	if n, o := traced(); n != n1001 || o != 0 {
		t.Errorf("after the switch was cleared: %d lines of 1001, %d of others", n, o)
	}
}
