//go:build sipbench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/store/storetest"
)

//go:embed testdata
var testdata embed.FS

// Addresses: the SIPp clients and both proxies on 127.0.0.1, what stands
// behind the proxy (SIPp UAS, Kamailio PBX) on 127.0.0.2, which is also
// sipwake's only trusted source.
const (
	clientIP   = "127.0.0.1"
	peerIP     = "127.0.0.2"
	callDomain = "bench.test"
	clkTck     = 100 // USER_HZ: /proc/<pid>/stat and /proc/stat count in 1/100 s on Linux
)

// settings are the knobs of one bench run (see doc.go).
type settings struct {
	secs          int
	inviteRates   []int
	registerRates []int
	after         time.Duration
	budget        time.Duration
	tests         []string // in testOrder
	users         int
	devices       int // pbx-to-device: devices registered per path
	maxQuiet      time.Duration
	settle        time.Duration // final memory sample of sipwake, after its last run
	retryOther    float64       // other_cpu (% of a core) above which a failed run is repeated once
	keepGoing     bool          // run every rate even after a failed one
}

func loadSettings(t *testing.T) settings {
	s := settings{
		secs:          6,
		inviteRates:   []int{500, 1000, 2000, 3000, 4000, 5000},
		registerRates: []int{1000, 2000, 3000, 5000, 8000, 10000, 12000, 15000},
		after:         10 * time.Second,
		budget:        18 * time.Minute,
		users:         10000,
		devices:       500,
		maxQuiet:      10 * time.Second,
		settle:        40 * time.Second,
		retryOther:    15,
	}
	if v := os.Getenv("SIPWAKE_BENCH_SECS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 60 {
			t.Fatalf("SIPWAKE_BENCH_SECS=%q: want 1..60", v)
		}
		s.secs = n
	}
	rates := func(name string, def []int) []int {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		var out []int
		for _, f := range strings.Fields(strings.ReplaceAll(v, ",", " ")) {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n > 50000 {
				t.Fatalf("%s=%q: want rates between 1 and 50000", name, v)
			}
			out = append(out, n)
		}
		return out
	}
	s.inviteRates = rates("SIPWAKE_BENCH_INVITE_RATES", s.inviteRates)
	s.registerRates = rates("SIPWAKE_BENCH_REGISTER_RATES", s.registerRates)
	dur := func(name string, def time.Duration) time.Duration {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			t.Fatalf("%s=%q: want a duration such as 10s", name, v)
		}
		return d
	}
	s.after = dur("SIPWAKE_BENCH_AFTER", s.after)
	s.settle = dur("SIPWAKE_BENCH_SETTLE", s.settle)
	s.budget = dur("SIPWAKE_BENCH_BUDGET", s.budget)
	if v := os.Getenv("SIPWAKE_BENCH_DEVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			t.Fatalf("SIPWAKE_BENCH_DEVICES=%q: want 1..10000", v)
		}
		s.devices = n
	}
	s.keepGoing = os.Getenv("SIPWAKE_BENCH_KEEP_GOING") == "1"
	s.tests = []string{"invite", "register", "register-uas"} // the default: pbx-to-device only when asked for
	if v := os.Getenv("SIPWAKE_BENCH_ONLY"); v != "" {
		want := map[string]bool{}
		for _, f := range strings.Fields(strings.ReplaceAll(v, ",", " ")) {
			if _, ok := testWeight[f]; !ok {
				t.Fatalf("SIPWAKE_BENCH_ONLY=%q: want one or more of %s", v, strings.Join(testOrder, ", "))
			}
			want[f] = true
		}
		s.tests = nil
		for _, name := range testOrder {
			if want[name] {
				s.tests = append(s.tests, name)
			}
		}
	}
	return s
}

// testOrder is the order the tests run in; testWeight is each one's share
// of the time budget left when it starts, relative to the tests after it
// (invite, register, register-uas: 45, 55 and 55 shares).
var (
	testOrder  = []string{"invite", "pbx-to-device", "register", "register-uas"}
	testWeight = map[string]int{"invite": 45, "pbx-to-device": 45, "register": 55, "register-uas": 55}
)

// bench is the state shared by the two tests.
type bench struct {
	t        *testing.T
	set      settings
	start    time.Time
	deadline time.Time
	root     string // module root
	outDir   string // this run's directory under bench-results
	runDir   string // scratch (temp) directory
	sipwake  string // built binary
	report   *bytes.Buffer
	results  []runResult
}

// TestSIPpLoad is the whole comparison; see doc.go.
func TestSIPpLoad(t *testing.T) {
	testpeers.Require(t, "sipp", "kamailio", "redis-server")
	b := &bench{t: t, set: loadSettings(t), start: time.Now(), report: &bytes.Buffer{}}
	b.deadline = b.start.Add(b.set.budget)
	b.root = moduleRoot(t)
	base := os.Getenv("SIPWAKE_BENCH_OUT")
	if base == "" {
		base = filepath.Join(b.root, "bench-results")
	}
	b.outDir = filepath.Join(base, "sipp-"+b.start.Format("20060102-150405"))
	if err := os.MkdirAll(filepath.Join(b.outDir, "runs"), 0o755); err != nil {
		t.Fatal(err)
	}
	b.runDir = t.TempDir()
	b.sipwake = b.buildSipwake()
	b.printf("sipwake SIPp load comparison, %s\n", b.start.Format(time.RFC3339))
	b.printf("machine: %d CPUs (%s), %s; %s; %s\n", runtime.NumCPU(), cpuModel(), memTotal(), toolVersion("sipp", "-v"), toolVersion("kamailio", "-v"))
	b.printf("method: same SIPp command per test for both proxies, runs alternate (kamailio, sipwake) at each rate;\n"+
		"  %d s of traffic per run (-m = rate*%d), -timeout, -buff_size 4194304; a proxy stops stepping after a run with failed calls\n"+
		"  (repeated once when other_cpu > %.0f%%). CPU = utime+stime of all the proxy's processes / wall time (100%% = one core);\n"+
		"  µs/call = that CPU time / successful calls; RSS summed over processes, PSS from smaps_rollup; 'mid' sampled halfway,\n"+
		"  '+%s' sampled %s after the run. other = the rest of the machine's CPU during the run (shared machine);\n"+
		"  cpu_seen = CPU time the kernel accounted, busy and idle, / (wall time * CPUs), to compare runs of one rate\n"+
		"  (lower at low load; a run far below its neighbours may have lost CPU time to the host).\n",
		b.set.secs, b.set.secs, b.set.retryOther, b.set.after, b.set.after)
	if b.set.keepGoing {
		b.printf("SIPWAKE_BENCH_KEEP_GOING=1: every rate is run, also after a run with failed calls\n")
	}
	b.printf("results directory: %s\n", b.outDir)

	for i, name := range b.set.tests {
		// this test's share of the budget left
		weight, rest := testWeight[name], 0
		for _, n := range b.set.tests[i:] {
			rest += testWeight[n]
		}
		until := b.deadline
		if left := time.Until(b.deadline); left > 0 && i < len(b.set.tests)-1 {
			until = time.Now().Add(left * time.Duration(weight) / time.Duration(rest))
		}
		switch name {
		case "invite":
			t.Run("invite", func(t *testing.T) { b.inviteTest(t, until) })
		case "pbx-to-device":
			t.Run("pbx-to-device", func(t *testing.T) { b.pbxToDeviceTest(t, until) })
		case "register":
			t.Run("register", func(t *testing.T) { b.registerTest(t, until) })
		case "register-uas":
			t.Run("register-uas", func(t *testing.T) { b.registerUASTest(t, until) })
		}
	}
	b.writeFiles()
}

func (b *bench) printf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	b.report.WriteString(s)
	fmt.Print(s)
}

func (b *bench) writeFiles() {
	_ = os.WriteFile(filepath.Join(b.outDir, "results.txt"), b.report.Bytes(), 0o644)
	_ = os.WriteFile(filepath.Join(filepath.Dir(b.outDir), "sipp-latest.txt"), b.report.Bytes(), 0o644)
	if js, err := json.MarshalIndent(b.results, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(b.outDir, "runs.json"), js, 0o644)
	}
}

// ---------------------------------------------------------------- tests

// inviteTest: stateful call forwarding, UAC → proxy → UAS.
func (b *bench) inviteTest(t *testing.T, until time.Time) {
	uasPort := freePort(t, peerIP, "udp")
	uasURI := fmt.Sprintf("sip:%s:%d", peerIP, uasPort)
	kam := b.startKamailioProxy(t, uasURI)
	sw := b.startSipwake(t, "invite", sipwakeOpts{
		upstream: uasURI + ";transport=udp",
		domains:  []string{callDomain},
		store:    "embedded",
	})
	targets := []*target{kam, sw}
	b.printf("\n== stateful INVITE calls: SIPp UAC (%s) -> proxy -> SIPp UAS (%s:%d) ==\n", clientIP, peerIP, uasPort)
	b.printf("one call = INVITE/180/200, ACK, BYE/200 through the proxy, 0 ms hold; kamailio: tm + rr, %d UDP workers, -m 1536;\n"+
		"sipwake: %s, embedded store, log.level warn, GOMAXPROCS=%s.\n", kamChildren, b.sipwake, b.gomaxprocs())
	uacPort := freePort(t, clientIP, "udp")
	b.idle(targets)
	b.step(t, "invite", targets, b.set.inviteRates, until, func(tg *target, rate int) []string {
		return []string{tg.addr, "-sf", b.scenario("uac_call.xml"), "-key", "callee", "bench", "-key", "domain", callDomain,
			"-i", clientIP, "-p", strconv.Itoa(uacPort), "-d", "0",
			"-default_behaviors", "all,-abortunexp"}
	}, func(t *testing.T) *proc {
		return b.startUAS(t, peerIP, uasPort)
	})
	b.table("invite", targets)
	b.logSummary(sw)
}

// registerTest: REGISTER with digest auth, to the Kamailio PBX directly or
// through sipwake on Redis.
func (b *bench) registerTest(t *testing.T, until time.Time) {
	// Two disjoint sets of 10,000 users, one per path, so that every AoR
	// has exactly one contact at the PBX whichever path registered it.
	users := map[string]string{}
	direct := b.usersCSV(t, "users-direct.csv", 200000, b.set.users, users)
	via := b.usersCSV(t, "users-sipwake.csv", 300000, b.set.users, users)
	pbx := testpeers.StartKamailio(t, testpeers.KamailioOptions{
		ListenIP: peerIP, Users: users, Quiet: true, Children: kamChildren, ShmMB: 256,
		StartTimeout: 30 * time.Second,
	})
	pbxT := &target{name: "kamailio", addr: pbx.UDPAddr, leader: pbx.PID(), log: pbx.LogFile}
	pbxT.pids = groupPIDs(pbx.PID())
	storeName := os.Getenv("SIPWAKE_BENCH_REGISTER_STORE")
	if storeName == "" {
		storeName = "redis"
	}
	opts := sipwakeOpts{upstream: "sip:" + pbx.UDPAddr + ";transport=udp", domains: []string{pbx.Domain}, store: storeName}
	var extra []extraProc
	redisAddr := "(none)"
	if storeName == "redis" {
		redisAddr = storetest.StartRedis(t)
		redisPID, err := storetest.RedisPID(redisAddr)
		if err != nil {
			t.Fatalf("redis pid: %v", err)
		}
		opts.redis = redisAddr
		extra = append(extra, extraProc{name: "redis", pids: []int{redisPID}})
	}
	sw := b.startSipwake(t, "register", opts)
	sw.extra = append(extra, extraProc{name: "pbx", pids: pbxT.pids})
	sw.csv = via
	pbxT.csv = direct
	targets := []*target{pbxT, sw}
	b.printf("\n== REGISTER + digest auth: SIPp (%s) -> Kamailio PBX (%s) directly, or -> sipwake (%s store) -> the same PBX ==\n", clientIP, pbx.UDPAddr, storeName)
	b.printf("one call = REGISTER/401/REGISTER(auth)/200; %d distinct users per path (sequential -inf), Contact with RFC 8599 push params;\n"+
		"PBX: testpeers Kamailio registrar (htable users, usrloc in memory), Quiet, %d UDP workers, -m 256; redis-server %s;\n"+
		"sipwake GOMAXPROCS=%s.\n", b.set.users, kamChildren, redisAddr, b.gomaxprocs())
	port := freePort(t, clientIP, "udp")
	b.idle(targets)
	b.step(t, "register", targets, b.set.registerRates, until, b.registerArgs(pbx.Domain, port), nil)
	b.table("register", targets)
	b.logSummary(sw)
}

// registerArgs is the SIPp command of the REGISTER tests for a target:
// register_auth.xml over the target's users file, from clientIP:port.
func (b *bench) registerArgs(domain string, port int) func(*target, int) []string {
	return func(tg *target, _ int) []string {
		return []string{tg.addr, "-sf", b.scenario("register_auth.xml"), "-inf", tg.csv, "-key", "domain", domain,
			"-i", clientIP, "-p", strconv.Itoa(port), "-default_behaviors", "all,-bye"}
	}
}

// registerUASTest: REGISTER with digest auth through a proxy to a SIPp
// UAS playing a minimal registrar (uas_register.xml: challenge, verify,
// 200). The Kamailio PBX of registerTest needs about as much CPU per
// registration as sipwake, which on a small machine caps the rate either
// can reach behind it; this registrar costs little, so the proxy is what
// the run measures: Kamailio as a stateful proxy (tm, as in the invite
// test) or sipwake on Redis, each in front of the same UAS.
func (b *bench) registerUASTest(t *testing.T, until time.Time) {
	users := map[string]string{}
	direct := b.usersCSV(t, "users-uas-kamailio.csv", 400000, b.set.users, users)
	via := b.usersCSV(t, "users-uas-sipwake.csv", 500000, b.set.users, users)
	uasPort := freePort(t, peerIP, "udp")
	uasURI := fmt.Sprintf("sip:%s:%d", peerIP, uasPort)
	kam := b.startKamailioProxy(t, uasURI)
	redisAddr := storetest.StartRedis(t)
	redisPID, err := storetest.RedisPID(redisAddr)
	if err != nil {
		t.Fatalf("redis pid: %v", err)
	}
	sw := b.startSipwake(t, "register-uas", sipwakeOpts{
		upstream: uasURI + ";transport=udp",
		domains:  []string{callDomain},
		store:    "redis",
		redis:    redisAddr,
	})
	sw.extra = []extraProc{{name: "redis", pids: []int{redisPID}}}
	kam.csv, sw.csv = direct, via
	targets := []*target{kam, sw}
	b.printf("\n== REGISTER + digest auth: SIPp (%s) -> proxy -> SIPp registrar UAS (%s:%d) ==\n", clientIP, peerIP, uasPort)
	b.printf("one call = REGISTER/401/REGISTER(auth)/200; %d distinct users per path (sequential -inf), Contact with RFC 8599 push params;\n"+
		"the UAS challenges and verifies every registration (uas_register.xml); kamailio: tm, %d UDP workers, -m 1536;\n"+
		"sipwake: redis store (redis-server %s), log.level warn, GOMAXPROCS=%s.\n", b.set.users, kamChildren, redisAddr, b.gomaxprocs())
	port := freePort(t, clientIP, "udp")
	b.idle(targets)
	b.step(t, "register-uas", targets, b.set.registerRates, until, b.registerArgs(callDomain, port), func(t *testing.T) *proc {
		return b.startUASScenario(t, "uas_register.xml", peerIP, uasPort)
	})
	b.table("register-uas", targets)
	b.logSummary(sw)
}

// pbxToDeviceTest: calls the other way, from a PBX user to awake devices.
// The SIPp UAC calls through the Kamailio PBX (registrar: usrloc lookup,
// record-route), which relays to the callee's registered contact: the
// answering SIPp UAS itself when the device registered directly at the
// PBX (the Kamailio-alone baseline), or, when it registered through
// sipwake, sipwake's contact for it (Path), so that every INVITE passes
// sipwake's registrar resolution and its wake module, which hands a device
// without push parameters straight to the forwarder.
func (b *bench) pbxToDeviceTest(t *testing.T, until time.Time) {
	// Two disjoint sets of devices, one per path, so that every AoR has
	// exactly one contact at the PBX: the Kamailio run never forks to a
	// sipwake contact, nor the sipwake run to a direct one.
	n := b.set.devices
	users := map[string]string{}
	const firstDirect, firstVia = 400000, 500000
	direct := b.usersCSV(t, "devices-direct.csv", firstDirect, n, users)
	via := b.usersCSV(t, "devices-sipwake.csv", firstVia, n, users)
	pbx := testpeers.StartKamailio(t, testpeers.KamailioOptions{
		ListenIP: peerIP, Users: users, Quiet: true, Children: kamChildren, ShmMB: 1024,
		NoCallerAuth: true, StartTimeout: 30 * time.Second,
	})
	pbxT := &target{name: "kamailio", addr: pbx.UDPAddr, leader: pbx.PID(), log: pbx.LogFile, csv: direct}
	pbxT.pids = groupPIDs(pbx.PID())
	sw := b.startSipwake(t, "pbx-to-device", sipwakeOpts{
		upstream: "sip:" + pbx.UDPAddr + ";transport=udp",
		domains:  []string{pbx.Domain},
		store:    "embedded",
	})
	sw.extra = []extraProc{{name: "pbx", pids: pbxT.pids}}
	sw.csv = via
	// INVITEs into and out of sipwake, and calls the wake module held
	// (none expected: these devices have no push parameters)
	sw.counters = func() map[string]float64 {
		return map[string]float64{
			"sw_invite_in":  scrapeSum(sw.opsURL, "sipwake_sip_requests_total", `method="INVITE"`, `direction="in"`),
			"sw_invite_out": scrapeSum(sw.opsURL, "sipwake_sip_requests_total", `method="INVITE"`, `direction="out"`),
			"sw_held":       scrapeSum(sw.opsURL, "sipwake_wake_invite_hold_duration_seconds_count"),
		}
	}
	targets := []*target{pbxT, sw}

	// The devices: one SIPp UAS address for both sets, registered first
	// from that very port (UDP, no push parameters), the UAS bound to it
	// afterwards for each run.
	devPort := freePort(t, clientIP, "udp")
	b.registerDevices(t, "direct", pbx.UDPAddr, pbx.Domain, direct, n, devPort)
	b.registerDevices(t, "sipwake", sw.addr, pbx.Domain, via, n, devPort)
	b.printf("\n== PBX user -> awake device: SIPp UAC (%s) -> Kamailio PBX (%s) -> [sipwake (%s) ->] SIPp UAS device (%s:%d) ==\n",
		clientIP, pbx.UDPAddr, sw.addr, clientIP, devPort)
	b.printf("one call = INVITE/180/200, ACK, BYE/200, 0 ms hold, to one of %d devices per path (sequential -inf), each registered with\n"+
		"digest auth over UDP from the UAS's own port, Contact without push parameters (an awake app): directly at the PBX (kamailio\n"+
		"row: the PBX alone) or through sipwake (sipwake row: the PBX's lookup gives sipwake's contact, via Path; sipwake resolves it\n"+
		"to the device; the wake module passes a device without push on to the forwarder). PBX: testpeers Kamailio registrar\n"+
		"(usrloc in memory, record_route, no caller auth), Quiet, %d UDP workers, -m 1024; sipwake: %s, embedded store, log.level warn.\n"+
		"CPU%%/µs-per-call: the proxy's own processes (sipwake row: sipwake alone); path-µs adds the PBX to sipwake.\n",
		n, kamChildren, b.sipwake)
	d, v := strconv.Itoa(firstDirect)+"@"+pbx.Domain, strconv.Itoa(firstVia)+"@"+pbx.Domain
	b.printf("contacts at the PBX: direct %s -> %s; through sipwake %s -> %s\n", d, ulContact(pbx, d), v, ulContact(pbx, v))
	uacPort := freePort(t, clientIP, "udp")
	b.idle(targets)
	b.step(t, "pbx-to-device", targets, b.set.inviteRates, until, func(tg *target, rate int) []string {
		return []string{pbx.UDPAddr, "-sf", b.scenario("uac_call_device.xml"), "-inf", tg.csv, "-key", "domain", pbx.Domain,
			"-i", clientIP, "-p", strconv.Itoa(uacPort), "-d", "0",
			"-default_behaviors", "all,-abortunexp"}
	}, func(t *testing.T) *proc {
		return b.startUAS(t, clientIP, devPort)
	})
	b.table("pbx-to-device", targets)
	b.logSummary(sw)
}

// ulContact is what the PBX's usrloc holds for aor (its contact addresses
// and paths, from kamcmd ul.lookup; ul.dump of every device would be too
// big a reply), for the report.
func ulContact(pbx *testpeers.Kamailio, aor string) string {
	kamcmd, err := lookBin("kamcmd")
	if err != nil {
		return err.Error()
	}
	out, err := exec.Command(kamcmd, "-s", pbx.CtlSocket, "ul.lookup", "location", aor).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("kamcmd ul.lookup: %v: %s", err, bytes.TrimSpace(out))
	}
	var parts []string
	for _, l := range strings.Split(string(out), "\n") {
		k, val, ok := strings.Cut(strings.TrimSpace(l), ":")
		if ok && (k == "Address" || k == "Path") {
			parts = append(parts, strings.ToLower(k)+"="+strings.TrimSpace(val))
		}
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

// registerDevices registers the n devices of csv at addr (the PBX or
// sipwake) with register_device.xml from clientIP:port, and fails the test
// unless every registration succeeded.
func (b *bench) registerDevices(t *testing.T, path, addr, domain, csv string, n, port int) {
	t.Helper()
	files := filepath.Join(b.outDir, "runs", "register-devices-"+path)
	args := []string{addr, "-sf", b.scenario("register_device.xml"), "-inf", csv, "-key", "domain", domain,
		"-i", clientIP, "-p", strconv.Itoa(port),
		"-mi", clientIP, "-mp", strconv.Itoa(freePortRange(t, clientIP, 3)), "-cp", strconv.Itoa(freePort(t, clientIP, "udp")),
		"-r", "500", "-m", strconv.Itoa(n), "-l", "200", "-recv_timeout", "5000", "-timeout", "60s", "-timeout_error",
		"-nostdin", "-trace_stat", "-stf", files + ".csv", "-fd", "1", "-trace_err", "-error_file", files + "-err.log"}
	t0 := time.Now()
	p := startProc(t, "sipp-register", files+".out", nil, binPath(t, "sipp"), args...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	err := p.wait(ctx)
	cancel()
	if err != nil {
		p.stop(2 * time.Second)
	}
	st, serr := readStats(files + ".csv")
	if err != nil || p.exitCode() != 0 || serr != nil || st.ok != n {
		t.Fatalf("registering %d devices at %s (%s): exit %d, %d ok, %d failed, stats error %v\n%s", n, addr, path,
			p.exitCode(), st.ok, st.failed, serr, tailFile(files+"-err.log", 20))
	}
	b.printf("registered %d devices at %s (%s) in %.1f s\n", n, addr, path, time.Since(t0).Seconds())
}

const kamChildren = 4

// usersCSV writes a SIPp injection file of n users numbered from first and
// adds them to users.
func (b *bench) usersCSV(t *testing.T, name string, first, n int, users map[string]string) string {
	var sb strings.Builder
	sb.WriteString("SEQUENTIAL\n")
	for i := range n {
		u := strconv.Itoa(first + i)
		pw := "pw" + u
		users[u] = pw
		sb.WriteString(u + ";" + pw + "\n")
	}
	p := filepath.Join(b.runDir, name)
	if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// scenario copies an embedded scenario into the scratch directory.
func (b *bench) scenario(name string) string {
	p := filepath.Join(b.runDir, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	data, err := testdata.ReadFile("testdata/" + name)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return p
}

// ---------------------------------------------------------------- targets

// target is a proxy under test.
type target struct {
	name   string
	addr   string // where SIPp sends
	leader int    // main PID (process group leader)
	pids   []int  // every process of the proxy
	extra  []extraProc
	log    string
	csv    string // register: the users injection file
	opsURL string // sipwake: ops listener (/metrics)
	// counters, when set, reads counters whose increase over each run is
	// reported with it (sipwake's metrics: what the requests went through)
	counters func() map[string]float64
	proc     *proc
	idle     memSample
	// lastEnd is when its last run's traffic ended; final is a memory
	// sample taken settle after it (final.at after lastEnd).
	lastEnd time.Time
	final   memSample
	finalAt time.Duration
	// stepping state
	stopped string
	// firstFail is the first failed or saturated run (with keepGoing,
	// the target goes on with the higher rates)
	firstFail string
	best      int
}

type extraProc struct {
	name string
	pids []int
}

// memSample is RSS and PSS in KiB, summed over processes.
type memSample struct {
	RSS, PSS int64
	// Anon is the anonymous part of RSS (heap, stacks, runtime): RSS
	// less the binary's pages, which stay mapped once the load ran
	// code that idle never touched.
	Anon int64
	// Goroutines and HeapInuse (bytes) are sipwake's, from /metrics.
	Goroutines int64
	HeapInuse  int64
	// RuntimeSys (bytes) is what sipwake's runtime holds besides the
	// heap: span structures, collector metadata and stacks, sized by the
	// largest heap so far.
	RuntimeSys int64
}

func (m memSample) String() string {
	return fmt.Sprintf("%d/%d", m.RSS/1024, m.PSS/1024)
}

func (b *bench) startKamailioProxy(t *testing.T, next string) *target {
	port := freePort(t, clientIP, "udp")
	dir := filepath.Join(b.runDir, "kamailio-proxy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmpl := template.Must(template.ParseFS(testdata, "testdata/kamailio-proxy.cfg.tmpl"))
	var cfg bytes.Buffer
	if err := tmpl.Execute(&cfg, map[string]any{"IP": clientIP, "Port": port, "Next": next, "Children": kamChildren}); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(cfgFile, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	kam := binPath(t, "kamailio")
	if out, err := exec.Command(kam, "-c", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("kamailio -c %s: %v\n%s", cfgFile, err, out)
	}
	logFile := filepath.Join(b.outDir, "kamailio-proxy.log")
	p := startProc(t, "kamailio", logFile, nil, kam, "-f", cfgFile, "-DD", "-E", "-Y", dir, "-w", dir, "-m", "1536", "-M", "8")
	addr := net.JoinHostPort(clientIP, strconv.Itoa(port))
	if err := waitOptions(addr, p, 20*time.Second); err != nil {
		t.Fatalf("kamailio proxy: %v\n%s", err, tailFile(logFile, 30))
	}
	tg := &target{name: "kamailio", addr: addr, leader: p.pid(), log: logFile, proc: p}
	tg.pids = groupPIDs(p.pid())
	return tg
}

type sipwakeOpts struct {
	upstream string
	domains  []string
	store    string
	redis    string
}

func (b *bench) buildSipwake() string {
	if bin := os.Getenv("SIPWAKE_BENCH_BINARY"); bin != "" {
		return bin // a prebuilt sipwake, e.g. a patched one for an experiment
	}
	bin := filepath.Join(b.runDir, "sipwake")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/sipwake")
	cmd.Dir = b.root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.t.Fatalf("go build ./cmd/sipwake: %v\n%s", err, out)
	}
	return bin
}

func (b *bench) startSipwake(t *testing.T, test string, o sipwakeOpts) *target {
	dir := filepath.Join(b.runDir, "sipwake-"+test)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t, clientIP, "udp+tcp")
	ops := freePort(t, clientIP, "tcp")
	admin := freePort(t, clientIP, "tcp")
	q := func(s string) string { return strconv.Quote(s) }
	var y strings.Builder
	fmt.Fprintf(&y, "# generated by cmd/sipwake/internal/bench (%s test)\n", test)
	fmt.Fprintf(&y, "node_id: bench-%s\n", test)
	fmt.Fprintf(&y, "log:\n  level: warn\n  format: json\n")
	fmt.Fprintf(&y, "sip:\n  listen: [%s, %s]\n  trusted_sources: [%s]\n",
		q(fmt.Sprintf("udp://%s:%d", clientIP, port)), q(fmt.Sprintf("tcp://%s:%d", clientIP, port)), q(peerIP+"/32"))
	fmt.Fprintf(&y, "upstream:\n  uri: %s\n  domains: [", q(o.upstream))
	for i, d := range o.domains {
		if i > 0 {
			y.WriteString(", ")
		}
		y.WriteString(q(d))
	}
	y.WriteString("]\n")
	fmt.Fprintf(&y, "store:\n  driver: %s\n", o.store)
	if o.store == "redis" {
		fmt.Fprintf(&y, "  redis:\n    addresses: [%s]\n    key_prefix: \"sipwake-bench:\"\n", q(o.redis))
	} else {
		fmt.Fprintf(&y, "  embedded:\n    path: %s\n", q(filepath.Join(dir, "sipwake.db")))
	}
	fmt.Fprintf(&y, "ops:\n  listen: %s\n", q(fmt.Sprintf("%s:%d", clientIP, ops)))
	fmt.Fprintf(&y, "admin:\n  listen: %s\n", q(fmt.Sprintf("%s:%d", clientIP, admin)))
	fmt.Fprintf(&y, "drain:\n  delay: 0s\n  timeout: 3s\n")
	cfgFile := filepath.Join(dir, "sipwake.yaml")
	if err := os.WriteFile(cfgFile, []byte(y.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(b.outDir, "sipwake-"+test+".yaml"), []byte(y.String()), 0o644)
	env := cleanEnv()
	if out, err := exec.Command(b.sipwake, "validate", "-c", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("sipwake validate -c %s: %v\n%s", cfgFile, err, out)
	}
	logFile := filepath.Join(b.outDir, "sipwake-"+test+".log")
	p := startProc(t, "sipwake", logFile, env, b.sipwake, "serve", "-c", cfgFile)
	addr := net.JoinHostPort(clientIP, strconv.Itoa(port))
	if err := waitOptions(addr, p, 20*time.Second); err != nil {
		t.Fatalf("sipwake: %v\n%s", err, tailFile(logFile, 30))
	}
	return &target{name: "sipwake", addr: addr, leader: p.pid(), pids: []int{p.pid()}, log: logFile, proc: p,
		opsURL: fmt.Sprintf("http://%s:%d", clientIP, ops)}
}

// cleanEnv is the environment without SIPWAKE_* (which would override the
// generated config), with GOMAXPROCS from SIPWAKE_BENCH_GOMAXPROCS when
// set.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIPWAKE_") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	if v := os.Getenv("SIPWAKE_BENCH_GOMAXPROCS"); v != "" {
		env = append(env, "GOMAXPROCS="+v)
	}
	return env
}

// gomaxprocs is sipwake's GOMAXPROCS in the runs, for the report.
func (b *bench) gomaxprocs() string {
	if v := os.Getenv("SIPWAKE_BENCH_GOMAXPROCS"); v != "" {
		return v + " (SIPWAKE_BENCH_GOMAXPROCS)"
	}
	return strconv.Itoa(runtime.NumCPU())
}

// startUAS starts the answering SIPp UAS (uas_call.xml) on ip:port.
func (b *bench) startUAS(t *testing.T, ip string, port int) *proc {
	return b.startUASScenario(t, "uas_call.xml", ip, port)
}

// startUASScenario starts a SIPp UAS running the embedded scenario on
// ip:port.
func (b *bench) startUASScenario(t *testing.T, scenario, ip string, port int) *proc {
	name := fmt.Sprintf("uas-%d", time.Now().UnixNano())
	errFile := filepath.Join(b.runDir, name+"-err.log")
	args := []string{"-sf", b.scenario(scenario), "-i", ip, "-p", strconv.Itoa(port),
		"-mi", ip, "-mp", strconv.Itoa(freePortRange(t, ip, 3)), "-cp", strconv.Itoa(freePort(t, clientIP, "udp")),
		"-buff_size", "4194304", "-nostdin", "-trace_err", "-error_file", errFile}
	p := startProc(t, "sipp-uas", filepath.Join(b.runDir, name+".out"), nil, binPath(t, "sipp"), args...)
	deadline := time.Now().Add(5 * time.Second)
	for !portBound(ip, port) {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("SIPp UAS did not bind %s:%d\n%s", ip, port, tailFile(filepath.Join(b.runDir, name+".out"), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// ---------------------------------------------------------------- runs

// runResult is one bounded SIPp run against one target.
type runResult struct {
	Test, Proxy string
	Rate, Count int
	OK, Failed  int
	Retrans     int
	Elapsed     float64 // s
	Achieved    float64 // successful calls per second
	ExitCode    int
	ProxyCPU    float64 // % of one core
	ProxyCPUs   float64 // CPU seconds
	Extra       map[string]float64
	SIPpCPU     float64
	OtherCPU    float64
	// CPUSeen is the CPU time the kernel accounted over the run, busy and
	// idle, as a share of wall time times the CPUs (%). Two busy loops
	// make it 100 here; SIPp runs read 71 to 100, lower at low load, so
	// it is a clue to compare between runs of one rate, not a measure of
	// time lost to the host.
	CPUSeen    float64
	UDPDrops   int64 // whole machine (RcvbufErrors)
	ProxyDrops int64 // at the proxy's own sockets (/proc/net/udp drops)
	// UAS anomalies (SIPp UAS error log): BYE before ACK (the UAS aborts
	// the call and answers the BYE; not a failed call) and INVITE
	// retransmissions after its 200 (the UAS aborts; the call may fail).
	UASByeBeforeAck, UASInviteAfter200 int
	Mid, After                         memSample
	RT                                 string // response time histogram "<1ms:n,..."
	RTUnder10                          float64
	Counters                           map[string]float64 `json:",omitempty"` // increase of target.counters over the run
	Note                               string
	Files                              string
}

// usPerCall is the proxy's CPU time per successful call in µs.
func (r runResult) usPerCall() float64 {
	if r.OK == 0 {
		return 0
	}
	return r.ProxyCPUs * 1e6 / float64(r.OK)
}

// pass: every call succeeded and at least 90% of the target rate was
// reached (a run that only completes by retransmitting, at a fraction of
// the rate, is saturated, not passed).
func (r runResult) pass() bool {
	return r.Failed == 0 && r.ExitCode == 0 && r.OK == r.Count && r.Achieved >= 0.9*float64(r.Rate)
}

// pathUsPerCall is the CPU time per successful call of the proxy and the
// processes it depends on (redis, the PBX behind sipwake).
func (r runResult) pathUsPerCall() float64 {
	if r.OK == 0 {
		return 0
	}
	cpu := r.ProxyCPU
	for _, v := range r.Extra {
		cpu += v
	}
	return cpu / 100 * r.Elapsed * 1e6 / float64(r.OK)
}

// step runs the rates in order, alternating the targets at each rate.
func (b *bench) step(t *testing.T, test string, targets []*target, rates []int, until time.Time,
	args func(*target, int) []string, uas func(*testing.T) *proc) {
	perRun := time.Duration(b.set.secs)*time.Second + b.set.after + 6*time.Second
	for _, rate := range rates {
		for _, tg := range targets {
			if tg.stopped != "" {
				continue
			}
			if time.Now().Add(perRun).After(until) {
				tg.stopped = fmt.Sprintf("time budget: rates from %d on not run", rate)
				continue
			}
			r := b.run(t, test, tg, rate, args(tg, rate), uas, "")
			if !r.pass() && r.OtherCPU > b.set.retryOther && tg.alive() && time.Now().Add(perRun).Before(until) {
				r.Note = "disturbed, repeated"
				b.results = append(b.results, r)
				b.printRun(r)
				r = b.run(t, test, tg, rate, args(tg, rate), uas, "retry")
			}
			b.results = append(b.results, r)
			b.printRun(r)
			failed := ""
			switch {
			case !tg.alive():
				tg.stopped = fmt.Sprintf("process exited during the run at %d/s", rate)
			case r.Failed > 0 || r.ExitCode != 0 || r.OK != r.Count:
				failed = fmt.Sprintf("%d failed calls at %d/s", r.Count-r.OK, rate)
			case !r.pass():
				failed = fmt.Sprintf("saturated at %d/s: no failed call but only %.0f/s achieved", rate, r.Achieved)
			case tg.firstFail == "":
				tg.best = rate
			}
			if failed != "" && tg.firstFail == "" {
				tg.firstFail = failed
			}
			if failed != "" && !b.set.keepGoing {
				tg.stopped = failed
			}
			if tg.stopped != "" {
				b.goroutineDump(tg) // now: ~10 s after its last run
			}
		}
	}
	for _, tg := range targets {
		b.goroutineDump(tg)
	}
}

// idle samples the targets' memory before any load.
func (b *bench) idle(targets []*target) {
	for _, tg := range targets {
		tg.idle = b.sampleMem(tg)
	}
}

func (b *bench) sampleMem(tg *target) memSample {
	m := memOf(tg.pids)
	if tg.opsURL != "" {
		runtimeSys := []string{"go_memstats_mspan_sys_bytes", "go_memstats_mcache_sys_bytes",
			"go_memstats_gc_sys_bytes", "go_memstats_other_sys_bytes", "go_memstats_buck_hash_sys_bytes",
			"go_memstats_stack_sys_bytes"}
		v := scrapeMetrics(tg.opsURL, append(runtimeSys, "go_goroutines", "go_memstats_heap_inuse_bytes")...)
		m.Goroutines = int64(v["go_goroutines"])
		m.HeapInuse = int64(v["go_memstats_heap_inuse_bytes"])
		for _, name := range runtimeSys {
			m.RuntimeSys += int64(v[name])
		}
	}
	return m
}

func (tg *target) alive() bool {
	for _, p := range tg.pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err != nil {
			return false
		}
	}
	return tg.proc == nil || !tg.proc.exited()
}

// run is one bounded SIPp run: rate*secs calls at rate against tg.
func (b *bench) run(t *testing.T, test string, tg *target, rate int, args []string, uasStart func(*testing.T) *proc, suffix string) runResult {
	t.Helper()
	b.waitQuiet()
	count := rate * b.set.secs
	limit := b.set.secs + 20
	tag := fmt.Sprintf("%s-%s-r%d", test, tg.name, rate)
	if suffix != "" {
		tag += "-" + suffix
	}
	files := filepath.Join(b.outDir, "runs", tag)
	stf := files + ".csv"
	args = append(args, "-mi", clientIP, "-mp", strconv.Itoa(freePortRange(t, clientIP, 3)),
		"-cp", strconv.Itoa(freePort(t, clientIP, "udp")),
		"-r", strconv.Itoa(rate), "-m", strconv.Itoa(count), "-l", "5000",
		"-recv_timeout", "8000", "-timeout", fmt.Sprintf("%ds", limit), "-timeout_error",
		"-buff_size", "4194304", "-nostdin", "-trace_stat", "-stf", stf, "-fd", "1",
		"-trace_err", "-error_file", files+"-err.log")
	res := runResult{Test: test, Proxy: tg.name, Rate: rate, Count: count, Extra: map[string]float64{}, Files: files + ".*"}

	var uas *proc
	if uasStart != nil {
		uas = uasStart(t)
	}
	var extraPIDs []int
	for _, e := range tg.extra {
		extraPIDs = append(extraPIDs, e.pids...)
	}
	inodes := socketInodes(tg.pids)
	pd0 := udpDropsOf(inodes)
	d0 := udpRcvbufErrors()
	b0, a0 := cpuTicks()
	p0 := ticksOf(tg.pids)
	e0 := map[string]int64{}
	for _, e := range tg.extra {
		e0[e.name] = ticksOf(e.pids)
	}
	u0 := int64(0)
	if uas != nil {
		u0 = ticksOf([]int{uas.pid()})
	}
	var c0 map[string]float64
	if tg.counters != nil {
		c0 = tg.counters()
	}
	t0 := time.Now()
	uac := startProc(t, "sipp-uac", files+".out", nil, binPath(t, "sipp"), args...)
	midAt := time.Duration(count/rate) * time.Second / 2
	var mid memSample
	select {
	case <-uac.done:
	case <-time.After(midAt):
	}
	mid = b.sampleMem(tg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(limit+15)*time.Second)
	err := uac.wait(ctx)
	cancel()
	if err != nil {
		uac.stop(2 * time.Second)
		res.Note = "sipp killed after its time limit"
	}
	t1 := time.Now()
	tg.lastEnd = t1
	p1 := ticksOf(tg.pids)
	if tg.counters != nil {
		res.Counters = map[string]float64{}
		for k, v := range tg.counters() {
			res.Counters[k] = v - c0[k]
		}
	}
	b1, a1 := cpuTicks()
	d1 := udpRcvbufErrors()
	res.ProxyDrops = udpDropsOf(inodes) - pd0
	for _, e := range tg.extra {
		res.Extra[e.name] = 100 * float64(ticksOf(e.pids)-e0[e.name]) / clkTck / t1.Sub(t0).Seconds()
	}
	sippTicks := uac.cpuTicks()
	if uas != nil {
		sippTicks += ticksOf([]int{uas.pid()}) - u0
		uas.stop(3 * time.Second)
		_ = copyFile(uas.logPath, files+"-uas.out")
		_ = copyFile(strings.TrimSuffix(uas.logPath, ".out")+"-err.log", files+"-uas-err.log")
		if data, err := os.ReadFile(files + "-uas-err.log"); err == nil {
			res.UASByeBeforeAck = bytes.Count(data, []byte("Aborting call on an unexpected BYE"))
			res.UASInviteAfter200 = bytes.Count(data, []byte("while expecting 'ACK' (index 3), received 'INVITE "))
		}
	}
	el := t1.Sub(t0).Seconds()
	res.Elapsed = el
	res.ExitCode = uac.exitCode()
	res.ProxyCPUs = float64(p1-p0) / clkTck
	res.ProxyCPU = 100 * res.ProxyCPUs / el
	res.SIPpCPU = 100 * float64(sippTicks) / clkTck / el
	var extraTicks float64
	for _, v := range res.Extra {
		extraTicks += v
	}
	res.OtherCPU = max(0, 100*float64(b1-b0)/clkTck/el-res.ProxyCPU-res.SIPpCPU-extraTicks)
	if n := runtime.NumCPU(); n > 0 && el > 0 {
		res.CPUSeen = 100 * float64(a1-a0) / clkTck / el / float64(n)
	}
	res.UDPDrops = d1 - d0
	res.Mid = mid
	st, err := readStats(stf)
	if err != nil {
		res.Note = strings.TrimSpace(res.Note + " no SIPp statistics: " + err.Error())
		res.Failed = count
	} else {
		res.OK, res.Failed, res.Retrans = st.ok, st.failed, st.retrans
		res.RT, res.RTUnder10 = st.rt, st.under10
	}
	res.Achieved = float64(res.OK) / el
	// memory after the load
	time.Sleep(b.set.after)
	res.After = b.sampleMem(tg)
	return res
}

// waitQuiet waits (up to maxQuiet) for a second in which less than 15% of
// the machine is busy, and returns the last busy share seen (% of one core).
func (b *bench) waitQuiet() float64 {
	deadline := time.Now().Add(b.set.maxQuiet)
	last := 0.0
	for {
		a, _ := cpuTicks()
		time.Sleep(time.Second)
		z, _ := cpuTicks()
		last = float64(z - a) // ticks in 1 s = % of one core
		if last < 15*float64(runtime.NumCPU()) || time.Now().After(deadline) {
			return last
		}
	}
}

// sippStats is the last line of a SIPp -trace_stat file.
type sippStats struct {
	ok, failed, retrans int
	rt                  string
	under10             float64
}

func readStats(path string) (sippStats, error) {
	var st sippStats
	data, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) < 2 {
		return st, errors.New("empty statistics file")
	}
	head := strings.Split(lines[0], ";")
	last := strings.Split(lines[len(lines)-1], ";")
	col := func(name string) int {
		for i, h := range head {
			if h == name && i < len(last) {
				n, _ := strconv.Atoi(strings.TrimSpace(last[i]))
				return n
			}
		}
		return 0
	}
	st.ok, st.failed, st.retrans = col("SuccessfulCall(C)"), col("FailedCall(C)"), col("Retransmissions(C)")
	var parts []string
	total, under := 0, 0
	for i, h := range head {
		if !strings.HasPrefix(h, "ResponseTimeRepartition") || i >= len(last) {
			continue
		}
		_, bucket, ok := strings.Cut(h, "_")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimSpace(last[i]))
		if n == 0 {
			continue
		}
		parts = append(parts, bucket+"ms:"+strconv.Itoa(n))
		total += n
		if ms, err := strconv.Atoi(strings.TrimPrefix(bucket, "<")); err == nil && strings.HasPrefix(bucket, "<") && ms <= 10 {
			under += n
		}
	}
	st.rt = strings.Join(parts, ",")
	if total > 0 {
		st.under10 = 100 * float64(under) / float64(total)
	}
	return st, nil
}

// ---------------------------------------------------------------- output

func (b *bench) printRun(r runResult) {
	extra := ""
	keys := make([]string, 0, len(r.Extra))
	for k := range r.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		extra += fmt.Sprintf(" %s_cpu=%.0f%%", k, r.Extra[k])
	}
	line := fmt.Sprintf("  run %-8s %-8s rate=%-5d count=%-6d ok=%-6d failed=%-5d retrans=%-5d achieved=%.0f/s elapsed=%.2fs cpu=%.0f%% µs/call=%.0f%s sipp_cpu=%.0f%% other_cpu=%.0f%% cpu_seen=%.0f%% udp_drops=%d mid=%s after=%s MiB(RSS/PSS) rt=%s rc=%d",
		r.Test, r.Proxy, r.Rate, r.Count, r.OK, r.Failed, r.Retrans, r.Achieved, r.Elapsed, r.ProxyCPU, r.usPerCall(), extra,
		r.SIPpCPU, r.OtherCPU, r.CPUSeen, r.UDPDrops, r.Mid, r.After, r.RT, r.ExitCode)
	line = strings.Replace(line, fmt.Sprintf("udp_drops=%d", r.UDPDrops), fmt.Sprintf("udp_drops=%d(proxy %d)", r.UDPDrops, r.ProxyDrops), 1)
	if r.Test == "invite" || r.Test == "pbx-to-device" {
		line += fmt.Sprintf(" uas_bye_before_ack=%d uas_invite_after_200=%d", r.UASByeBeforeAck, r.UASInviteAfter200)
	}
	ckeys := make([]string, 0, len(r.Counters))
	for k := range r.Counters {
		ckeys = append(ckeys, k)
	}
	sort.Strings(ckeys)
	for _, k := range ckeys {
		line += fmt.Sprintf(" %s=%.0f", k, r.Counters[k])
	}
	if r.Mid.Goroutines > 0 || r.After.Goroutines > 0 {
		line += fmt.Sprintf(" goroutines=%d/%d heap_inuse=%d/%dMiB", r.Mid.Goroutines, r.After.Goroutines, r.Mid.HeapInuse>>20, r.After.HeapInuse>>20)
	}
	if r.Note != "" {
		line += " note=" + r.Note
	}
	b.printf("%s\n", line)
	_ = appendFile(filepath.Join(b.outDir, "runs.txt"), line+"\n")
}

// table prints one test's summary: per rate, each target's last run and
// the ratio sipwake/kamailio.
func (b *bench) table(test string, targets []*target) {
	byKey := map[string]runResult{}
	var rates []int
	seen := map[int]bool{}
	for _, r := range b.results {
		if r.Test != test {
			continue
		}
		byKey[fmt.Sprintf("%s/%d", r.Proxy, r.Rate)] = r // the last run of a repeated rate counts
		if !seen[r.Rate] {
			seen[r.Rate] = true
			rates = append(rates, r.Rate)
		}
	}
	title := map[string]string{
		"invite":        "stateful INVITE calls (calls/s)",
		"pbx-to-device": "PBX user -> awake device calls (calls/s)",
		"register":      "REGISTER + digest auth (registrations/s)",
		"register-uas":  "REGISTER + digest auth to a SIPp registrar (registrations/s)",
	}[test]
	// the register and pbx-to-device rows of sipwake also show the
	// processes behind it (the PBX, redis) and the CPU of the whole path
	withPath := test == "register" || test == "pbx-to-device"
	b.printf("\n-- %s: summary --\n", title)
	hdr := fmt.Sprintf("%-6s %-9s %9s %7s %6s %6s %8s", "rate", "proxy", "achieved", "failed", "retr", "CPU%", "µs/call")
	if withPath {
		hdr += fmt.Sprintf(" %7s %7s %8s", "redis%", "pbx%", "path-µs")
	}
	hdr += fmt.Sprintf(" %13s %13s %7s %6s %6s %6s  %s", "RSS/PSS mid", "RSS/PSS +"+b.set.after.String(), "rt<10ms", "sipp%", "other%", "drops(proxy)", "note")
	b.printf("%s\n", hdr)
	for _, rate := range rates {
		var kr, sr *runResult
		for _, tg := range targets {
			r, ok := byKey[fmt.Sprintf("%s/%d", tg.name, rate)]
			if !ok {
				continue
			}
			if tg.name == "sipwake" {
				sr = &r
			} else {
				kr = &r
			}
			line := fmt.Sprintf("%-6d %-9s %8.0f/s %7d %6d %5.0f%% %8.0f", rate, r.Proxy, r.Achieved, r.Failed, r.Retrans, r.ProxyCPU, r.usPerCall())
			if withPath {
				if r.Proxy == "sipwake" {
					redis := "-"
					if v, ok := r.Extra["redis"]; ok {
						redis = fmt.Sprintf("%.0f%%", v)
					}
					line += fmt.Sprintf(" %7s %6.0f%% %8.0f", redis, r.Extra["pbx"], r.pathUsPerCall())
				} else {
					line += fmt.Sprintf(" %7s %7s %8.0f", "-", "(=CPU)", r.pathUsPerCall())
				}
			}
			line += fmt.Sprintf(" %13s %13s %6.1f%% %5.0f%% %5.0f%% %12s  %s", r.Mid.String()+" MiB", r.After.String()+" MiB",
				r.RTUnder10, r.SIPpCPU, r.OtherCPU, fmt.Sprintf("%d(%d)", r.UDPDrops, r.ProxyDrops), r.Note)
			b.printf("%s\n", line)
		}
		if kr != nil && sr != nil && kr.usPerCall() > 0 {
			line := fmt.Sprintf("%-6s %-9s %9s %7s %6s %5.2fx %7.2fx", "", "ratio s/k", "", "", "",
				sr.ProxyCPU/kr.ProxyCPU, sr.usPerCall()/kr.usPerCall())
			if withPath {
				line += fmt.Sprintf(" %7s %7s %7.2fx", "", "", sr.pathUsPerCall()/kr.pathUsPerCall())
			}
			line += fmt.Sprintf(" %13s %13s", fmt.Sprintf("PSS %.2fx", ratio(sr.Mid.PSS, kr.Mid.PSS)), fmt.Sprintf("PSS %.2fx", ratio(sr.After.PSS, kr.After.PSS)))
			b.printf("%s\n", line)
		}
	}
	b.printf("idle before load (RSS/PSS MiB):")
	for _, tg := range targets {
		b.printf(" %s %s", tg.name, tg.idle)
	}
	b.printf("\nmemory after the load (RSS/PSS MiB):")
	for _, tg := range targets {
		if tg.finalAt == 0 && !tg.lastEnd.IsZero() {
			tg.final, tg.finalAt = b.sampleMem(tg), time.Since(tg.lastEnd).Round(time.Second)
		}
		b.printf(" %s %s (%s after its last run)", tg.name, tg.final, tg.finalAt)
	}
	b.printf("\n")
	for _, tg := range targets {
		stop := tg.stopped
		switch {
		case stop == "" && tg.firstFail != "":
			stop = "every rate run (SIPWAKE_BENCH_KEEP_GOING); first failure: " + tg.firstFail
		case stop == "":
			stop = "all rates passed"
		}
		b.printf("highest rate without a failed call (>= 90%% of it achieved): %-8s %6d/s  (stopped: %s)\n", tg.name, tg.best, stop)
	}
	if len(targets) == 2 && targets[0].best > 0 {
		b.printf("ratio of highest rates sipwake/kamailio: %.2f\n", float64(targets[1].best)/float64(targets[0].best))
	}
	switch test {
	case "register":
		b.printf("(path-µs: CPU per registration of every process on the path: kamailio = the PBX alone; sipwake = sipwake + redis + PBX)\n")
	case "pbx-to-device":
		b.printf("(path-µs: CPU per call of every process on the path: kamailio = the PBX alone; sipwake = sipwake + PBX)\n")
	}
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// goroutineDump ends sipwake with SIGQUIT, which makes the Go runtime
// write every goroutine's stack to stderr (our log file), and prints the
// most common stacks: what the goroutines still alive after the load wait
// for. The dump itself stays in the log file.
func (b *bench) goroutineDump(tg *target) {
	if tg.name != "sipwake" || tg.proc == nil || tg.proc.exited() {
		return
	}
	if wait := time.Until(tg.lastEnd.Add(b.set.settle)); wait > 0 && !tg.lastEnd.IsZero() {
		time.Sleep(wait)
	}
	tg.final, tg.finalAt = b.sampleMem(tg), time.Since(tg.lastEnd).Round(time.Second)
	b.printf("  sipwake %s after its last run: RSS/PSS %s MiB (anonymous %d), %d goroutines, heap_inuse %d MiB, runtime %d MiB; idle before load: RSS/PSS %s MiB (anonymous %d), %d goroutines, heap_inuse %d MiB, runtime %d MiB\n",
		tg.finalAt, tg.final, tg.final.Anon/1024, tg.final.Goroutines, tg.final.HeapInuse>>20, tg.final.RuntimeSys>>20,
		tg.idle, tg.idle.Anon/1024, tg.idle.Goroutines, tg.idle.HeapInuse>>20, tg.idle.RuntimeSys>>20)
	before, _ := os.ReadFile(tg.log)
	_ = syscall.Kill(tg.proc.pid(), syscall.SIGQUIT)
	select {
	case <-tg.proc.done:
	case <-time.After(20 * time.Second):
		tg.proc.stop(time.Second)
	}
	data, _ := os.ReadFile(tg.log)
	if len(data) < len(before) {
		return
	}
	dump := string(data[len(before):])
	type group struct {
		key string
		n   int
	}
	counts := map[string]int{}
	total := 0
	for _, blk := range strings.Split(dump, "\n\n") {
		lines := strings.Split(strings.TrimSpace(blk), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "goroutine ") {
			continue
		}
		total++
		state := lines[0]
		if i := strings.Index(state, "["); i >= 0 {
			state = strings.TrimSuffix(state[i+1:], "]:")
			if j := strings.Index(state, ","); j >= 0 {
				state = state[:j] // drop the wait time
			}
		}
		var frames []string
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "created by") {
				continue
			}
			fn := l
			if i := strings.LastIndex(fn, "("); i > 0 {
				fn = fn[:i]
			}
			if strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/") || strings.HasPrefix(fn, "sync.") {
				continue
			}
			frames = append(frames, fn)
			if len(frames) == 3 {
				break
			}
		}
		counts["["+state+"] "+strings.Join(frames, " <- ")]++
	}
	if total == 0 {
		return
	}
	var list []group
	for k, n := range counts {
		list = append(list, group{k, n})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].n > list[j].n })
	b.printf("  sipwake goroutines %s after its last run (SIGQUIT dump: %d goroutines), most common stacks:\n", time.Since(tg.lastEnd).Round(time.Second), total)
	for i, g := range list {
		if i == 6 {
			break
		}
		b.printf("    %6d x %s\n", g.n, g.key)
	}
}

// logSummary counts sipwake's log lines by level and prints the most
// frequent warning and error messages.
func (b *bench) logSummary(tg *target) {
	f, err := os.Open(tg.log)
	if err != nil {
		return
	}
	defer f.Close()
	levels := map[string]int{}
	msgs := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		var l struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Err   string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			levels["non-JSON (goroutine dump)"]++
			continue
		}
		levels[l.Level]++
		if l.Level != "info" && l.Level != "debug" {
			k := l.Level + ": " + l.Msg
			if l.Err != "" {
				k += " (" + l.Err + ")"
			}
			msgs[k]++
		}
	}
	b.printf("sipwake log %s: %v\n", tg.log, levels)
	type kv struct {
		k string
		n int
	}
	var list []kv
	for k, n := range msgs {
		list = append(list, kv{k, n})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].n > list[j].n })
	for i, e := range list {
		if i == 8 {
			break
		}
		b.printf("  %6d x %s\n", e.n, e.k)
	}
}

// ---------------------------------------------------------------- processes

// proc is a child process in its own process group, stopped by its PID.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

func startProc(t *testing.T, name, logPath string, env []string, bin string, args ...string) *proc {
	t.Helper()
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.Stdin = out, out, nil
	cmd.Env = env
	// Ended by the kernel if the bench dies first: Kamailio with SIGTERM,
	// on which its main process stops the workers it forked (SIGKILL
	// would leave them running), the others outright.
	sig := syscall.SIGKILL
	if name == "kamailio" {
		sig = syscall.SIGTERM
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: sig}
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(5 * time.Second) })
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop sends SIGTERM to the process group (our child is its leader), then
// SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exitCode() int {
	if !p.exited() || p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// cpuTicks is the CPU time of an exited process, in clock ticks.
func (p *proc) cpuTicks() int64 {
	if !p.exited() || p.cmd.ProcessState == nil {
		return ticksOf([]int{p.pid()})
	}
	d := p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
	return int64(d / (time.Second / clkTck))
}

// ---------------------------------------------------------------- /proc

// procStat returns the process group and utime+stime of pid.
func procStat(pid int) (pgrp int, ticks int64, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, 0, false
	}
	pgrp, _ = strconv.Atoi(f[2])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return pgrp, ut + st, true
}

// groupPIDs lists the processes of the group led by leader.
func groupPIDs(leader int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, _, ok := procStat(pid); ok && g == leader {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

func ticksOf(pids []int) int64 {
	var t int64
	for _, p := range pids {
		if _, v, ok := procStat(p); ok {
			t += v
		}
	}
	return t
}

func memOf(pids []int) memSample {
	var m memSample
	for _, p := range pids {
		m.RSS += kbField(fmt.Sprintf("/proc/%d/status", p), "VmRSS:")
		m.Anon += kbField(fmt.Sprintf("/proc/%d/status", p), "RssAnon:")
		m.PSS += kbField(fmt.Sprintf("/proc/%d/smaps_rollup", p), "Pss:")
	}
	return m
}

func kbField(path, key string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// cpuTicks is the machine's CPU time on all CPUs, in clock ticks, from
// one read of /proc/stat. busy is user, nice, system, irq, softirq and
// steal. all adds idle and iowait: everything the kernel accounted, wall
// time times the CPUs unless the hypervisor kept the CPUs from running
// (ticks then go missing, reported as steal only by some hypervisors).
// guest and guest_nice are already counted in user and nice.
func cpuTicks() (busy, all int64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	for i := 1; i <= 8; i++ { // user nice system idle iowait irq softirq steal
		n, _ := strconv.ParseInt(f[i], 10, 64)
		all += n
		if i != 4 && i != 5 {
			busy += n
		}
	}
	return busy, all
}

// socketInodes returns the inodes of the sockets the processes hold open.
func socketInodes(pids []int) map[string]bool {
	inodes := map[string]bool{}
	for _, p := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", p)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			l, err := os.Readlink(filepath.Join(dir, e.Name()))
			if err != nil {
				continue
			}
			if in, ok := strings.CutPrefix(l, "socket:["); ok {
				inodes[strings.TrimSuffix(in, "]")] = true
			}
		}
	}
	return inodes
}

// udpDropsOf sums the per-socket drop counters (/proc/net/udp, udp6) of
// the sockets with the given inodes.
func udpDropsOf(inodes map[string]bool) int64 {
	var n int64
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n")[1:] {
			fs := strings.Fields(l)
			if len(fs) < 13 || !inodes[fs[9]] {
				continue
			}
			v, _ := strconv.ParseInt(fs[12], 10, 64)
			n += v
		}
	}
	return n
}

// udpRcvbufErrors is the kernel's count of UDP datagrams dropped for a
// full receive buffer (whole machine).
func udpRcvbufErrors() int64 {
	data, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "?"
}

func memTotal() string {
	kb := kbField("/proc/meminfo", "MemTotal:")
	return fmt.Sprintf("%.1f GiB RAM", float64(kb)/1024/1024)
}

func toolVersion(bin string, arg string) string {
	p, err := lookBin(bin)
	if err != nil {
		return bin + " ?"
	}
	out, _ := exec.Command(p, arg).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l != "" {
			return l
		}
	}
	return bin
}

// ---------------------------------------------------------------- network

// freePort returns a port free right now on ip for network "udp", "tcp"
// or "udp+tcp".
func freePort(t *testing.T, ip, network string) int {
	t.Helper()
	for range 50 {
		l, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if network == "tcp" {
			var tl net.Listener
			tl, err = net.Listen("tcp", net.JoinHostPort(ip, "0"))
			if err == nil {
				p := tl.Addr().(*net.TCPAddr).Port
				tl.Close()
				return p
			}
			continue
		}
		if err != nil {
			continue
		}
		p := l.LocalAddr().(*net.UDPAddr).Port
		l.Close()
		if network == "udp+tcp" {
			tl, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p)))
			if err != nil {
				continue
			}
			tl.Close()
		}
		return p
	}
	t.Fatalf("no free %s port on %s", network, ip)
	return 0
}

// freePortRange returns the first of n consecutive UDP ports free on ip
// (SIPp binds its media port and media port + 2).
func freePortRange(t *testing.T, ip string, n int) int {
	t.Helper()
	for range 50 {
		base := freePort(t, ip, "udp")
		if base+n > 65535 {
			continue
		}
		ok := true
		for i := 1; i < n; i++ {
			l, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(base+i)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("no %d free consecutive ports on %s", n, ip)
	return 0
}

// portBound reports whether a UDP port on ip is taken.
func portBound(ip string, port int) bool {
	l, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return true
	}
	l.Close()
	return false
}

// waitOptions sends OPTIONS to addr until it answers 200 (or p exits).
func waitOptions(addr string, p *proc, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited with status %d", p.name, p.exitCode())
		}
		if last = optionsPing(addr); last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no 200 to OPTIONS from %s within %s: %v", addr, d, last)
}

func optionsPing(addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	msg := "OPTIONS sip:" + addr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK-" + id + ";rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:probe@" + local + ">;tag=" + id + "\r\n" +
		"To: <sip:" + addr + ">\r\n" +
		"Call-ID: " + id + "@bench\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		"Content-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if bytes.HasPrefix(buf[:n], []byte("SIP/2.0 200")) {
			return nil
		}
		if !bytes.HasPrefix(buf[:n], []byte("SIP/2.0 1")) {
			line, _, _ := bytes.Cut(buf[:n], []byte("\r\n"))
			return fmt.Errorf("OPTIONS answered %q", line)
		}
	}
}

// scrapeMetrics reads the unlabelled samples named on a Prometheus text
// endpoint in one request; a name not there is missing from the map.
func scrapeMetrics(base string, names ...string) map[string]float64 {
	out := map[string]float64{}
	c := http.Client{Timeout: 2 * time.Second}
	res, err := c.Get(base + "/metrics")
	if err != nil {
		return out
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			out[name] = f
		}
	}
	return out
}

// scrapeSum sums the samples of one metric on a Prometheus text endpoint
// whose labels contain every one of labels (e.g. `method="INVITE"`); a
// metric that is not there counts 0.
func scrapeSum(base, name string, labels ...string) float64 {
	c := http.Client{Timeout: 2 * time.Second}
	res, err := c.Get(base + "/metrics")
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		rest, ok := strings.CutPrefix(l, name)
		if !ok || (!strings.HasPrefix(rest, "{") && !strings.HasPrefix(rest, " ")) {
			continue
		}
		lbl, val := "", rest
		if strings.HasPrefix(rest, "{") {
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				continue
			}
			lbl, val = rest[:i+1], rest[i+1:]
		}
		match := true
		for _, want := range labels {
			if !strings.Contains(lbl, want) {
				match = false
				break
			}
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); match && err == nil {
			sum += f
		}
	}
	return sum
}

// ---------------------------------------------------------------- files

func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// lookBin finds a binary on PATH or in the sbin directories (Debian puts
// kamailio in /usr/sbin).
func lookBin(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, bin)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", bin)
}

func binPath(t *testing.T, bin string) string {
	p, err := lookBin(bin)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func tailFile(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(s)
	return err
}
