package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/redis"
	"github.com/sipwake/sipwake/store/storetest"
)

// tripRecorder is a go-redis hook that records each round trip the client
// makes: a command, or a pipeline of commands, by lower-case names.
// Connection set-up (HELLO, CLIENT SETNAME, ...) and Cluster topology
// refreshes are left out: they are not per-operation costs.
type tripRecorder struct {
	mu    sync.Mutex
	trips [][]string
}

var setupCommands = map[string]bool{"hello": true, "auth": true, "client": true, "select": true, "cluster": true, "readonly": true}

func (r *tripRecorder) record(cmds []goredis.Cmder) {
	var names []string
	for _, c := range cmds {
		if n := strings.ToLower(c.Name()); !setupCommands[n] {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trips = append(r.trips, names)
}

// take returns the trips recorded since the last take.
func (r *tripRecorder) take() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.trips
	r.trips = nil
	return t
}

func (r *tripRecorder) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (r *tripRecorder) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		r.record([]goredis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (r *tripRecorder) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		r.record(cmds)
		return next(ctx, cmds)
	}
}

// TestWriteRoundTrips counts the round trips of each write. With a single
// server (as with Sentinel: a plain client) every write is one EVALSHA;
// with a Cluster the token index and the events take further trips.
func TestWriteRoundTrips(t *testing.T) {
	single := storetest.StartRedis(t)
	cluster := startCluster(t)
	evalsha := []string{"evalsha"}
	for _, tc := range []struct {
		name    string
		addr    string
		cluster bool
		// want lists, per step below, the round trips expected.
		want [][][]string
	}{
		{"single", single, false, [][][]string{
			{evalsha}, {evalsha}, {evalsha}, {evalsha}, {evalsha}, {evalsha}, {{"set", "get"}},
		}},
		{"cluster", cluster, true, [][][]string{
			{evalsha, {"set"}, {"publish"}},
			{evalsha, {"set"}, evalsha, {"publish"}},
			{evalsha, {"set"}, {"publish", "publish"}},
			{evalsha, evalsha, {"publish"}},
			{evalsha, evalsha, {"publish"}},
			{evalsha},
			{{"set", "get"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One connection and no idle filler: no dial in the window.
			s, err := redis.Open(t.Context(), redis.Options{
				Addresses: []string{tc.addr}, Cluster: tc.cluster, NodeID: "n",
				KeyPrefix: prefixFor(t), PoolSize: 1, MinIdleConns: -1,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.OneTrip() == tc.cluster {
				t.Fatalf("OneTrip() = %v with cluster %v", s.OneTrip(), tc.cluster)
			}
			ctx := t.Context()
			// Warm up: the first call of each script after a server start
			// is EVALSHA, NOSCRIPT, then EVAL.
			warm := storetest.Fixture("sip:warm@example.com", "w", "tok-w", time.Hour)
			if _, err := s.PutBinding(ctx, warm, 0); err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteBinding(ctx, warm.AOR, warm.Instance); err != nil {
				t.Fatal(err)
			}
			if _, err := s.DeleteAOR(ctx, warm.AOR); err != nil {
				t.Fatal(err)
			}
			if _, err := s.PutBinding(ctx, warm, 0); err != nil { // unlink script (cluster)
				t.Fatal(err)
			}
			warm.Token = "tok-w2"
			if _, err := s.PutBinding(ctx, warm, 0); err != nil {
				t.Fatal(err)
			}
			rec := &tripRecorder{}
			s.AddHook(rec)

			const aor = "sip:trips@example.com"
			steps := []struct {
				name string
				do   func() error
			}{
				{"put new instance", func() error {
					_, err := s.PutBinding(ctx, storetest.Fixture(aor, "a", "tok-a", time.Hour), 5)
					return err
				}},
				{"re-register with a new token", func() error {
					replaced, err := s.PutBinding(ctx, storetest.Fixture(aor, "a", "tok-a2", time.Hour), 5)
					if err == nil && !replaced {
						err = errors.New("nothing replaced")
					}
					return err
				}},
				{"same token, other instance: drops a", func() error {
					_, err := s.PutBinding(ctx, storetest.Fixture(aor, "b", "tok-a2", time.Hour), 5)
					return err
				}},
				{"delete binding", func() error { return s.DeleteBinding(ctx, aor, "b") }},
				{"delete aor", func() error {
					if _, err := s.PutBinding(ctx, storetest.Fixture(aor, "c", "tok-c", time.Hour), 5); err != nil {
						return err
					}
					rec.take() // count the delete only
					n, err := s.DeleteAOR(ctx, aor)
					if err == nil && n != 1 {
						err = errors.New("wrong count")
					}
					return err
				}},
				{"delete absent binding", func() error {
					if err := s.DeleteBinding(ctx, aor, "zz"); !errors.Is(err, store.ErrNotFound) {
						return err
					}
					return nil
				}},
				{"secret", func() error {
					_, err := s.Secret(ctx, "trips", 32)
					return err
				}},
			}
			for i, step := range steps {
				rec.take()
				if err := step.do(); err != nil {
					t.Fatalf("%s: %v", step.name, err)
				}
				if got := rec.take(); !reflect.DeepEqual(got, tc.want[i]) {
					t.Errorf("%s: round trips %q, want %q", step.name, got, tc.want[i])
				}
			}
			// The writes did what they should.
			for _, tok := range []string{"tok-a", "tok-a2", "tok-c"} {
				if _, err := s.BindingByToken(ctx, tok); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("BindingByToken(%q) after the deletes: %v, want ErrNotFound", tok, err)
				}
			}
		})
	}
}

// TestOneTripTokenIndex checks the token keys the one-trip scripts leave,
// directly in Redis: a replaced binding's old token key is gone, a token
// taken over by another binding is kept, an expired put links nothing.
func TestOneTripTokenIndex(t *testing.T) {
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
	const aor = "sip:idx@example.com"
	tokenKey := func(tok string) string { _, _, k := redis.Keys(prefix, aor, "", tok); return k }
	bindingKey := func(inst string) string { _, k, _ := redis.Keys(prefix, aor, inst, ""); return k }
	check := func(what, tok, want string) {
		t.Helper()
		got, err := raw.Get(ctx, tokenKey(tok)).Result()
		if errors.Is(err, goredis.Nil) {
			got, err = "", nil
		}
		if err != nil || got != want {
			t.Errorf("%s: token key %q = %q, %v; want %q", what, tok, got, err, want)
		}
	}
	b := storetest.Fixture(aor, "a", "t1", time.Hour)
	if _, err := s.PutBinding(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	check("put", "t1", bindingKey("a"))
	if ttl, err := raw.PTTL(ctx, tokenKey("t1")).Result(); err != nil || ttl <= 0 || ttl > time.Hour {
		t.Errorf("token key TTL %s, %v; want about an hour", ttl, err)
	}
	b.Token = "t2"
	if _, err := s.PutBinding(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	check("re-register: old token", "t1", "")
	check("re-register: new token", "t2", bindingKey("a"))
	// b takes t2 from a: a is dropped, t2 points at b.
	if _, err := s.PutBinding(ctx, storetest.Fixture(aor, "b", "t2", time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	check("same token", "t2", bindingKey("b"))
	// An expired put links nothing.
	if _, err := s.PutBinding(ctx, storetest.Fixture(aor, "c", "t3", -time.Second), 0); err != nil {
		t.Fatal(err)
	}
	check("expired put", "t3", "")
	// A token someone else holds now is left alone when the old owner goes.
	if err := raw.Set(ctx, tokenKey("t2"), "elsewhere", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBinding(ctx, aor, "b"); err != nil {
		t.Fatal(err)
	}
	check("delete of a binding whose token moved", "t2", "elsewhere")
	if _, err := s.PutBinding(ctx, storetest.Fixture(aor, "d", "t4", time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeleteAOR(ctx, aor); err != nil || n != 1 {
		t.Fatalf("DeleteAOR = %d, %v; want 1", n, err)
	}
	check("delete aor", "t4", "")
}

// TestEventPayloads checks that events the scripts publish themselves
// (one-trip mode: instances JSON-encoded by Redis's cjson) decode to what
// json.Marshal in Go gives (cluster mode), for AORs and instances that are
// not plain ASCII or not UTF-8 at all.
func TestEventPayloads(t *testing.T) {
	single := storetest.StartRedis(t)
	cluster := startCluster(t)
	const (
		aor  = "sip:\xffodd<&>\"\\/@例え.jp"
		inst = "inst\x00\x01\t\"\\/<>&ü\xc3\x28📱"
	)
	// What a subscriber gets from json.Marshal then json.Unmarshal.
	viaJSON := func(s string) string {
		b, _ := json.Marshal(s)
		var out string
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	del := func(inst string) store.Event {
		return store.Event{Kind: store.EventBindingDeleted, AOR: viaJSON(aor), Instance: viaJSON(inst), Node: viaJSON("node\x00ü")}
	}
	put := func(inst string) store.Event {
		ev := del(inst)
		ev.Kind = store.EventBindingPut
		return ev
	}
	for _, tc := range []struct {
		name    string
		addr    string
		cluster bool
	}{{"single", single, false}, {"cluster", cluster, true}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{tc.addr}, Cluster: tc.cluster, NodeID: "node\x00ü", KeyPrefix: prefixFor(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := t.Context()
			ch, err := s.Subscribe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			expect := func(want store.Event) {
				t.Helper()
				// No message is stored: a single server's put script says
				// so, a Cluster's cannot see the message slot.
				want.NoMessages = want.Kind == store.EventBindingPut && !tc.cluster
				select {
				case got := <-ch:
					if got != want {
						t.Errorf("event\n got %#v\nwant %#v", got, want)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("no event, want %#v", want)
				}
			}
			if _, err := s.PutBinding(ctx, storetest.Fixture(aor, inst, "tok", time.Hour), 0); err != nil {
				t.Fatal(err)
			}
			expect(put(inst))
			if _, err := s.PutBinding(ctx, storetest.Fixture(aor, "other", "tok", time.Hour), 0); err != nil {
				t.Fatal(err)
			}
			expect(del(inst))
			expect(put("other"))
			if _, err := s.PutBinding(ctx, storetest.Fixture(aor, inst, "tok2", time.Hour), 0); err != nil {
				t.Fatal(err)
			}
			expect(put(inst))
			if err := s.DeleteBinding(ctx, aor, "other"); err != nil {
				t.Fatal(err)
			}
			expect(del("other"))
			if n, err := s.DeleteAOR(ctx, aor); err != nil || n != 1 {
				t.Fatalf("DeleteAOR = %d, %v", n, err)
			}
			expect(del(inst))
		})
	}
}

// TestNewOpsRoundTrips counts the round trips of the held-call, node,
// ClearPush and Publish operations: one each, except ClearPush, which reads
// the binding before its compare-and-set script (and, with a Cluster,
// publishes its event after it).
func TestNewOpsRoundTrips(t *testing.T) {
	single := storetest.StartRedis(t)
	cluster := startCluster(t)
	evalsha := []string{"evalsha"}
	for _, tc := range []struct {
		name    string
		addr    string
		cluster bool
		// clearPush is what ClearPush sends when it clears.
		clearPush [][]string
	}{
		{"single", single, false, [][]string{{"hget"}, evalsha}},
		{"cluster", cluster, true, [][]string{{"hget"}, evalsha, {"publish"}}},
	} {
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
			h := storetest.HeldFixture("h1", "sip:trips@example.com", "n", now, now.Add(time.Hour))
			b := storetest.Fixture("sip:trips@example.com", "a", "tok-a", time.Hour)
			steps := []struct {
				name string
				do   func() error
				want [][]string
			}{
				{"put held", func() error { return s.PutHeld(ctx, h) }, [][]string{evalsha}},
				{"list held", func() error { _, err := s.ListHeld(ctx, store.HeldFilter{Node: "n"}); return err }, [][]string{evalsha}},
				{"claim held", func() error { _, err := s.ClaimHeld(ctx, h.ID, "n", "m"); return err }, [][]string{evalsha}},
				{"delete held", func() error { return s.DeleteHeld(ctx, h.ID) }, [][]string{evalsha}},
				{"heartbeat", func() error { return s.Heartbeat(ctx, "n", time.Minute) }, [][]string{{"set"}}},
				{"node alive", func() error { _, err := s.NodeAlive(ctx, "n"); return err }, [][]string{{"exists"}}},
				{"publish", func() error { return s.Publish(ctx, store.Event{Kind: store.EventHeldCancelled, Key: "h1"}) }, [][]string{{"publish"}}},
				{"clear push", func() error {
					ok, err := s.ClearPush(ctx, b.AOR, b.Instance, b.Push.Token)
					if err == nil && !ok {
						err = errors.New("nothing cleared")
					}
					return err
				}, tc.clearPush},
			}
			// Warm up: the first call of each script after a server start
			// is EVALSHA, NOSCRIPT, then EVAL.
			if _, err := s.PutBinding(ctx, b, 0); err != nil {
				t.Fatal(err)
			}
			for _, step := range steps {
				if err := step.do(); err != nil {
					t.Fatalf("warm-up %s: %v", step.name, err)
				}
			}
			if _, err := s.PutBinding(ctx, b, 0); err != nil {
				t.Fatal(err)
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

// TestHeldKeyLayout checks the held-call and node keys directly in Redis:
// a record and the index expire a minute after the Deadline, a forgotten
// call leaves no key, a heartbeat key expires with its ttl.
func TestHeldKeyLayout(t *testing.T) {
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
	h := storetest.HeldFixture("c1;z9hG4bK1", "sip:lay@example.com", "node-1", now, now.Add(time.Hour))
	if err := s.PutHeld(ctx, h); err != nil {
		t.Fatal(err)
	}
	index, record := redis.HeldKeys(prefix, h.ID)
	want := time.Hour + store.HeldRetention
	for _, key := range []string{index, record} {
		if ttl, err := raw.PTTL(ctx, key).Result(); err != nil || ttl > want || ttl < want-time.Minute {
			t.Errorf("PTTL %q = %s, %v; want about %s", key, ttl, err, want)
		}
	}
	f, err := raw.HGetAll(ctx, record).Result()
	if err != nil || f["aor"] != h.AOR || f["node"] != h.Node || f["data"] == "" {
		t.Errorf("record fields %q, %v; want aor %q, node %q and data", f, err, h.AOR, h.Node)
	}
	if score, err := raw.ZScore(ctx, index, h.ID).Result(); err != nil || int64(score) != h.Deadline.Add(store.HeldRetention).UnixMilli() {
		t.Errorf("index score %v, %v; want the forget time %d", score, err, h.Deadline.Add(store.HeldRetention).UnixMilli())
	}
	// A call already forgotten replaces the record with nothing.
	gone := h
	gone.Deadline = now.Add(-2 * store.HeldRetention)
	if err := s.PutHeld(ctx, gone); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{index, record} {
		if n, err := raw.Exists(ctx, key).Result(); err != nil || n != 0 {
			t.Errorf("%q exists (%d, %v) after a forgotten put, want gone", key, n, err)
		}
	}
	if err := s.Heartbeat(ctx, "node-1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if ttl, err := raw.PTTL(ctx, redis.NodeKey(prefix, "node-1")).Result(); err != nil || ttl <= 0 || ttl > 10*time.Second {
		t.Errorf("node key PTTL %s, %v; want up to 10s", ttl, err)
	}
}

// TestListBindingsBatched: listing every binding reads the AORs a batch
// per round trip (the bindings gauge lists them all), in AOR order, with
// nothing lost between batches, including an AOR whose script was never
// cached on the server.
func TestListBindingsBatched(t *testing.T) {
	addr := storetest.StartRedis(t)
	s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefixFor(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 600
	var want []string
	for i := range n {
		aor := fmt.Sprintf("sip:u%04d@example.com", i)
		want = append(want, aor)
		if _, err := s.PutBinding(t.Context(), storetest.Fixture(aor, "d", fmt.Sprintf("t%d", i), time.Hour), 0); err != nil {
			t.Fatal(err)
		}
	}
	// A server that forgot the scripts: the first batch meets NOSCRIPT.
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	if err := c.ScriptFlush(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	rec := &tripRecorder{}
	s.AddHook(rec)
	bs, err := s.ListBindings(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range bs {
		got = append(got, b.AOR)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("listed %d bindings, want %d in AOR order", len(got), len(want))
	}
	scripts := 0
	for _, trip := range rec.take() {
		if trip[0] != "scan" {
			scripts++
		}
	}
	// The first batch meets NOSCRIPT: the script is loaded and the batch
	// sent again; then one trip for each of the two other batches.
	if scripts != 5 {
		t.Errorf("%d round trips for %d AORs after a script flush, want 5", scripts, n)
	}
	rec.take()
	if _, err := s.ListBindings(t.Context(), store.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	scripts = 0
	for _, trip := range rec.take() {
		if trip[0] != "scan" {
			scripts++
		}
	}
	if scripts != 3 {
		t.Errorf("cached scripts: %d round trips for %d AORs, want 3", scripts, n)
	}
}
