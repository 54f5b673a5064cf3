package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/proxy/proxytest"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/storetest"
)

// The wake benchmarks run sipwake in-process on a real redis-server, with
// a raw UDP PBX on pbxIP (the trusted source) and a recording push
// notifier registered on the daemon's own push.Dispatcher: the wake
// module's production Pusher is unchanged, and a push counts as sent when
// a dispatcher worker hands it to the provider's notifier (where the
// APNs/FCM adapters would start their HTTP request). That is a little
// later than wake's call to Pusher.Send (one queue hop), so the figures
// are upper bounds of "INVITE received to push sent". The latency
// benchmarks log at info (the default level) into memory, the memory
// benchmark at warn, so that the log buffer does not count as heap.
//
//	go test -run '^$' -bench 'WakeInviteToPush' -benchtime 2000x ./cmd/sipwake/
//	go test -run '^$' -bench 'WakeRegisterToInvite' -benchtime 500x ./cmd/sipwake/
//	go test -run '^$' -bench 'WakeHeldMemory' -benchtime 1x ./cmd/sipwake/

// Push parameters of the benchmark devices (Android: a data push, so a
// call cancelled while its device sleeps ends at once).
const (
	wbProject = "sipwake-bench"
	wbDomain  = "pbx.test"
)

func wbPushParams(i int) string {
	return fmt.Sprintf(";pn-provider=fcm;pn-prid=fcm-bench-token-%08d:APA91bBench;pn-param=%s", i, wbProject)
}

func wbInstance(i int) string {
	return fmt.Sprintf("<urn:uuid:00000000-0000-4000-8000-%012d>", i)
}

// wbSDP is the offer of the PBX's INVITEs, so that a held INVITE has the
// size of a real one (about 1 KB with its headers).
const wbSDP = "v=0\n" +
	"o=- 3917412456 3917412456 IN IP4 127.0.0.2\n" +
	"s=pbx\n" +
	"c=IN IP4 127.0.0.2\n" +
	"t=0 0\n" +
	"m=audio 40000 RTP/AVP 0 8 9 101\n" +
	"a=rtpmap:0 PCMU/8000\n" +
	"a=rtpmap:8 PCMA/8000\n" +
	"a=rtpmap:9 G722/8000\n" +
	"a=rtpmap:101 telephone-event/8000\n" +
	"a=fmtp:101 0-16\n" +
	"a=ptime:20\n" +
	"a=sendrecv\n"

// wakeBench is a daemon with a raw PBX and a recording notifier.
type wakeBench struct {
	b   *testing.B
	sw  *running
	pbx *proxytest.UA
	rec *wbRecorder

	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	waiters map[string]chan *sip.Response // by Call-ID
	finals  map[string]int                // "INVITE 487" -> count
	regAt   atomic.Int64                  // unix ns of the PBX's last REGISTER 200
	regs    atomic.Int64                  // REGISTER 200s sent
}

// startWakeBench starts sipwake on a fresh redis-server in front of the
// raw PBX, with log level level and hold timeout hold.
func startWakeBench(b *testing.B, level string, hold time.Duration) *wakeBench {
	b.Helper()
	return startWakeBenchOn(b, level, hold, wbRedisStore())
}

// wbRedisStore has the daemon use a fresh redis-server started with the
// extra arguments args.
func wbRedisStore(args ...string) func(*testing.B, *Config) {
	return func(b *testing.B, cfg *Config) {
		addr := storetest.StartRedis(b, args...)
		cfg.Store.Driver = "redis"
		cfg.Store.Redis.Addresses = []string{addr}
	}
}

// startWakeBenchOn is startWakeBench with the store that setStore
// configures (e2eConfig's default: the embedded store in a temporary
// directory).
func startWakeBenchOn(b *testing.B, level string, hold time.Duration, setStore func(*testing.B, *Config)) *wakeBench {
	b.Helper()
	pbx := proxytest.NewUDP(b, pbxIP)
	cfg := e2eConfig(b, nil, b.TempDir())
	cfg.Log.Level = level
	cfg.SIP.Listen = []string{"udp://127.0.0.1:0", "tcp://127.0.0.1:0"}
	cfg.Upstream.URI = "sip:" + pbx.Addr()
	cfg.Upstream.Domains = []string{wbDomain}
	setStore(b, cfg)
	cfg.Wake.InviteHoldTimeout = hold
	sw := startDaemon(b, cfg)
	w := &wakeBench{b: b, sw: sw, pbx: pbx, rec: newWBRecorder(),
		stop: make(chan struct{}), done: make(chan struct{}),
		waiters: map[string]chan *sip.Response{}, finals: map[string]int{}}
	// No provider is configured: the recorder becomes the FCM notifier of
	// the daemon's dispatcher, behind its queue and workers.
	if err := sw.pusher.Register(push.ProviderFCM, w.rec); err != nil {
		b.Fatal(err)
	}
	go w.pbxLoop()
	b.Cleanup(func() { close(w.stop); <-w.done })
	return w
}

// pbxLoop plays the PBX: REGISTERs get a 200 echoing the Contact, INVITE
// failures are ACKed, responses go to their waiter.
func (w *wakeBench) pbxLoop() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		m, err := w.pbx.Recv(100 * time.Millisecond)
		if err != nil {
			continue
		}
		switch r := m.(type) {
		case *sip.Request:
			if r.Method == sip.REGISTER {
				c := r.GetHeader("Contact")
				w.regAt.Store(time.Now().UnixNano())
				w.pbx.Reply(w.sw.UDP, r, 200, "OK", "Contact: "+c.Value())
				w.regs.Add(1)
			}
		case *sip.Response:
			cs := r.CSeq()
			if r.StatusCode >= 200 {
				w.mu.Lock()
				w.finals[string(cs.MethodName)+" "+strconv.Itoa(r.StatusCode)]++
				w.mu.Unlock()
				if cs.MethodName == sip.INVITE && r.StatusCode >= 300 {
					w.pbx.SendRaw(w.sw.UDP, []byte(wbAck(r)))
				}
			}
			w.mu.Lock()
			ch := w.waiters[r.CallID().Value()]
			w.mu.Unlock()
			if ch != nil {
				select {
				case ch <- r:
				default:
				}
			}
		}
	}
}

// wbAck is the hop-by-hop ACK of a non-2xx final response to one of our
// INVITEs (whose To URI is its Request-URI).
func wbAck(r *sip.Response) string {
	cs := r.CSeq()
	return proxytest.CRLF("ACK " + r.To().Address.String() + " SIP/2.0\n" +
		"Via: " + r.Via().Value() + "\n" +
		"Max-Forwards: 70\n" +
		"From: " + r.From().Value() + "\n" +
		"To: " + r.To().Value() + "\n" +
		"Call-ID: " + r.CallID().Value() + "\n" +
		"CSeq: " + strconv.Itoa(int(cs.SeqNo)) + " ACK\n\n")
}

func (w *wakeBench) final(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.finals[key]
}

// wait registers a waiter for the responses of a Call-ID.
func (w *wakeBench) wait(callID string) chan *sip.Response {
	ch := make(chan *sip.Response, 8)
	w.mu.Lock()
	w.waiters[callID] = ch
	w.mu.Unlock()
	return ch
}

func (w *wakeBench) unwait(callID string) {
	w.mu.Lock()
	delete(w.waiters, callID)
	w.mu.Unlock()
}

// inviteText is the PBX's INVITE to a sipwake contact.
func (w *wakeBench) inviteText(ruri, callID string) string {
	return "INVITE " + ruri + " SIP/2.0\n" +
		"Via: SIP/2.0/UDP " + w.pbx.Addr() + ";branch=z9hG4bK-" + callID + ";rport\n" +
		"Max-Forwards: 69\n" +
		"From: \"Alice Caller\" <sip:1002@" + wbDomain + ">;tag=f-" + callID + "\n" +
		"To: <" + ruri + ">\n" +
		"Call-ID: " + callID + "\n" +
		"CSeq: 101 INVITE\n" +
		"Contact: <sip:1002@" + w.pbx.Addr() + ">\n" +
		"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, INFO, UPDATE\n" +
		"Supported: replaces, timer\n" +
		"User-Agent: bench-pbx/1.0\n" +
		"Content-Type: application/sdp\n\n" + wbSDP
}

// cancelText is the PBX's CANCEL of that INVITE.
func (w *wakeBench) cancelText(ruri, callID string) string {
	return "CANCEL " + ruri + " SIP/2.0\n" +
		"Via: SIP/2.0/UDP " + w.pbx.Addr() + ";branch=z9hG4bK-" + callID + ";rport\n" +
		"Max-Forwards: 70\n" +
		"From: \"Alice Caller\" <sip:1002@" + wbDomain + ">;tag=f-" + callID + "\n" +
		"To: <" + ruri + ">\n" +
		"Call-ID: " + callID + "\n" +
		"CSeq: 101 CANCEL\n\n"
}

// putSleeping stores n bindings of sleeping Android devices (their TCP
// flow is gone) straight into the store, as the registrar would after
// their REGISTER, and returns their sipwake contacts.
func (w *wakeBench) putSleeping(n int) []string {
	b := w.b
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	key, err := w.sw.store.Secret(ctx, "binding-token", 32)
	if err != nil {
		b.Fatal(err)
	}
	nodeURI := "sip:" + w.sw.UDP
	out := make([]string, n)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				user := strconv.Itoa(300000 + i)
				src := "127.0.0.1:" + strconv.Itoa(1+i%60000) // no such connection
				var u sip.Uri
				if err := sip.ParseUri("sip:"+user+"@"+src+";transport=tcp"+wbPushParams(i), &u); err != nil {
					errs <- err
					return
				}
				pt, _, err := registrar.ParsePush(u.UriParams, sip.NewParams())
				if err != nil {
					errs <- err
					return
				}
				clean := *u.Clone()
				clean.UriParams = registrar.StripPush(clean.UriParams)
				aor := "sip:" + user + "@" + wbDomain
				id := registrar.DeviceIdentity(wbInstance(i), pt, clean)
				now := time.Now()
				bd := store.Binding{
					AOR: aor, Instance: id, SIPInstance: strings.Trim(wbInstance(i), "<>"),
					Contact: clean.String(), Source: src, Transport: "tcp",
					Flow:    store.Flow{Node: w.sw.cfg.NodeID, Conn: src, NodeURI: nodeURI},
					Push:    pt,
					Token:   registrar.BindingToken(key, aor, id),
					Expires: now.Add(time.Hour), LastSeen: now,
					Upstream: store.Upstream{CallID: "bench-reg-" + user, CSeq: 1, Expires: now.Add(time.Hour)},
				}
				if _, err := w.sw.store.PutBinding(ctx, bd, 10); err != nil {
					errs <- err
					return
				}
				out[i] = "sip:" + bd.Token + "@" + w.sw.UDP
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("binding not stored: %v", err)
	}
	return out
}

// heldGauge reads sipwake_wake_invites_held from the daemon's /metrics.
func (w *wakeBench) heldGauge() float64 {
	res, err := http.Get("http://" + w.sw.ops.Addr().String() + "/metrics")
	if err != nil {
		w.b.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "sipwake_wake_invites_held "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return -1
}

// wbRecorder is the FCM notifier: it takes every push at once (200) and
// records when each call push reached it.
type wbRecorder struct {
	calls atomic.Int64 // call pushes
	other atomic.Int64 // cancelled/missed/answered-elsewhere pushes

	mu   sync.Mutex
	seen map[string]chan time.Time // by Call-ID
}

func newWBRecorder() *wbRecorder { return &wbRecorder{seen: map[string]chan time.Time{}} }

// expect prepares for a call push of callID; the channel gets its time.
func (r *wbRecorder) expect(callID string) chan time.Time {
	ch := make(chan time.Time, 1)
	r.mu.Lock()
	r.seen[callID] = ch
	r.mu.Unlock()
	return ch
}

func (r *wbRecorder) forget(callID string) {
	r.mu.Lock()
	delete(r.seen, callID)
	r.mu.Unlock()
}

// Notify implements push.Notifier.
func (r *wbRecorder) Notify(_ context.Context, n *push.Notification) (push.Result, error) {
	now := time.Now()
	if n.Payload.Event != push.EventCall {
		r.other.Add(1)
		return push.Result{ID: "bench", Status: 200}, nil
	}
	r.mu.Lock()
	ch := r.seen[n.Payload.CallID]
	r.mu.Unlock()
	if ch != nil {
		select {
		case ch <- now:
		default:
		}
	}
	r.calls.Add(1)
	return push.Result{ID: "bench", Status: 200}, nil
}

// wbPercentiles reports p50 and p99 of ds in milliseconds.
func wbPercentiles(b *testing.B, prefix string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return float64(s[max(i, 0)]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0.50), prefix+"p50-ms")
	b.ReportMetric(q(0.99), prefix+"p99-ms")
	b.ReportMetric(float64(s[len(s)-1])/float64(time.Millisecond), prefix+"max-ms")
}

// BenchmarkWakeInviteToPush measures the time from the PBX sending an
// INVITE for a sleeping push device's sipwake contact to the push
// reaching the provider's notifier (Redis store, binding lookup by token,
// wake module, push dispatcher), one call at a time. Each call is then
// cancelled by the PBX (200, 487, ACK) before the next.
func BenchmarkWakeInviteToPush(b *testing.B) {
	w := startWakeBench(b, "info", 30*time.Second)
	contacts := w.putSleeping(100)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ruri := contacts[i%len(contacts)]
		callID := "wb1-" + strconv.Itoa(i)
		pushed := w.rec.expect(callID)
		res := w.wait(callID)
		start := time.Now()
		w.pbx.Send(w.sw.UDP, w.inviteText(ruri, callID))
		select {
		case at := <-pushed:
			lat = append(lat, at.Sub(start))
		case <-time.After(5 * time.Second):
			b.Fatalf("call %d: no push", i)
		}
		w.pbx.Send(w.sw.UDP, w.cancelText(ruri, callID))
		if got := wbWaitFinal(res, sip.INVITE, 5*time.Second); got != 487 {
			b.Fatalf("call %d: INVITE answered %d after CANCEL, want 487", i, got)
		}
		w.unwait(callID)
		w.rec.forget(callID)
	}
	b.StopTimer()
	wbPercentiles(b, "", lat)
}

// wbWaitFinal returns the status of the first final response to method
// on ch, 0 on timeout.
func wbWaitFinal(ch chan *sip.Response, method sip.RequestMethod, d time.Duration) int {
	deadline := time.After(d)
	for {
		select {
		case r := <-ch:
			if r.StatusCode >= 200 && r.CSeq().MethodName == method {
				return r.StatusCode
			}
		case <-deadline:
			return 0
		}
	}
}

// BenchmarkWakeRegisterToInvite measures, for a held INVITE whose device
// was pushed, the time from the PBX's 200 to the woken device's REGISTER
// (sipwake then stores the binding in Redis, relays the 200, publishes
// the event that the wake module takes) to the INVITE reaching the device
// over its new TCP connection. It also reports the time from the device
// getting its own 200 to getting the INVITE (dev-…; negative when the
// INVITE overtakes the 200). One call at a time: the device sleeps (TCP
// closed), the PBX calls, the push is seen, the device registers, takes
// the INVITE and answers 486, which goes back to the PBX.
func BenchmarkWakeRegisterToInvite(b *testing.B) {
	w := startWakeBench(b, "info", 30*time.Second)
	const user = "2001"
	aor := "sip:" + user + "@" + wbDomain
	cseq := 0
	// register sends the device's REGISTER from a new TCP connection and
	// waits for its 200 and, when wantInvite, for the held INVITE too,
	// noting when each arrived.
	register := func(wantInvite bool) (dev *proxytest.UA, got200, gotInv time.Time, inv *sip.Request) {
		dev = proxytest.DialTCP(b, "", w.sw.TCP)
		cseq++
		dev.Send(w.sw.TCP, wbRegisterText(dev, user, 1, cseq))
		for deadline := time.Now().Add(5 * time.Second); got200.IsZero() || (wantInvite && inv == nil); {
			m, err := dev.Recv(time.Until(deadline))
			if err != nil {
				b.Fatalf("register: 200 at %v, INVITE %v: %v", got200, inv != nil, err)
			}
			now := time.Now()
			switch r := m.(type) {
			case *sip.Response:
				if r.StatusCode >= 200 {
					if r.StatusCode != 200 {
						b.Fatalf("register: %d %s", r.StatusCode, r.Reason)
					}
					got200 = now
				}
			case *sip.Request:
				if r.Method == sip.INVITE && inv == nil {
					inv, gotInv = r, now
				}
			}
		}
		return dev, got200, gotInv, inv
	}
	sleep := w.sleepDevice
	dev, _, _, _ := register(false)
	bs := w.sw.bindings(b, aor)
	if len(bs) != 1 || bs[0].Push == nil {
		b.Fatalf("bindings %+v", bs)
	}
	ruri := "sip:" + bs[0].Token + "@" + w.sw.UDP
	sleep(dev)

	lat := make([]time.Duration, 0, b.N)
	devLat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		callID := "wb2-" + strconv.Itoa(i)
		pushed := w.rec.expect(callID)
		res := w.wait(callID)
		w.pbx.Send(w.sw.UDP, w.inviteText(ruri, callID))
		select {
		case <-pushed:
		case <-time.After(5 * time.Second):
			b.Fatalf("call %d: no push", i)
		}
		regs := w.regs.Load()
		dev, got200, at, inv := register(true)
		if w.regs.Load() != regs+1 {
			b.Fatalf("call %d: the PBX answered %d REGISTERs", i, w.regs.Load()-regs)
		}
		pbx200 := time.Unix(0, w.regAt.Load())
		if inv.CallID().Value() != callID {
			b.Fatalf("call %d: INVITE for %s", i, inv.CallID().Value())
		}
		lat = append(lat, at.Sub(pbx200))
		devLat = append(devLat, at.Sub(got200))
		dev.Reply(w.sw.TCP, inv, 486, "Busy Here")
		if got := wbWaitFinal(res, sip.INVITE, 5*time.Second); got != 486 {
			b.Fatalf("call %d: PBX got %d, want 486", i, got)
		}
		w.unwait(callID)
		w.rec.forget(callID)
		sleep(dev)
	}
	b.StopTimer()
	wbPercentiles(b, "", lat)
	wbPercentiles(b, "dev-", devLat)
}

// wbRegisterText is the REGISTER of device idx (its push parameters and
// instance) for user over dev's TCP connection, with CSeq cseq.
func wbRegisterText(dev *proxytest.UA, user string, idx, cseq int) string {
	aor := "sip:" + user + "@" + wbDomain
	return "REGISTER sip:" + wbDomain + " SIP/2.0\n" +
		"Via: SIP/2.0/TCP " + dev.Addr() + ";branch=z9hG4bK-reg" + strconv.Itoa(cseq) + ";rport\n" +
		"Max-Forwards: 70\n" +
		"From: <" + aor + ">;tag=reg" + user + "\n" +
		"To: <" + aor + ">\n" +
		"Call-ID: bench-reg-" + user + "\n" +
		"CSeq: " + strconv.Itoa(cseq) + " REGISTER\n" +
		"Contact: <sip:" + user + "@" + dev.Addr() + ";transport=tcp" + wbPushParams(idx) + ">;+sip.instance=\"" + wbInstance(idx) + "\";expires=600\n" +
		"User-Agent: bench-phone/1.0\n\n"
}

// sleepDevice closes the device's TCP connection and waits until sipwake
// has let go of the flow.
func (w *wakeBench) sleepDevice(dev *proxytest.UA) {
	b := w.b
	src := dev.Addr()
	dev.Close()
	for deadline := time.Now().Add(5 * time.Second); w.sw.srv.FlowAlive("tcp", src); {
		if time.Now().After(deadline) {
			b.Fatal("sipwake still holds the closed connection")
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkWakeHeldMemory holds wbHeld INVITEs at once; they arrive at
// wbHoldRate a second.
const (
	wbHeld     = 10000
	wbHoldRate = 2000
)

// BenchmarkWakeHeldMemory holds 10,000 INVITEs at once, one per distinct
// Call-ID and sleeping device (the pusher answers every push OK, nobody
// registers), then measures after a GC the growth of the heap in use
// (and of heap plus goroutine stacks) and of goroutines per held INVITE
// against the idle daemon; then the PBX cancels every call and each must
// end 487. The INVITEs go out at 2,000 a second (at most 200 waiting for
// their push); the INVITE-to-push latency at that rate is reported too
// (load-…), and held-calls/s is the rate actually reached.
// It runs one round whatever b.N (about 10 s; -benchtime 1x). With
// SIPWAKE_BENCH_PROFILES=dir it writes heap.pprof and goroutine.txt of
// the process while the calls are held (go tool pprof -sample_index
// inuse_space).
func BenchmarkWakeHeldMemory(b *testing.B) {
	w := startWakeBench(b, "warn", 120*time.Second)
	contacts := w.putSleeping(wbHeld)
	b.StopTimer()
	// One round whatever b.N (so that -bench Wake with a count-based
	// -benchtime stays bounded): the figures are per held INVITE.
	wbHoldRound(b, w, contacts, 0)
}

func wbHoldRound(b *testing.B, w *wakeBench, contacts []string, round int) {
	n := len(contacts)
	ids := make([]string, n)
	pushed := make([]chan time.Time, n)
	sent := make([]time.Time, n)
	for i := range n {
		ids[i] = "wb3-" + strconv.Itoa(round) + "-" + strconv.Itoa(i)
		pushed[i] = w.rec.expect(ids[i])
	}
	callsBefore := w.rec.calls.Load()
	inv0, can0 := w.final("INVITE 487"), w.final("CANCEL 200")

	time.Sleep(200 * time.Millisecond)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()

	b.StartTimer()
	start := time.Now()
	const window = 200
	for i := 0; i < n; i++ {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / wbHoldRate)); d > 0 {
			time.Sleep(d)
		}
		for int64(i)-(w.rec.calls.Load()-callsBefore) >= window {
			time.Sleep(100 * time.Microsecond)
		}
		sent[i] = time.Now()
		w.pbx.Send(w.sw.UDP, w.inviteText(contacts[i], ids[i]))
	}
	for deadline := time.Now().Add(30 * time.Second); w.rec.calls.Load()-callsBefore < int64(n); {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d calls pushed", w.rec.calls.Load()-callsBefore, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	held := time.Since(start)
	b.StopTimer()
	// Let the held records reach Redis (one short goroutine per call).
	time.Sleep(time.Second)
	if got := w.heldGauge(); got != float64(n) {
		b.Fatalf("%v INVITEs held, want %d", got, n)
	}
	if f := w.final("INVITE 487") - inv0; f != 0 {
		b.Fatalf("%d calls answered while held", f)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	g1 := runtime.NumGoroutine()
	if dir := os.Getenv("SIPWAKE_BENCH_PROFILES"); dir != "" && round == 0 {
		wbWriteProfiles(b, dir)
	}

	lat := make([]time.Duration, n)
	for i := range n {
		lat[i] = (<-pushed[i]).Sub(sent[i])
		w.rec.forget(ids[i])
	}
	heap := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / float64(n)
	stack := float64(int64(after.StackInuse)-int64(before.StackInuse)) / float64(n)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(heap/1024, "heap-KiB/held")
	b.ReportMetric((heap+stack)/1024, "heap+stack-KiB/held")
	b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/held")
	b.ReportMetric(float64(n)/held.Seconds(), "held-calls/s")
	wbPercentiles(b, "load-", lat)
	b.Logf("round %d: %d held in %v; heap in use %d -> %d MiB, stacks %d -> %d MiB, goroutines %d -> %d",
		round, n, held.Round(time.Millisecond), before.HeapInuse>>20, after.HeapInuse>>20,
		before.StackInuse>>20, after.StackInuse>>20, g0, g1)

	// Every call is cancelled and must end 487. The 200s to the CANCELs
	// are sent once over UDP: one lost at the raw PBX's socket (counted in
	// the kernel's UDP receive-buffer errors) is not a failure of sipwake.
	drops0 := wbUDPRcvbufErrors()
	const cancelWindow = 50
	for i := 0; i < n; i++ {
		for i-(w.final("INVITE 487")-inv0) >= cancelWindow {
			time.Sleep(100 * time.Microsecond)
		}
		w.pbx.Send(w.sw.UDP, w.cancelText(contacts[i], ids[i]))
	}
	for deadline := time.Now().Add(30 * time.Second); w.final("INVITE 487")-inv0 < n || w.final("CANCEL 200")-can0 < n; {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	ok, cancels := w.final("INVITE 487")-inv0, w.final("CANCEL 200")-can0
	b.ReportMetric(float64(n-ok), "failed")
	if ok != n {
		w.mu.Lock()
		b.Errorf("after CANCEL: %d of %d INVITEs ended 487; finals %v", ok, n, w.finals)
		w.mu.Unlock()
	}
	if cancels != n {
		b.Logf("%d of %d 200s to the CANCELs reached the PBX; UDP receive-buffer drops on the machine meanwhile: %d",
			cancels, n, wbUDPRcvbufErrors()-drops0)
	}
	for deadline := time.Now().Add(10 * time.Second); w.heldGauge() != 0; {
		if time.Now().After(deadline) {
			b.Errorf("%v calls still held after the cancels", w.heldGauge())
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wbWriteProfiles writes the heap profile and the goroutine stacks of the
// process to dir.
func wbWriteProfiles(b *testing.B, dir string) {
	for name, debug := range map[string]int{"heap.pprof": 0, "goroutine.txt": 1} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup(strings.Split(strings.TrimSuffix(name, ".txt"), ".")[0]).WriteTo(f, debug); err != nil {
			b.Fatal(err)
		}
		_ = f.Close()
	}
}

// wbUDPRcvbufErrors is the machine's count of UDP datagrams dropped for a
// full socket receive buffer (/proc/net/snmp), -1 when unknown.
func wbUDPRcvbufErrors() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return -1
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return -1
}
