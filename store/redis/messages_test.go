package redis_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/redis"
	"github.com/sipwake/sipwake/store/storetest"
)

// TestMessageRoundTrips counts the round trips of the stored-message and
// lease operations: one each in every mode, except a Cluster's look-up by
// AOR (an EXISTS first); with WaitReplicas the put and its WAIT share one
// pipeline.
func TestMessageRoundTrips(t *testing.T) {
	single := storetest.StartRedis(t)
	cluster := startCluster(t)
	evalsha := []string{"evalsha"}
	for _, tc := range []struct {
		name    string
		addr    string
		cluster bool
	}{{"single", single, false}, {"cluster", cluster, true}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := redis.Open(t.Context(), redis.Options{
				Addresses: []string{tc.addr}, Cluster: tc.cluster, NodeID: "n",
				KeyPrefix: prefixFor(t), PoolSize: 1, MinIdleConns: -1,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := t.Context()
			now := time.Now()
			m := storetest.MessageFixture("m1", "sip:trips@example.com", now, now.Add(time.Hour), "d1", "d2", "d3")
			// A Cluster looks for the AOR's index first (registrations ask
			// there, with no hint in their event); a single server runs the
			// script, asked only when the AOR has messages.
			forAOR := func(has bool) [][]string {
				switch {
				case !tc.cluster:
					return [][]string{evalsha}
				case has:
					return [][]string{{"exists"}, evalsha}
				}
				return [][]string{{"exists"}}
			}
			steps := []struct {
				name string
				do   func() error
				want [][]string
			}{
				{"put message", func() error { _, err := s.PutMessage(ctx, m); return err }, [][]string{evalsha}},
				{"message", func() error { _, err := s.Message(ctx, m.ID); return err }, [][]string{{"hgetall"}}},
				{"list messages", func() error {
					_, err := s.ListMessages(ctx, store.MessageFilter{Limit: 10})
					return err
				}, [][]string{evalsha}},
				{"messages for", func() error { _, err := s.MessagesFor(ctx, m.AOR, "d1", 0); return err }, forAOR(true)},
				{"messages for an AOR without any", func() error {
					_, err := s.MessagesFor(ctx, "sip:none@example.com", "d1", 0)
					return err
				}, forAOR(false)},
				{"add pending", func() error { return s.AddPending(ctx, m.ID, "d4") }, [][]string{evalsha}},
				{"count attempt", func() error { return s.CountAttempt(ctx, m.ID) }, [][]string{evalsha}},
				{"acknowledge", func() error { _, err := s.Acknowledge(ctx, m.ID, "d1"); return err }, [][]string{evalsha}},
				{"lease", func() error { _, err := s.Lease(ctx, "k", "n", time.Minute); return err }, [][]string{evalsha}},
				{"release lease", func() error { return s.ReleaseLease(ctx, "k", "n") }, [][]string{evalsha}},
				{"delete message", func() error { return s.DeleteMessage(ctx, m.ID) }, [][]string{evalsha}},
			}
			// Warm up: the first call of each script after a server start
			// is EVALSHA, NOSCRIPT, then EVAL.
			for _, step := range steps {
				if err := step.do(); err != nil {
					t.Fatalf("warm-up %s: %v", step.name, err)
				}
			}
			rec := &tripRecorder{}
			s.AddHook(rec)
			for _, step := range steps {
				rec.take()
				if err := step.do(); err != nil {
					t.Fatalf("%s: %v", step.name, err)
				}
				if got := rec.take(); !reflect.DeepEqual(got, step.want) {
					t.Errorf("%s: round trips %q, want %q", step.name, got, step.want)
				}
			}
		})
	}
}

// TestPutMessageWaitRoundTrip: with WaitReplicas the script and WAIT go
// in one pipeline (one round trip) once the script is cached.
func TestPutMessageWaitRoundTrip(t *testing.T) {
	primary := storetest.StartRedis(t)
	startReplica(t, primary)
	s, err := redis.Open(t.Context(), redis.Options{
		Addresses: []string{primary}, NodeID: "n", KeyPrefix: prefixFor(t),
		PoolSize: 1, MinIdleConns: -1, WaitReplicas: 1, WaitTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	now := time.Now()
	rec := &tripRecorder{}
	s.AddHook(rec)
	// The first put after the server started: EVALSHA and WAIT, NOSCRIPT,
	// then EVAL and WAIT.
	if _, err := s.PutMessage(ctx, storetest.MessageFixture("warm", "sip:w@example.com", now, now.Add(time.Hour), "d1")); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.take(), [][]string{{"evalsha", "wait"}, {"eval", "wait"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("first put: round trips %q, want %q", got, want)
	}
	if _, err := s.PutMessage(ctx, storetest.MessageFixture("m1", "sip:w@example.com", now, now.Add(time.Hour), "d1")); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.take(), [][]string{{"evalsha", "wait"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("put: round trips %q, want %q", got, want)
	}
}

// startReplica starts a redis-server replicating primary and waits until
// the primary counts it as connected and in sync.
func startReplica(t *testing.T, primary string, extra ...string) string {
	t.Helper()
	host, port, _ := strings.Cut(primary, ":")
	c := goredis.NewClient(&goredis.Options{Addr: primary})
	defer c.Close()
	// Redis 7 waits 5 s for more replicas before a diskless full sync.
	if err := c.ConfigSet(t.Context(), "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatal(err)
	}
	replica := storetest.StartRedis(t, append([]string{"--replicaof", host, port}, extra...)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := c.Info(t.Context(), "replication").Result()
		if err == nil && strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online") {
			return replica
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica of %s not online after 10s: %v %s", primary, err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPutMessageWaitsForReplicas: with WaitReplicas a put succeeds once
// the replicas have the message, and fails with ErrNotReplicated (after
// WaitTimeout) when too few do; the message is then on the primary, and a
// retry of the same MESSAGE reports a duplicate once replicated. In a
// Cluster the WAIT goes to the slot's primary, on the write's connection.
func TestPutMessageWaitsForReplicas(t *testing.T) {
	primary := storetest.StartRedis(t, "--appendonly", "yes", "--appendfsync", "everysec")
	replica := startReplica(t, primary)
	ctx := t.Context()
	prefix := prefixFor(t)
	open := func(n int, timeout time.Duration) *redis.Store {
		t.Helper()
		s, err := redis.Open(ctx, redis.Options{Addresses: []string{primary}, NodeID: "n", KeyPrefix: prefix,
			WaitReplicas: n, WaitTimeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	one, two := open(1, time.Second), open(2, 300*time.Millisecond)
	now := time.Now()
	m := storetest.MessageFixture("w1", "sip:wait@example.com", now, now.Add(time.Hour), "d1")
	if created, err := one.PutMessage(ctx, m); err != nil || !created {
		t.Fatalf("PutMessage waiting for 1 of 1 replica = %v, %v; want created", created, err)
	}
	rc := goredis.NewClient(&goredis.Options{Addr: replica})
	defer rc.Close()
	_, _, _, key := redis.MessageKeys(prefix, m.AOR, m.ID)
	if n, err := rc.Exists(ctx, key).Result(); err != nil || n != 1 {
		t.Errorf("message on the replica right after the put: exists %d, %v; want 1", n, err)
	}

	m2 := storetest.MessageFixture("w2", "sip:wait@example.com", now, now.Add(time.Hour), "d1")
	start := time.Now()
	created, err := two.PutMessage(ctx, m2)
	if !errors.Is(err, redis.ErrNotReplicated) {
		t.Fatalf("PutMessage waiting for 2 replicas with 1 = %v, %v; want ErrNotReplicated", created, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("refused put took %s, want about the WaitTimeout (300ms)", d)
	}
	if _, err := one.Message(ctx, m2.ID); err != nil {
		t.Errorf("Message after a put refused for lack of replicas: %v (it is on the primary)", err)
	}
	if created, err := one.PutMessage(ctx, m2); err != nil || created {
		t.Errorf("retry of the refused put = %v, %v; want a duplicate and no error", created, err)
	}

	d, err := one.CheckDurability(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.AppendOnly != "yes" || d.AppendFsync != "everysec" || d.Replicas != 1 || d.WaitReplicas != 1 || !d.Durable() {
		t.Errorf("CheckDurability(everysec, WAIT 1, 1 replica) = %+v (warnings %q); want durable", d, d.Warnings())
	}
	if d, err := two.CheckDurability(ctx); err != nil || d.Durable() || len(d.Warnings()) != 1 || !strings.Contains(d.Warnings()[0], "replicas") {
		t.Errorf("CheckDurability(WAIT 2, 1 replica) = %+v, %v (warnings %q); want one warning about replicas", d, err, d.Warnings())
	}

	t.Run("cluster", func(t *testing.T) {
		addr := startCluster(t)
		s, err := redis.Open(ctx, redis.Options{Addresses: []string{addr}, Cluster: true, NodeID: "n",
			KeyPrefix: prefixFor(t), WaitReplicas: 1, WaitTimeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.PutMessage(ctx, m); !errors.Is(err, redis.ErrNotReplicated) {
			t.Fatalf("PutMessage in a Cluster without replicas: %v, want ErrNotReplicated", err)
		}
		if _, err := s.Message(ctx, m.ID); err != nil {
			t.Errorf("Message: %v", err)
		}
		d, err := s.CheckDurability(ctx)
		if err != nil || d.Replicas != 0 || d.AppendOnly != "no" || d.Durable() {
			t.Errorf("CheckDurability(cluster) = %+v, %v; want no AOF, 0 replicas, not durable", d, err)
		}
	})
}

// TestMessagesAcrossRedisCrash kills redis-server with SIGKILL right after
// PutMessage returned and starts it again on the same directory: with
// appendonly yes and appendfsync always the message (and its later
// acknowledgement) is there, with no persistence it is gone — what
// README.md says each setting gives.
func TestMessagesAcrossRedisCrash(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		durable bool
	}{
		{"aof always", []string{"--appendonly", "yes", "--appendfsync", "always"}, true},
		{"no persistence", []string{"--appendonly", "no", "--save", ""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"--dir", dir}, tc.args...)
			ctx := t.Context()
			prefix := prefixFor(t)
			addr := storetest.StartRedis(t, args...)
			s, err := redis.Open(ctx, redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if d, err := s.CheckDurability(ctx); err != nil || d.Durable() != tc.durable {
				t.Errorf("CheckDurability = %+v, %v (warnings %q); want durable %v", d, err, d.Warnings(), tc.durable)
			}
			now := time.Now()
			m := storetest.MessageFixture("crash-1", "sip:crash@example.com", now, now.Add(time.Hour), "d1", "d2")
			if _, err := s.PutMessage(ctx, m); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Acknowledge(ctx, m.ID, "d1"); err != nil {
				t.Fatal(err)
			}
			killRedis(t, addr)

			addr2 := storetest.StartRedis(t, args...)
			s2, err := redis.Open(ctx, redis.Options{Addresses: []string{addr2}, NodeID: "n", KeyPrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			got, err := s2.Message(ctx, m.ID)
			if !tc.durable {
				if !errors.Is(err, store.ErrNotFound) {
					t.Errorf("Message after a crash without persistence = %v; the test assumes it is lost", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Message after the crash: %v", err)
			}
			if !slices.Equal(got.Pending, []string{"d2"}) || !slices.Equal(got.Delivered, []string{"d1"}) || !slices.Equal(got.Request, m.Request) {
				t.Errorf("Message after the crash: pending %q, delivered %q, request equal %v; want [d2], [d1], true",
					got.Pending, got.Delivered, slices.Equal(got.Request, m.Request))
			}
			if ms, err := s2.MessagesFor(ctx, m.AOR, "d2", 0); err != nil || len(ms) != 1 {
				t.Errorf("MessagesFor after the crash = %d messages, %v; want 1", len(ms), err)
			}
		})
	}
}

// killRedis sends SIGKILL to the redis-server at addr and waits until it
// no longer answers.
func killRedis(t *testing.T, addr string) {
	t.Helper()
	pid, err := storetest.RedisPID(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := storetest.RedisPID(addr); err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server %d still answers after SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCheckDurabilityWithoutConfig: a server that refuses CONFIG (renamed
// away, as managed services do) is no error; appendonly then comes from
// INFO persistence and appendfsync is unknown.
func TestCheckDurabilityWithoutConfig(t *testing.T) {
	addr := storetest.StartRedis(t, "--appendonly", "yes", "--rename-command", "CONFIG", "")
	for _, wait := range []int{0, 1} {
		s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefixFor(t), WaitReplicas: wait})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		d, err := s.CheckDurability(t.Context())
		if err != nil {
			t.Fatalf("CheckDurability: %v", err)
		}
		if !d.ConfigDenied || d.AppendOnly != "yes" || d.AppendFsync != "" || d.Replicas != 0 || d.Durable() {
			t.Errorf("CheckDurability (wait %d) = %+v; want CONFIG denied, appendonly yes from INFO, fsync unknown, not durable", wait, d)
		}
	}
}

func TestDurabilityWarnings(t *testing.T) {
	for _, tc := range []struct {
		d    redis.Durability
		want []string // one substring per warning
	}{
		{redis.Durability{AppendOnly: "yes", AppendFsync: "always", Replicas: 0}, nil},
		{redis.Durability{AppendOnly: "yes", AppendFsync: "always", Replicas: -1}, nil},
		{redis.Durability{AppendOnly: "yes", AppendFsync: "everysec", Replicas: 1}, []string{"everysec"}},
		{redis.Durability{AppendOnly: "yes", AppendFsync: "everysec", Replicas: 1, WaitReplicas: 1}, nil},
		{redis.Durability{AppendOnly: "yes", AppendFsync: "everysec", Replicas: 1, WaitReplicas: 2}, []string{"1 connected replicas"}},
		{redis.Durability{AppendOnly: "yes", AppendFsync: "everysec", Replicas: -1, WaitReplicas: 2}, nil},
		{redis.Durability{AppendOnly: "yes", AppendFsync: "no", WaitReplicas: 1, Replicas: 1}, []string{`"no"`}},
		{redis.Durability{AppendOnly: "no", AppendFsync: "always", Replicas: 3, WaitReplicas: 1}, []string{"appendonly is off"}},
		{redis.Durability{ConfigDenied: true, Replicas: -1}, []string{"appendonly setting"}},
		{redis.Durability{ConfigDenied: true, AppendOnly: "yes", Replicas: -1}, []string{"appendfsync setting"}},
		{redis.Durability{ConfigDenied: true, AppendOnly: "yes", Replicas: 1, WaitReplicas: 1}, nil},
	} {
		got := tc.d.Warnings()
		ok := len(got) == len(tc.want)
		for i := 0; ok && i < len(got); i++ {
			ok = strings.Contains(got[i], tc.want[i])
		}
		if !ok || tc.d.Durable() != (len(tc.want) == 0) {
			t.Errorf("%+v: warnings %q (durable %v), want %q", tc.d, got, tc.d.Durable(), tc.want)
		}
	}
}

// TestMessageKeyLayout checks the stored-message and lease keys directly
// in Redis: no expiry on a message or its indexes, scores in unix ms, all
// keys gone with the last acknowledgement; a lease key expires with its
// ttl.
func TestMessageKeyLayout(t *testing.T) {
	addr := storetest.StartRedis(t)
	prefix := prefixFor(t)
	s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw := goredis.NewClient(&goredis.Options{Addr: addr})
	defer raw.Close()
	ctx := t.Context()
	now := time.Now()
	m := storetest.MessageFixture("c1;tag;1", "sip:lay@example.com", now, now.Add(time.Hour), "d1", "d2")
	if _, err := s.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	arrival, expiry, byAOR, key := redis.MessageKeys(prefix, m.AOR, m.ID)
	for _, k := range []string{arrival, expiry, byAOR, key} {
		if ttl, err := raw.PTTL(ctx, k).Result(); err != nil || ttl != -1 {
			t.Errorf("PTTL %q = %s, %v; want no expiry (-1)", k, ttl, err)
		}
	}
	f, err := raw.HGetAll(ctx, key).Result()
	if err != nil || f["aor"] != m.AOR || f["sender"] != m.Sender || f["p:d1"] != "1" || f["p:d2"] != "2" ||
		f["npending"] != "2" || f["exp"] == "" || f["data"] == "" {
		t.Errorf("message fields %q, %v", f, err)
	}
	for _, z := range []struct {
		key  string
		want int64
	}{{arrival, m.Received.UnixMilli()}, {byAOR, m.Received.UnixMilli()},
		{expiry, m.Expires.Add(time.Millisecond - time.Nanosecond).UnixMilli()}} { // expiries round up
		if score, err := raw.ZScore(ctx, z.key, m.ID).Result(); err != nil || int64(score) != z.want {
			t.Errorf("score in %q = %v, %v; want %d", z.key, score, err, z.want)
		}
	}
	for _, inst := range []string{"d1", "d2"} {
		if _, err := s.Acknowledge(ctx, m.ID, inst); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{arrival, expiry, byAOR, key} {
		if n, err := raw.Exists(ctx, k).Result(); err != nil || n != 0 {
			t.Errorf("%q exists (%d, %v) after the last acknowledgement, want gone", k, n, err)
		}
	}
	if _, err := s.Lease(ctx, "deliver", "node-1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	lk := redis.LeaseKey(prefix, "deliver")
	if v, err := raw.Get(ctx, lk).Result(); err != nil || v != "node-1" {
		t.Errorf("lease value %q, %v; want node-1", v, err)
	}
	if ttl, err := raw.PTTL(ctx, lk).Result(); err != nil || ttl <= 0 || ttl > 10*time.Second {
		t.Errorf("lease PTTL %s, %v; want up to 10s", ttl, err)
	}
}
