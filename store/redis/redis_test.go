package redis_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/redis"
	"github.com/sipwake/sipwake/store/storetest"
)

// prefixFor gives each test its own key prefix, so tests share one server
// without seeing each other's data or events.
func prefixFor(t *testing.T) string {
	return "test:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name()) + ":"
}

func openFunc(addrs []string, cluster bool) storetest.OpenFunc {
	return func(t *testing.T, nodeID string) store.Store {
		s, err := redis.Open(t.Context(), redis.Options{
			Addresses:  addrs,
			Cluster:    cluster,
			KeyPrefix:  prefixFor(t),
			NodeID:     nodeID,
			Registerer: prometheus.NewRegistry(),
		})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
}

// TestConformance runs the shared suite against a real redis-server; each
// store is a separate client (a separate node) on the test's key prefix.
func TestConformance(t *testing.T) {
	addr := storetest.StartRedis(t)
	storetest.Run(t, openFunc([]string{addr}, false))
}

// TestConformanceCluster runs the suite against a one-node Redis Cluster
// holding all 16384 slots, through go-redis's ClusterClient. Redis still
// refuses a command or script whose declared keys span slots (CROSSSLOT),
// and the keys a script builds itself are checked here with CLUSTER KEYSLOT
// (a single node owns every slot, so it would not notice those).
func TestConformanceCluster(t *testing.T) {
	addr := startCluster(t)
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx := t.Context()
	// The keys of one AOR share a slot even for AORs with braces.
	for _, aor := range []string{"sip:alice@example.com", "sip:a}b@x", "sip:{a}@x"} {
		ak, bk, _ := redis.Keys("sipwake:", aor, "inst}{", "tok")
		s1, _ := c.ClusterKeySlot(ctx, ak).Result()
		s2, _ := c.ClusterKeySlot(ctx, bk).Result()
		if s1 != s2 {
			t.Errorf("aor %q: AOR set in slot %d, binding in slot %d", aor, s1, s2)
		}
	}
	// The held-call index and every record share a slot, whatever the ID.
	for _, id := range []string{"c1;z9hG4bK1", "{x}", "}{", "a\x00b"} {
		index, record := redis.HeldKeys("sipwake:", id)
		s1, _ := c.ClusterKeySlot(ctx, index).Result()
		s2, _ := c.ClusterKeySlot(ctx, record).Result()
		if s1 != s2 {
			t.Errorf("held call %q: index in slot %d, record in slot %d", id, s1, s2)
		}
	}
	storetest.Run(t, openFunc([]string{addr}, true))
}

// startCluster starts a one-node Redis Cluster holding every slot and
// returns its address once the cluster state is ok.
func startCluster(t *testing.T) string {
	t.Helper()
	addr := storetest.StartRedis(t, "--cluster-enabled", "yes", "--cluster-announce-ip", "127.0.0.1")
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx := t.Context()
	if err := c.ClusterAddSlotsRange(ctx, 0, 16383).Err(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok after 10s: %v %s", err, info)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return addr
}

func TestOpenUnreachable(t *testing.T) {
	// A port nobody listens on: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close()

	// A server that accepts and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()

	for _, tc := range []struct{ name, addr string }{{"refused", refused}, {"silent", silent.Addr().String()}} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{tc.addr}, NodeID: "n"})
			elapsed := time.Since(start)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), "redis store: open") || !strings.Contains(err.Error(), tc.addr) {
				t.Errorf("error %q does not name the store and the address", err)
			}
			if limit := redis.OpenTimeout + 2*time.Second; elapsed > limit {
				t.Errorf("Open took %s, want under %s", elapsed, limit)
			}
		})
	}
}

func TestUniversalOptions(t *testing.T) {
	tlsConf := &tls.Config{ServerName: "redis.example.com"}
	tests := []struct {
		name       string
		opt        redis.Options
		wantErr    string
		wantMaster string
		wantAddrs  int
		wantClient string // "single", "cluster"
		check      func(t *testing.T, uo *goredis.UniversalOptions)
	}{
		{name: "single", opt: redis.Options{Addresses: []string{"r:6379"}, DB: 2, Username: "u", Password: "p", TLS: tlsConf, NodeID: "n1"},
			wantAddrs: 1, wantClient: "single", check: func(t *testing.T, uo *goredis.UniversalOptions) {
				if uo.DB != 2 || uo.Username != "u" || uo.Password != "p" || uo.TLSConfig != tlsConf || uo.ClientName != "sipwake-n1" {
					t.Errorf("options not carried: %+v", uo)
				}
				if !uo.ContextTimeoutEnabled || uo.DialTimeout == 0 || uo.ReadTimeout == 0 {
					t.Errorf("timeouts not set: %+v", uo)
				}
				if uo.PoolSize != redis.DefaultPoolSize || uo.MinIdleConns != redis.DefaultMinIdleConns {
					t.Errorf("pool %d/%d idle, want defaults %d/%d", uo.PoolSize, uo.MinIdleConns, redis.DefaultPoolSize, redis.DefaultMinIdleConns)
				}
			}},
		{name: "pool size set, no idle connections", opt: redis.Options{Addresses: []string{"r:6379"}, NodeID: "n", PoolSize: 8, MinIdleConns: -1},
			wantAddrs: 1, wantClient: "single", check: func(t *testing.T, uo *goredis.UniversalOptions) {
				if uo.PoolSize != 8 || uo.MinIdleConns != 0 {
					t.Errorf("pool %d/%d idle, want 8/0", uo.PoolSize, uo.MinIdleConns)
				}
			}},
		{name: "idle connections capped by pool size", opt: redis.Options{Addresses: []string{"r:6379"}, NodeID: "n", PoolSize: 2},
			wantAddrs: 1, wantClient: "single", check: func(t *testing.T, uo *goredis.UniversalOptions) {
				if uo.PoolSize != 2 || uo.MinIdleConns != 2 {
					t.Errorf("pool %d/%d idle, want 2/2", uo.PoolSize, uo.MinIdleConns)
				}
			}},
		{name: "cluster pool per node", opt: redis.Options{Addresses: []string{"c1:6379", "c2:6379"}, NodeID: "n", MinIdleConns: 1},
			wantAddrs: 2, wantClient: "cluster", check: func(t *testing.T, uo *goredis.UniversalOptions) {
				if uo.PoolSize != redis.DefaultPoolSize || uo.MinIdleConns != 1 {
					t.Errorf("pool %d/%d idle, want %d/1", uo.PoolSize, uo.MinIdleConns, redis.DefaultPoolSize)
				}
			}},
		{name: "negative pool size", opt: redis.Options{Addresses: []string{"r:6379"}, NodeID: "n", PoolSize: -1}, wantErr: "pool size"},
		{name: "wait replicas", opt: redis.Options{Addresses: []string{"r:6379"}, NodeID: "n", WaitReplicas: 1, WaitTimeout: redis.MaxWaitTimeout},
			wantAddrs: 1, wantClient: "single"},
		{name: "negative wait replicas", opt: redis.Options{Addresses: []string{"r:6379"}, NodeID: "n", WaitReplicas: -1}, wantErr: "wait replicas"},
		{name: "negative wait timeout", opt: redis.Options{Addresses: []string{"r:6379"}, NodeID: "n", WaitReplicas: 1, WaitTimeout: -time.Second}, wantErr: "wait timeout"},
		{name: "wait timeout too long", opt: redis.Options{Addresses: []string{"r:6379"}, NodeID: "n", WaitReplicas: 1, WaitTimeout: redis.MaxWaitTimeout + time.Millisecond}, wantErr: "wait timeout"},
		{name: "sentinel", opt: redis.Options{Addresses: []string{"s1:26379", "s2:26379", "s3:26379"}, SentinelMaster: "mymaster", DB: 1, NodeID: "n"},
			wantMaster: "mymaster", wantAddrs: 3, wantClient: "single"},
		{name: "cluster by several addresses", opt: redis.Options{Addresses: []string{"c1:6379", "c2:6379"}, NodeID: "n"},
			wantAddrs: 2, wantClient: "cluster"},
		{name: "cluster forced with one seed", opt: redis.Options{Addresses: []string{"cfg:6379"}, Cluster: true, NodeID: "n"},
			wantAddrs: 1, wantClient: "cluster"},
		{name: "node id sanitised in client name", opt: redis.Options{Addresses: []string{"r:6379"}, NodeID: "my node\n"},
			wantAddrs: 1, wantClient: "single", check: func(t *testing.T, uo *goredis.UniversalOptions) {
				if uo.ClientName != "sipwake-my_node_" {
					t.Errorf("ClientName = %q", uo.ClientName)
				}
			}},
		{name: "no address", opt: redis.Options{NodeID: "n"}, wantErr: "address"},
		{name: "empty address", opt: redis.Options{Addresses: []string{""}, NodeID: "n"}, wantErr: "address"},
		{name: "no node id", opt: redis.Options{Addresses: []string{"r:6379"}}, wantErr: "node id"},
		{name: "brace in prefix", opt: redis.Options{Addresses: []string{"r:6379"}, KeyPrefix: "a{b}", NodeID: "n"}, wantErr: "prefix"},
		{name: "db in cluster", opt: redis.Options{Addresses: []string{"c1:6379", "c2:6379"}, DB: 1, NodeID: "n"}, wantErr: "cluster"},
		{name: "sentinel and cluster", opt: redis.Options{Addresses: []string{"s:26379"}, SentinelMaster: "m", Cluster: true, NodeID: "n"}, wantErr: "exclusive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			uo, err := redis.UniversalOptions(tc.opt)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if uo.MasterName != tc.wantMaster || len(uo.Addrs) != tc.wantAddrs {
				t.Errorf("MasterName %q, %d addrs; want %q, %d", uo.MasterName, len(uo.Addrs), tc.wantMaster, tc.wantAddrs)
			}
			// What go-redis builds from it. No connection is made: idle
			// connections (MinIdleConns) would be dialled at once, so the
			// copy built here keeps none.
			built := *uo
			built.MinIdleConns = 0
			c := goredis.NewUniversalClient(&built)
			defer c.Close()
			got := "single"
			if _, ok := c.(*goredis.ClusterClient); ok {
				got = "cluster"
			}
			if got != tc.wantClient {
				t.Errorf("client %s, want %s", got, tc.wantClient)
			}
			if tc.check != nil {
				tc.check(t, uo)
			}
		})
	}
}

func TestErrorMetric(t *testing.T) {
	addr := storetest.StartRedis(t)
	reg := prometheus.NewRegistry()
	s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefixFor(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.DeleteBinding(t.Context(), "sip:x@example.com", "i"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteBinding: %v, want ErrNotFound", err)
	}
	b := storetest.Fixture("sip:x@example.com", "i", "t", time.Hour)
	if _, err := s.PutBinding(t.Context(), b, 0); err != nil {
		t.Fatal(err)
	}
	b.Instance = "j"
	b.Token = "t2"
	if _, err := s.PutBinding(t.Context(), b, 1); !errors.Is(err, store.ErrTooManyBindings) {
		t.Fatalf("PutBinding: %v, want ErrTooManyBindings", err)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Ping(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ping(canceled) = %v, want context.Canceled", err)
	}
	if _, err := s.Secret(canceled, "k", 32); !errors.Is(err, context.Canceled) {
		t.Fatalf("Secret(canceled) = %v, want context.Canceled", err)
	}
	if _, err := s.Secret(t.Context(), "k", 32); err != nil {
		t.Fatalf("Secret: %v", err)
	}
	// A lost claim is an outcome, not an error.
	now := time.Now()
	if err := s.PutHeld(t.Context(), storetest.HeldFixture("h", "sip:x@example.com", "n1", now, now.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimHeld(t.Context(), "h", "n2", "n3"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("ClaimHeld: %v, want ErrConflict", err)
	}
	if err := s.Heartbeat(canceled, "n1", time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("Heartbeat(canceled) = %v, want context.Canceled", err)
	}
	// A duplicate and an absent message are outcomes, not errors.
	m := storetest.MessageFixture("m", "sip:x@example.com", now, now.Add(time.Hour), "d1")
	for range 2 {
		if _, err := s.PutMessage(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Acknowledge(t.Context(), "absent", "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Acknowledge(absent): %v, want ErrNotFound", err)
	}
	if _, err := s.Lease(canceled, "k", "n1", time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lease(canceled) = %v, want context.Canceled", err)
	}
	for op, want := range map[string]float64{"ping": 1, "put_binding": 0, "delete_binding": 0, "secret": 1,
		"claim_held": 0, "heartbeat": 1, "publish": 0, "put_message": 0, "acknowledge": 0, "lease": 1,
		"release_lease": 0} {
		labels := map[string]string{"backend": "redis", "op": op}
		if got := counter(t, reg, "sipwake_store_errors_total", labels); got != want {
			t.Errorf("sipwake_store_errors_total%v = %v, want %v", labels, got, want)
		}
	}
}

// counter returns the value of the counter name with exactly labels.
func counter(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func matches(m *dto.Metric, labels map[string]string) bool {
	if len(m.GetLabel()) != len(labels) {
		return false
	}
	for _, l := range m.GetLabel() {
		if labels[l.GetName()] != l.GetValue() {
			return false
		}
	}
	return true
}

func TestSlowSubscriberDropsAndCounts(t *testing.T) {
	addr := storetest.StartRedis(t)
	reg := prometheus.NewRegistry()
	s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefixFor(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Subscribe(t.Context()); err != nil { // never read
		t.Fatal(err)
	}
	const extra = 20
	for range redis.SubscriberBuffer + extra {
		b := storetest.Fixture("sip:slow@example.com", "d", "t", time.Hour)
		if _, err := s.PutBinding(t.Context(), b, 0); err != nil {
			t.Fatal(err)
		}
	}
	labels := map[string]string{"backend": "redis"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := counter(t, reg, "sipwake_store_events_dropped_total", labels)
		if got == extra {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dropped events counted %v, want %d", got, extra)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSubscribeResyncAfterRestart: when redis-server dies and comes back,
// the subscription is re-established by itself and the subscriber gets
// store.EventResync (events published in the gap are lost), then events
// flow again.
func TestSubscribeResyncAfterRestart(t *testing.T) {
	rs := storetest.StartRedisServer(t)
	s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{rs.Addr}, NodeID: "n", KeyPrefix: prefixFor(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ch, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	next := func(d time.Duration) (store.Event, bool) {
		select {
		case ev := <-ch:
			return ev, true
		case <-time.After(d):
			return store.Event{}, false
		}
	}
	rs.Kill(t)
	rs.Restart(t)
	ev, ok := next(5 * time.Second)
	if !ok || ev.Kind != store.EventResync {
		t.Fatalf("after the restart: %+v (received %v), want %s", ev, ok, store.EventResync)
	}
	if _, err := s.PutBinding(t.Context(), storetest.Fixture("sip:back@example.com", "d", "t", time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if ev, ok := next(5 * time.Second); !ok || ev.Kind != store.EventBindingPut || ev.AOR != "sip:back@example.com" {
		t.Fatalf("event after the resync: %+v (received %v)", ev, ok)
	}
	if ev, ok := next(300 * time.Millisecond); ok {
		t.Errorf("unexpected event %+v", ev)
	}
}

// TestPutEventNoMessages: on a single server the put script tells
// subscribers whether the AOR has a stored message, so that a registration
// costs no round trip to look for one; once the last message is gone the
// hint comes back.
func TestPutEventNoMessages(t *testing.T) {
	addr := storetest.StartRedis(t)
	s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefixFor(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ch, err := s.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const aor = "sip:pia@example.com"
	put := func() store.Event {
		t.Helper()
		if _, err := s.PutBinding(t.Context(), storetest.Fixture(aor, "d", "t", time.Hour), 0); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-ch:
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no put event")
		}
		return store.Event{}
	}
	if ev := put(); !ev.NoMessages {
		t.Errorf("no message stored: event %+v, want NoMessages", ev)
	}
	now := time.Now()
	if _, err := s.PutMessage(t.Context(), storetest.MessageFixture("m1", aor, now, now.Add(time.Hour), "d")); err != nil {
		t.Fatal(err)
	}
	if ev := put(); ev.NoMessages {
		t.Errorf("a message waits: event %+v says none", ev)
	}
	if _, err := s.Acknowledge(t.Context(), "m1", "d"); err != nil {
		t.Fatal(err)
	}
	if ev := put(); !ev.NoMessages {
		t.Errorf("the message was delivered: event %+v, want NoMessages", ev)
	}
}

// TestBindingLivesUntilItsExpiry: the store keeps expiries in whole
// milliseconds; a binding read in the last fraction of a millisecond
// before its expiry is still there (an expiry rounded down made it vanish
// up to a millisecond early, in the AOR's listing).
func TestBindingLivesUntilItsExpiry(t *testing.T) {
	addr := storetest.StartRedis(t)
	s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefixFor(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const aor = "sip:ola@example.com"
	checked := 0
	for i := 0; checked < 20 && i < 500; i++ {
		// An expiry 0.9 ms into a millisecond, a few milliseconds ahead.
		ahead := time.Now().Add(5 * time.Millisecond).Truncate(time.Millisecond)
		b := storetest.Fixture(aor, "d", "tok-edge", 0)
		b.Expires = ahead.Add(900 * time.Microsecond)
		if _, err := s.PutBinding(t.Context(), b, 0); err != nil {
			t.Fatal(err)
		}
		// Wait for that millisecond to begin, then list the AOR.
		for time.Now().Before(ahead) {
		}
		bs, err := s.Bindings(t.Context(), aor)
		if err != nil {
			t.Fatal(err)
		}
		end := time.Now()
		if !end.Before(b.Expires) {
			continue // the answer came after the expiry: nothing to tell
		}
		checked++
		if len(bs) != 1 {
			t.Fatalf("listed before %s, its expiry %s: %d bindings, want 1", end.Format("15:04:05.000000"), b.Expires.Format("15:04:05.000000"), len(bs))
		}
	}
	if checked < 20 {
		t.Fatalf("only %d listings early enough to tell", checked)
	}
}

// BenchmarkCountBindings compares the bindings gauge's count with listing
// every binding, over 10,000 bindings (5,000 AORs, two devices each, one
// in four without a push target); one op is one full count.
func BenchmarkCountBindings(b *testing.B) {
	addr := storetest.StartRedis(b)
	s, err := redis.Open(b.Context(), redis.Options{
		Addresses: []string{addr}, KeyPrefix: "bench:", NodeID: "bench", Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	defer s.Close()
	for i := range 10000 {
		aor, inst := "sip:user"+strconv.Itoa(i/2)+"@example.com", "dev"+strconv.Itoa(i%2)
		bd := storetest.Fixture(aor, inst, aor+"/"+inst, time.Hour)
		if i%4 == 0 {
			bd.Push = nil
		}
		if _, err := s.PutBinding(b.Context(), bd, 0); err != nil {
			b.Fatalf("PutBinding: %v", err)
		}
	}
	// The node's CPU (this process; redis-server's is its own).
	nodeCPU := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	run := func(b *testing.B, op func() error) {
		b.ReportAllocs()
		cpu0 := nodeCPU()
		for b.Loop() {
			if err := op(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((nodeCPU()-cpu0).Milliseconds())/float64(b.N), "node-cpu-ms/op")
	}
	b.Run("count", func(b *testing.B) {
		run(b, func() error {
			counts, err := s.CountBindings(b.Context())
			if err == nil && (counts["apns"] != 7500 || counts[""] != 2500) {
				err = fmt.Errorf("CountBindings = %v", counts)
			}
			return err
		})
	})
	b.Run("list", func(b *testing.B) {
		run(b, func() error {
			bs, err := s.ListBindings(b.Context(), store.ListOptions{})
			if err == nil && len(bs) != 10000 {
				err = fmt.Errorf("ListBindings: %d bindings", len(bs))
			}
			return err
		})
	})
}
