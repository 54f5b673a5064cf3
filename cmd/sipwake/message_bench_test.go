package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/proxy/proxytest"
	redisstore "github.com/sipwake/sipwake/store/redis"
)

// The MESSAGE benchmarks reuse the wake benchmarks' set-up (in-process
// sipwake, a raw UDP PBX on pbxIP, bindings put straight into the store,
// the recording notifier on the daemon's push dispatcher), on two
// stores, each as durable as sipwake asks for a 202:
//
//   - redis-aof-always: a fresh redis-server with appendonly yes and
//     appendfsync always (its AOF in a temporary directory);
//   - embedded: the bbolt file in a temporary directory (fsync per
//     committed write transaction).
//
// Both files are on the temporary directory's file system (TMPDIR): on
// tmpfs an fsync costs nothing and the figures say nothing about disks.
// Logs are at info (the default level), into memory.
//
//	go test -run '^$' -bench 'MessageStore' -benchtime 2000x ./cmd/sipwake/
//	go test -run '^$' -bench 'MessageRegisterToFirst' -benchtime 100x ./cmd/sipwake/

// mbStores are the stores the MESSAGE benchmarks run on.
var mbStores = []struct {
	name string
	set  func(*testing.B, *Config)
}{
	{"redis-aof-always", wbRedisStore("--appendonly", "yes", "--appendfsync", "always")},
	{"embedded", func(_ *testing.B, cfg *Config) { cfg.Store.Driver = "embedded" }}, // e2eConfig's path in b.TempDir()
}

// startMessageBench is startWakeBenchOn for the MESSAGE benchmarks: on
// Redis, it checks that the server the daemon uses fsyncs its AOF before
// every reply.
func startMessageBench(b *testing.B, setStore func(*testing.B, *Config)) *wakeBench {
	b.Helper()
	w := startWakeBenchOn(b, "info", 30*time.Second, setStore)
	if rs, ok := w.sw.store.(*redisstore.Store); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d, err := rs.CheckDurability(ctx)
		if err != nil || d.AppendOnly != "yes" || d.AppendFsync != "always" {
			b.Fatalf("redis durability %+v (%v), want appendonly yes, appendfsync always", d, err)
		}
	}
	return w
}

// mbDevices is how many sleeping devices BenchmarkMessageStore writes to
// (round robin).
const mbDevices = 100

// mbBody is the text of the PBX's MESSAGEs (about 550 bytes a request
// with its headers).
const mbBody = "Hi! Are you free for a quick call about the quarterly figures this afternoon? Around 3 would suit me."

// messageText is the PBX's MESSAGE to a sipwake contact, with CRLF line
// ends and its Content-Length, ready to send.
func (w *wakeBench) messageText(ruri, callID string, cseq int) []byte {
	return []byte(proxytest.CRLF("MESSAGE " + ruri + " SIP/2.0\n" +
		"Via: SIP/2.0/UDP " + w.pbx.Addr() + ";branch=z9hG4bK-" + callID + ";rport\n" +
		"Max-Forwards: 69\n" +
		"From: \"Alice Sender\" <sip:1002@" + wbDomain + ">;tag=m-" + callID + "\n" +
		"To: <" + ruri + ">\n" +
		"Call-ID: " + callID + "\n" +
		"CSeq: " + strconv.Itoa(cseq) + " MESSAGE\n" +
		"Content-Type: text/plain;charset=UTF-8\n" +
		"Accept: text/plain, message/imdn+xml\n" +
		"User-Agent: bench-pbx/1.0\n\n" + mbBody))
}

// mbSent is the outcome of sendMessages.
type mbSent struct {
	lat     []time.Duration // MESSAGE sent to its final response, by message
	codes   []int           // final status, 0 when none within 5 s
	elapsed time.Duration   // first MESSAGE sent to last final response
}

// sendMessages sends the PBX's MESSAGEs texts[i] (Call-ID ids[i]) with at
// most inflight waiting for their final response at a time (a closed
// loop), and waits for each one's final response. After a MESSAGE without
// an answer it sends no more.
func (w *wakeBench) sendMessages(texts [][]byte, ids []string, inflight int) mbSent {
	n := len(ids)
	r := mbSent{lat: make([]time.Duration, n), codes: make([]int, n)}
	var (
		next   atomic.Int64
		failed atomic.Bool
		wg     sync.WaitGroup
	)
	start := time.Now()
	for range min(inflight, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				ch := w.wait(ids[i])
				t0 := time.Now()
				w.pbx.SendRaw(w.sw.UDP, texts[i])
				r.codes[i] = wbWaitFinal(ch, sip.MESSAGE, 5*time.Second)
				r.lat[i] = time.Since(t0)
				w.unwait(ids[i])
				if r.codes[i] == 0 {
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	return r
}

// check fails the benchmark unless every MESSAGE was answered want.
func (r mbSent) check(b *testing.B, want int) {
	b.Helper()
	bad := map[int]int{}
	for _, c := range r.codes {
		if c != want {
			bad[c]++
		}
	}
	if len(bad) > 0 {
		b.Fatalf("of %d MESSAGEs, not answered %d: %v (status: count; 0 = no answer)", len(r.codes), want, bad)
	}
}

// metric reads one sample (name with its labels, as exposed) from the
// daemon's /metrics; -1 when absent.
func (w *wakeBench) metric(name string) float64 {
	res, err := http.Get("http://" + w.sw.ops.Addr().String() + "/metrics")
	if err != nil {
		w.b.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return -1
}

// waitMetric polls metric name until it reaches want (5 s at most).
func (w *wakeBench) waitMetric(name string, want float64) float64 {
	deadline := time.Now().Add(5 * time.Second)
	for {
		v := w.metric(name)
		if v >= want || time.Now().After(deadline) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkMessageStore measures the rate of MESSAGEs stored durably and
// answered 202 Accepted: the PBX sends b.N MESSAGEs (distinct Call-IDs)
// for the sipwake contacts of 100 sleeping Android devices (push
// parameters, no flow: no device is offered the message, it is stored at
// once), keeping 1, 16 or 64 waiting for their answer at a time; each
// must be answered 202 and counted stored. It reports messages/s (b.N
// over the time from the first MESSAGE to the last 202) and the p50, p99
// and max of MESSAGE to 202 at the PBX. Before the timed MESSAGEs,
// 2×inflight others warm the daemon's store connections and scripts up.
// Each stored message also gets its data push (to the recording
// notifier), as in production; the pushes do not delay the 202.
func BenchmarkMessageStore(b *testing.B) {
	for _, st := range mbStores {
		for _, inflight := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("store=%s/inflight=%d", st.name, inflight), func(b *testing.B) {
				w := startMessageBench(b, st.set)
				contacts := w.putSleeping(mbDevices)
				prepare := func(prefix string, n int) ([][]byte, []string) {
					texts, ids := make([][]byte, n), make([]string, n)
					for i := range n {
						ids[i] = prefix + strconv.Itoa(i)
						texts[i] = w.messageText(contacts[i%len(contacts)], ids[i], 1+i%1000)
					}
					return texts, ids
				}
				wt, wi := prepare("mb1-warm-", 2*inflight)
				w.sendMessages(wt, wi, inflight).check(b, 202)
				const stored = "sipwake_wake_messages_stored_total"
				stored0 := w.waitMetric(stored, float64(2*inflight))
				texts, ids := prepare("mb1-", b.N)

				b.ResetTimer()
				r := w.sendMessages(texts, ids, inflight)
				b.StopTimer()
				r.check(b, 202)
				if got := w.waitMetric(stored, stored0+float64(b.N)) - stored0; got != float64(b.N) {
					b.Fatalf("%v of %d MESSAGEs counted stored", got, b.N)
				}
				b.ReportMetric(float64(b.N)/r.elapsed.Seconds(), "msgs/s")
				wbPercentiles(b, "", r.lat)
			})
		}
	}
}

// BenchmarkMessageRegisterToFirst measures, for a sleeping device with 1,
// 10 or 100 stored messages waiting, the time from the PBX's 200 to the
// device's REGISTER (sipwake then stores the binding, relays the 200 and
// publishes the binding event the wake module takes, which reads the
// device's pending messages, takes its delivery lease and sends them one
// by one over the new TCP connection) to the first stored message
// reaching the device (first-…), and to the last of them (last-…). It
// also reports both from the device getting its own 200 (dev-first-…),
// and the mean time per message after the first (per-msg-ms). Per
// iteration: the device sleeps (its TCP connection closed), the PBX sends
// it the messages (each answered 202; 16 in flight), the device registers
// from a new connection and answers each MESSAGE 200 at once; the
// messages must arrive in their stored (arrival) order, each once, and
// none be left pending before the device sleeps again. ns/op is not
// reported (an iteration includes storing the messages).
func BenchmarkMessageRegisterToFirst(b *testing.B) {
	for _, st := range mbStores {
		for _, waiting := range []int{1, 10, 100} {
			b.Run(fmt.Sprintf("store=%s/waiting=%d", st.name, waiting), func(b *testing.B) {
				mbRegisterToFirst(b, st.set, waiting)
			})
		}
	}
}

func mbRegisterToFirst(b *testing.B, setStore func(*testing.B, *Config), waiting int) {
	w := startMessageBench(b, setStore)
	const user = "2101"
	aor := "sip:" + user + "@" + wbDomain
	cseq := 0
	dev := proxytest.DialTCP(b, "", w.sw.TCP)
	cseq++
	dev.Send(w.sw.TCP, wbRegisterText(dev, user, 2, cseq))
	dev.ExpectResponse(5*time.Second, 200)
	bs := w.sw.bindings(b, aor)
	if len(bs) != 1 || bs[0].Push == nil {
		b.Fatalf("bindings %+v", bs)
	}
	ruri, inst := "sip:"+bs[0].Token+"@"+w.sw.UDP, bs[0].Instance
	w.sleepDevice(dev)

	pendingCallIDs := func() []string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms, err := w.sw.store.MessagesFor(ctx, aor, inst, 0)
		if err != nil {
			b.Fatal(err)
		}
		out := make([]string, len(ms))
		for i, m := range ms {
			_, rest, _ := bytes.Cut(m.Request, []byte("\r\nCall-ID: "))
			id, _, _ := bytes.Cut(rest, []byte("\r\n"))
			out[i] = string(id)
		}
		return out
	}

	first := make([]time.Duration, 0, b.N)
	devFirst := make([]time.Duration, 0, b.N)
	last := make([]time.Duration, 0, b.N)
	var perMsg time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		texts, ids := make([][]byte, waiting), make([]string, waiting)
		for j := range waiting {
			ids[j] = "mb2-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
			texts[j] = w.messageText(ruri, ids[j], 1)
		}
		w.sendMessages(texts, ids, 16).check(b, 202)
		want := pendingCallIDs()
		if len(want) != waiting {
			b.Fatalf("round %d: %d messages pending, want %d", i, len(want), waiting)
		}

		regs := w.regs.Load()
		dev := proxytest.DialTCP(b, "", w.sw.TCP)
		cseq++
		dev.Send(w.sw.TCP, wbRegisterText(dev, user, 2, cseq))
		var (
			got200, firstAt, lastAt time.Time
			got                     []string
		)
		for deadline := time.Now().Add(20 * time.Second); got200.IsZero() || len(got) < waiting; {
			m, err := dev.Recv(time.Until(deadline))
			if err != nil {
				b.Fatalf("round %d: 200 at %v, %d of %d messages: %v", i, got200, len(got), waiting, err)
			}
			now := time.Now()
			switch r := m.(type) {
			case *sip.Response:
				if r.StatusCode >= 200 && r.CSeq().MethodName == sip.REGISTER {
					if r.StatusCode != 200 {
						b.Fatalf("round %d: REGISTER %d %s", i, r.StatusCode, r.Reason)
					}
					got200 = now
				}
			case *sip.Request:
				if r.Method != sip.MESSAGE {
					continue
				}
				dev.Reply(w.sw.TCP, r, 200, "OK")
				if firstAt.IsZero() {
					firstAt = now
				}
				lastAt = now
				got = append(got, r.CallID().Value())
			}
		}
		if w.regs.Load() != regs+1 {
			b.Fatalf("round %d: the PBX answered %d REGISTERs", i, w.regs.Load()-regs)
		}
		if !slices.Equal(got, want) {
			b.Fatalf("round %d: delivered %v, want (arrival order) %v", i, got, want)
		}
		pbx200 := time.Unix(0, w.regAt.Load())
		first = append(first, firstAt.Sub(pbx200))
		devFirst = append(devFirst, firstAt.Sub(got200))
		last = append(last, lastAt.Sub(pbx200))
		perMsg += lastAt.Sub(firstAt)
		for deadline := time.Now().Add(5 * time.Second); len(pendingCallIDs()) > 0; {
			if time.Now().After(deadline) {
				b.Fatalf("round %d: %d messages still pending after delivery", i, len(pendingCallIDs()))
			}
			time.Sleep(time.Millisecond)
		}
		w.sleepDevice(dev)
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	wbPercentiles(b, "first-", first)
	wbPercentiles(b, "dev-first-", devFirst)
	if waiting > 1 {
		wbPercentiles(b, "last-", last)
		b.ReportMetric(float64(perMsg)/float64(time.Millisecond)/float64(b.N*(waiting-1)), "per-msg-ms")
	}
}
