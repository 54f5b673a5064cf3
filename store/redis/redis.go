package redis

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/store"
)

// SubscriberBuffer is how many events a subscriber may fall behind before
// further events to it are dropped (and counted in
// sipwake_store_events_dropped_total{backend="redis"}).
const SubscriberBuffer = 256

// Store is the Redis-backed store.Store shared by several nodes. It is safe
// for concurrent use.
type Store struct {
	client goredis.UniversalClient
	// puts runs the binding writes, the bulk of the traffic (one per
	// REGISTER): through go-redis' automatic pipeliner when the client
	// has one, so that concurrent registrations share a round trip and a
	// pair of syscalls instead of one each; the client otherwise.
	puts    goredis.Scripter
	closeAP func() error
	// putting counts the binding writes under way. Up to directPuts at
	// once go straight to the client (unless pipelineAlone): the
	// pipeliner hands a command from the caller to its flusher and, when
	// it is alone, on to a goroutine of its own, wake-ups that cost 10 to
	// 14 % of sipwake's CPU at 1,000 REGISTER/s (make bench-sipp), where a
	// few writes overlap. Beyond that, under load, they share the
	// pipeline, whose batches drain a backlog in one round trip.
	putting       atomic.Int32
	pipelineAlone bool // tests: every write through the pipeliner
	keys          keys
	node          string
	metrics       *metrics
	// oneTrip: every key lives on one server (not a Cluster client), so
	// each write is one script that also maintains the token index and
	// publishes the events (see scripts.go).
	oneTrip bool
	// waitReplicas and waitTimeout: PutMessage's WAIT (Options).
	waitReplicas int
	waitTimeout  time.Duration

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
	// mu orders Subscribe's subs.Add against Close's subs.Wait.
	mu   sync.Mutex
	subs sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open connects to Redis and checks it answers PING. An unreachable server
// fails Open within OpenTimeout (or ctx's earlier deadline).
func Open(ctx context.Context, opt Options) (*Store, error) {
	uo, err := universalOptions(opt)
	if err != nil {
		return nil, fmt.Errorf("redis store: open: %w", err)
	}
	m, err := newMetrics(opt.Registerer)
	if err != nil {
		return nil, fmt.Errorf("redis store: open: %w", err)
	}
	client := goredis.NewUniversalClient(uo)
	pctx, cancel := context.WithTimeout(ctx, OpenTimeout)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis store: open: ping %s: %w", strings.Join(opt.Addresses, ","), err)
	}
	_, cluster := client.(*goredis.ClusterClient)
	var puts goredis.Scripter = client
	var closeAP func() error
	if c, ok := client.(interface {
		AutoPipelineWithOptions(*goredis.AutoPipelineOptions) (*goredis.AutoPipeliner, error)
	}); ok {
		if ap, err := c.AutoPipelineWithOptions(autoPipelineOptions()); err == nil {
			puts, closeAP = ap, ap.Close
		}
	}
	return &Store{
		client:       client,
		puts:         puts,
		closeAP:      closeAP,
		keys:         keys{prefix: opt.prefix()},
		node:         opt.NodeID,
		metrics:      m,
		oneTrip:      !cluster,
		waitReplicas: opt.WaitReplicas,
		waitTimeout:  opt.waitTimeout(),
		done:         make(chan struct{}),
	}, nil
}

// directPuts is how many binding writes at once go straight to the
// client, each on a connection of its own; more than that share the
// pipeline.
const directPuts = 4

// autoPipelineOptions configures the pipeline that carries the binding
// writes of every REGISTER: go-redis's blocking defaults, with batches
// allowed to grow when writes queue up.
//
// Batches go out one at a time, each waiting for its replies, and by
// default stop at 128 KiB: 68 binding writes (each carries the binding and
// its events, about 1.9 KiB). When the machine is short of CPU each round
// trip also waits for the flushing goroutine to be scheduled, and 68 writes
// a round trip fell below 5,000 registrations/s (make bench-sipp): 3,000
// REGISTERs waited on the pipeline while Redis used 20 % of a core. With
// the larger cap a backlog leaves in one round trip
// (TestBindingWritesDrainInOneTrip); at low rates batches stay small
// anyway, a lone write being sent at once.
//
// MaxBatchSize stays go-redis's: it does not split a backlog (the byte cap
// did), and go-redis recycles a batch's queue only up to 1,000 entries. A
// cap of 2,000 made every flush allocate a fresh 32 KiB queue, 40 % of the
// bytes a registration allocated (TestBindingWriteGarbage).
func autoPipelineOptions() *goredis.AutoPipelineOptions {
	o := goredis.DefaultBlockingAutoPipelineOptions()
	o.MaxBatchBytes = 4 << 20
	return o
}

// begin checks that the store is open and ctx is live.
func (s *Store) begin(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// fail wraps err with the operation, mapping a closed client.
func fail(what string, err error) error {
	if errors.Is(err, goredis.ErrClosed) {
		err = store.ErrClosed
	}
	return fmt.Errorf("redis store: %s: %w", what, err)
}

// ms is t in Unix milliseconds, rounded down: for "now" and for schedule
// entries (documented to the millisecond).
func ms(t time.Time) int64 { return t.UnixMilli() }

// msUntil is an expiry t in Unix milliseconds, rounded up, so that what
// lives until t is never taken for expired up to a millisecond early.
func msUntil(t time.Time) int64 {
	m := t.UnixMilli()
	if t.After(time.UnixMilli(m)) {
		m++
	}
	return m
}

// afterWriteTimeout bounds the steps that follow a committed script (token
// index, events).
const afterWriteTimeout = 5 * time.Second

// afterWrite returns the context for the steps that complete a change the
// script has made: not cancelled with ctx, but bounded in time.
func afterWrite(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), afterWriteTimeout)
}

// decode reads a binding's JSON; aor and instance are the raw values kept
// beside it (JSON would rewrite invalid UTF-8).
func decode(aor, instance, data string) (store.Binding, error) {
	var b store.Binding
	if err := json.Unmarshal([]byte(data), &b); err != nil {
		return b, fmt.Errorf("corrupt binding %q/%q: %w", aor, instance, err)
	}
	b.AOR, b.Instance = aor, instance
	return b, nil
}

// str returns a script reply element as a string; ok is false for nil.
func str(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

// PutBinding implements store.Bindings.
//
// With a single server or a Sentinel-managed primary it is one round trip:
// one Lua script stores the binding, points its token at it, unlinks the
// replaced binding's old token and publishes the events, atomically.
//
// With a Cluster the script runs on the AOR's slot; the token index
// (another slot) is updated right after, and BindingByToken checks the
// binding it points at, so a lookup between the two steps finds nothing
// rather than something wrong. The events are published last; a failed
// PUBLISH is counted (op "publish") but does not fail the put, which has
// happened.
func (s *Store) PutBinding(ctx context.Context, b store.Binding, max int) (replaced bool, err error) {
	defer func() { s.metrics.Observe(store.OpPutBinding, err) }()
	if err := s.begin(ctx); err != nil {
		return false, fail("put binding", err)
	}
	if b.AOR == "" || b.Instance == "" {
		return false, errors.New("redis store: put binding: aor and instance must not be empty")
	}
	data, err := json.Marshal(b)
	if err != nil {
		return false, fail("put binding", err)
	}
	now := time.Now()
	bkey := s.keys.binding(b.AOR, b.Instance)
	scriptKeys := []string{s.keys.aor(b.AOR), bkey}
	args := []any{ms(now), msUntil(b.Expires), max, b.Instance, b.Token, data, b.AOR, s.keys.bindingPrefix(b.AOR)}
	script := putScript
	if s.oneTrip {
		script = putOneScript
		if b.Token != "" {
			scriptKeys = append(scriptKeys, s.keys.token(b.Token))
		}
		link := "0"
		if b.Token != "" && b.Live(now) {
			link = "1"
		}
		put, err := json.Marshal(s.event(store.EventBindingPut, b.AOR, b.Instance))
		if err != nil {
			return false, fail("put binding", err)
		}
		// The same event with no_messages (omitted above, being false)
		// added before the closing brace: one encoding per registration.
		putNone := string(put[:len(put)-1]) + `,"no_messages":true}`
		head, tail, err := s.deletedEventParts(b.AOR)
		if err != nil {
			return false, fail("put binding", err)
		}
		args = append(args, s.keys.tokenPrefix(), link, s.keys.events(), put, head, tail, s.keys.msgAOR(b.AOR), putNone)
	}
	var run goredis.Scripter = s.puts
	if s.putting.Add(1) <= directPuts && !s.pipelineAlone {
		run = s.client
	}
	res, err := script.Run(ctx, run, scriptKeys, args...).Slice()
	s.putting.Add(-1)
	if err != nil {
		return false, fail("put binding", err)
	}
	if len(res) == 1 && res[0] == "too_many" {
		return false, store.ErrTooManyBindings
	}
	if len(res) != 4 || res[0] != "ok" {
		return false, fail("put binding", fmt.Errorf("unexpected script reply %v", res))
	}
	// The script reports the replaced binding, not its data: no caller
	// needs it, and decoding it cost more than the rest of the reply.
	replaced = res[1] == int64(1)
	if s.oneTrip {
		return replaced, nil
	}
	// The binding is stored: finish the token index and the events even if
	// the caller gives up now.
	ctx, cancel := afterWrite(ctx)
	defer cancel()
	if err := s.linkToken(ctx, b, bkey, now); err != nil {
		return replaced, fail("put binding", err)
	}
	if prevTok, ok := str(res[2]); ok && prevTok != "" && prevTok != b.Token {
		if err := unlinkTokenScript.Run(ctx, s.client, []string{s.keys.token(prevTok)}, bkey).Err(); err != nil {
			return replaced, fail("put binding", err)
		}
	}
	var events []store.Event
	dropped, _ := res[3].([]any)
	for _, d := range dropped {
		if inst, ok := str(d); ok {
			events = append(events, s.event(store.EventBindingDeleted, b.AOR, inst))
		}
	}
	events = append(events, s.event(store.EventBindingPut, b.AOR, b.Instance))
	s.publish(ctx, events...)
	return replaced, nil
}

// deletedEventParts returns the JSON of an EventBindingDeleted of aor by
// this node before and after the instance, for the one-trip scripts, which
// insert the instance themselves (cjson.encode). Decoded, the result equals
// json.Marshal of the store.Event.
func (s *Store) deletedEventParts(aor string) (head, tail string, err error) {
	a, err := json.Marshal(aor)
	if err != nil {
		return "", "", err
	}
	n, err := json.Marshal(s.node)
	if err != nil {
		return "", "", err
	}
	head = `{"kind":"` + string(store.EventBindingDeleted) + `","aor":` + string(a) + `,"instance":`
	tail = `,"node":` + string(n) + `}`
	return head, tail, nil
}

// linkToken points b's token at its binding key until the binding expires.
func (s *Store) linkToken(ctx context.Context, b store.Binding, bkey string, now time.Time) error {
	if b.Token == "" || !b.Live(now) {
		return nil
	}
	return s.client.SetArgs(ctx, s.keys.token(b.Token), bkey, goredis.SetArgs{ExpireAt: b.Expires}).Err()
}

func (s *Store) event(kind store.EventKind, aor, instance string) store.Event {
	return store.Event{Kind: kind, AOR: aor, Instance: instance, Node: s.node}
}

// publish sends events on the events channel in order, in one pipeline.
// Failures are counted, not returned: the change they announce is made.
func (s *Store) publish(ctx context.Context, events ...store.Event) {
	if len(events) == 0 {
		return
	}
	_, err := s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, ev := range events {
			payload, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			p.Publish(ctx, s.keys.events(), payload)
		}
		return nil
	})
	s.metrics.Observe(store.OpPublish, err)
}

// DeleteBinding implements store.Bindings. With a single server or a
// Sentinel-managed primary it is one round trip (the script also unlinks
// the token and publishes the event); with a Cluster the token is unlinked
// and the event published after the script.
func (s *Store) DeleteBinding(ctx context.Context, aor, instance string) (err error) {
	defer func() { s.metrics.Observe(store.OpDeleteBinding, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("delete binding", err)
	}
	bkey := s.keys.binding(aor, instance)
	scriptKeys := []string{s.keys.aor(aor), bkey}
	args := []any{ms(time.Now()), instance}
	script := deleteScript
	if s.oneTrip {
		ev, err := json.Marshal(s.event(store.EventBindingDeleted, aor, instance))
		if err != nil {
			return fail("delete binding", err)
		}
		script = deleteOneScript
		args = append(args, s.keys.tokenPrefix(), s.keys.events(), ev)
	}
	res, err := script.Run(ctx, s.client, scriptKeys, args...).Slice()
	if errors.Is(err, goredis.Nil) {
		return store.ErrNotFound
	}
	if err != nil {
		return fail("delete binding", err)
	}
	if s.oneTrip {
		return nil
	}
	ctx, cancel := afterWrite(ctx)
	defer cancel()
	if len(res) == 1 {
		if tok, _ := str(res[0]); tok != "" {
			if err := unlinkTokenScript.Run(ctx, s.client, []string{s.keys.token(tok)}, bkey).Err(); err != nil {
				return fail("delete binding", err)
			}
		}
	}
	s.publish(ctx, s.event(store.EventBindingDeleted, aor, instance))
	return nil
}

// DeleteAOR implements store.Bindings. With a single server or a
// Sentinel-managed primary it is one round trip (the script also unlinks
// the tokens and publishes the events); with a Cluster the tokens are
// unlinked one by one and the events published after the script.
func (s *Store) DeleteAOR(ctx context.Context, aor string) (n int, err error) {
	defer func() { s.metrics.Observe(store.OpDeleteAOR, err) }()
	if err := s.begin(ctx); err != nil {
		return 0, fail("delete aor", err)
	}
	args := []any{ms(time.Now()), s.keys.bindingPrefix(aor)}
	script := deleteAORScript
	if s.oneTrip {
		head, tail, err := s.deletedEventParts(aor)
		if err != nil {
			return 0, fail("delete aor", err)
		}
		script = deleteAOROneScript
		args = append(args, s.keys.tokenPrefix(), s.keys.events(), head, tail)
	}
	res, err := script.Run(ctx, s.client, []string{s.keys.aor(aor)}, args...).Slice()
	if err != nil {
		return 0, fail("delete aor", err)
	}
	if s.oneTrip {
		return len(res) / 2, nil
	}
	ctx, cancel := afterWrite(ctx)
	defer cancel()
	var events []store.Event
	for i := 0; i+1 < len(res); i += 2 {
		inst, _ := str(res[i])
		tok, _ := str(res[i+1])
		if tok != "" {
			bkey := s.keys.binding(aor, inst)
			if err := unlinkTokenScript.Run(ctx, s.client, []string{s.keys.token(tok)}, bkey).Err(); err != nil {
				return 0, fail("delete aor", err)
			}
		}
		events = append(events, s.event(store.EventBindingDeleted, aor, inst))
	}
	s.publish(ctx, events...)
	return len(events), nil
}

// aorBindings returns the live bindings of aor, unsorted.
func (s *Store) aorBindings(ctx context.Context, aor string, now time.Time) ([]store.Binding, error) {
	res, err := bindingsScript.Run(ctx, s.client, []string{s.keys.aor(aor)}, ms(now), s.keys.bindingPrefix(aor)).Slice()
	if err != nil {
		return nil, err
	}
	return decodeBindings(aor, res, now)
}

// decodeBindings reads bindingsScript's reply: the live bindings of aor.
func decodeBindings(aor string, res []any, now time.Time) ([]store.Binding, error) {
	out := make([]store.Binding, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		inst, _ := str(res[i])
		data, _ := str(res[i+1])
		b, err := decode(aor, inst, data)
		if err != nil {
			return nil, err
		}
		if b.Live(now) {
			out = append(out, b)
		}
	}
	return out, nil
}

// Bindings implements store.Bindings.
func (s *Store) Bindings(ctx context.Context, aor string) (out []store.Binding, err error) {
	defer func() { s.metrics.Observe(store.OpBindings, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("bindings", err)
	}
	out, err = s.aorBindings(ctx, aor, time.Now())
	if err != nil {
		return nil, fail("bindings", err)
	}
	store.SortOldestFirst(out)
	return out, nil
}

// BindingByToken implements store.Bindings: it follows the token index and
// accepts the binding only if it still carries the token and is live.
func (s *Store) BindingByToken(ctx context.Context, token string) (b store.Binding, err error) {
	defer func() { s.metrics.Observe(store.OpBindingByToken, err) }()
	if err := s.begin(ctx); err != nil {
		return b, fail("binding by token", err)
	}
	if token == "" {
		return b, store.ErrNotFound
	}
	bkey, err := s.client.Get(ctx, s.keys.token(token)).Result()
	if errors.Is(err, goredis.Nil) {
		return b, store.ErrNotFound
	}
	if err != nil {
		return b, fail("binding by token", err)
	}
	f, err := s.client.HMGet(ctx, bkey, "data", "token", "aor", "instance").Result()
	if err != nil {
		return b, fail("binding by token", err)
	}
	data, ok := str(f[0])
	if !ok {
		return b, store.ErrNotFound
	}
	tok, _ := str(f[1])
	aor, _ := str(f[2])
	inst, _ := str(f[3])
	b, err = decode(aor, inst, data)
	if err != nil {
		return store.Binding{}, fail("binding by token", err)
	}
	if tok != token || !b.Live(time.Now()) {
		return store.Binding{}, store.ErrNotFound
	}
	return b, nil
}

// ListBindings implements store.Bindings. Without an AOR it SCANs every
// primary for AOR sets (an admin operation: O(keys) on the server), sorts
// the AORs and reads them in order, listBatch AORs per pipeline, until the
// limit is reached.
func (s *Store) ListBindings(ctx context.Context, opt store.ListOptions) (out []store.Binding, err error) {
	defer func() { s.metrics.Observe(store.OpListBindings, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("list bindings", err)
	}
	aors := []string{opt.AOR}
	if opt.AOR == "" {
		if aors, err = s.scanAORs(ctx); err != nil {
			return nil, fail("list bindings", err)
		}
	}
	now := time.Now()
	out = []store.Binding{}
	for start := 0; start < len(aors); start += listBatch {
		got, err := s.batchBindings(ctx, aors[start:min(start+listBatch, len(aors))], now)
		if err != nil {
			return nil, fail("list bindings", err)
		}
		for _, bs := range got {
			sort.Slice(bs, func(i, j int) bool { return bs[i].Instance < bs[j].Instance })
			out = append(out, bs...)
			if opt.Limit > 0 && len(out) >= opt.Limit {
				return out[:opt.Limit], nil
			}
		}
	}
	return out, nil
}

// CountBindings implements store.Bindings: like ListBindings without an
// AOR, but the script returns only each binding's provider, so that
// nothing is decoded here (decoding every binding cost the node about
// 17 µs per binding on every refresh of the gauge).
func (s *Store) CountBindings(ctx context.Context) (counts map[string]int, err error) {
	defer func() { s.metrics.Observe(store.OpCountBindings, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("count bindings", err)
	}
	aors, err := s.scanAORs(ctx)
	if err != nil {
		return nil, fail("count bindings", err)
	}
	now := ms(time.Now())
	counts = map[string]int{}
	for start := 0; start < len(aors); start += listBatch {
		batch := aors[start:min(start+listBatch, len(aors))]
		cmds, err := s.evalBatch(ctx, countBindingsScript, batch, func(aor string) []any {
			return []any{now, s.keys.bindingPrefix(aor)}
		})
		if err != nil {
			return nil, fail("count bindings", err)
		}
		for _, c := range cmds {
			res, err := c.Slice()
			if err != nil {
				return nil, fail("count bindings", err)
			}
			for _, v := range res {
				p, _ := str(v)
				counts[p]++
			}
		}
	}
	return counts, nil
}

// evalBatch runs script once per AOR (KEYS[1] its AOR set, ARGV from
// args) in one pipeline. Where a server does not have the script cached
// yet (or it was flushed), it loads it (on every primary of a Cluster) and
// sends the batch again.
func (s *Store) evalBatch(ctx context.Context, script *goredis.Script, aors []string, args func(aor string) []any) ([]*goredis.Cmd, error) {
	run := func() []*goredis.Cmd {
		cmds := make([]*goredis.Cmd, len(aors))
		// Errors are read per command by the caller.
		_, _ = s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, aor := range aors {
				cmds[i] = script.EvalSha(ctx, p, []string{s.keys.aor(aor)}, args(aor)...)
			}
			return nil
		})
		return cmds
	}
	cmds := run()
	for _, c := range cmds {
		if err := c.Err(); err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
			if err := script.Load(ctx, s.client).Err(); err != nil {
				return nil, err
			}
			return run(), nil
		}
	}
	return cmds, nil
}

// listBatch is how many AORs ListBindings reads in one pipeline: one round
// trip per AOR made the bindings gauge of a node with 10,000 devices take
// over a second on every refresh.
const listBatch = 256

// batchBindings reads the live bindings of each AOR, in one pipeline.
func (s *Store) batchBindings(ctx context.Context, aors []string, now time.Time) ([][]store.Binding, error) {
	out := make([][]store.Binding, len(aors))
	cmds, err := s.evalBatch(ctx, bindingsScript, aors, func(aor string) []any {
		return []any{ms(now), s.keys.bindingPrefix(aor)}
	})
	if err != nil {
		return nil, err
	}
	for i, aor := range aors {
		res, err := cmds[i].Slice()
		if err != nil {
			return nil, err
		}
		if out[i], err = decodeBindings(aor, res, now); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scanAORs returns the sorted, distinct AORs that have an AOR set.
func (s *Store) scanAORs(ctx context.Context) ([]string, error) {
	var mu sync.Mutex
	seen := map[string]struct{}{}
	scan := func(ctx context.Context, c goredis.UniversalClient) error {
		iter := c.Scan(ctx, 0, s.keys.aorPattern(), 500).Iterator()
		for iter.Next(ctx) {
			if aor, ok := s.keys.aorFromKey(iter.Val()); ok {
				mu.Lock()
				seen[aor] = struct{}{}
				mu.Unlock()
			}
		}
		return iter.Err()
	}
	var err error
	if cc, ok := s.client.(*goredis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, s.client)
	}
	if err != nil {
		return nil, err
	}
	aors := make([]string, 0, len(seen))
	for aor := range seen {
		aors = append(aors, aor)
	}
	sort.Strings(aors)
	return aors, nil
}

// Subscribe implements store.Events with a Redis SUBSCRIBE on the events
// channel; it returns once the subscription is active. Each subscriber has
// a buffer of SubscriberBuffer events; when it is full, further events are
// dropped and counted, so a slow subscriber never stalls the connection.
// Events published while the subscription's connection is being
// re-established (go-redis reconnects by itself) are lost: Redis pub/sub
// is at-most-once. Once it is re-established the subscriber gets
// store.EventResync, so that it can re-read what it may have missed.
func (s *Store) Subscribe(ctx context.Context) (_ <-chan store.Event, err error) {
	defer func() { s.metrics.Observe(store.OpSubscribe, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("subscribe", err)
	}
	ps := s.client.Subscribe(ctx, s.keys.events())
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fail("subscribe", err)
	}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		_ = ps.Close()
		return nil, fail("subscribe", store.ErrClosed)
	}
	s.subs.Add(1)
	s.mu.Unlock()
	// With subscriptions: the first was read above, each later one
	// means the connection was re-established.
	in := ps.ChannelWithSubscriptions(goredis.WithChannelSize(SubscriberBuffer))
	out := make(chan store.Event, SubscriberBuffer)
	dropped := s.metrics.Dropped
	go func() {
		defer s.subs.Done()
		defer close(out)
		defer ps.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.done:
				return
			case v, ok := <-in:
				if !ok {
					return
				}
				var ev store.Event
				switch m := v.(type) {
				case *goredis.Subscription:
					if m.Kind != "subscribe" {
						continue
					}
					ev.Kind = store.EventResync
				case *goredis.Message:
					if err := json.Unmarshal([]byte(m.Payload), &ev); err != nil {
						s.metrics.Observe(store.OpSubscribe, err)
						continue
					}
				default:
					continue
				}
				select {
				case out <- ev:
				default:
					dropped.Inc()
				}
			}
		}
	}()
	return out, nil
}

// secretTries bounds Secret's attempts when the key vanishes between its
// SET NX and its GET (deleted by hand, or a Cluster reshard reordering).
const secretTries = 3

// Secret implements store.Store with the string key <prefix>secret:<name>,
// never expired: SET NX of n fresh random bytes, then GET, pipelined in one
// round trip. Whoever's SET NX lands first defines the secret; every caller
// returns what GET reads.
func (s *Store) Secret(ctx context.Context, name string, n int) (secret []byte, err error) {
	defer func() { s.metrics.Observe(store.OpSecret, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("secret", err)
	}
	if name == "" {
		return nil, errors.New("redis store: secret: name must not be empty")
	}
	if n <= 0 {
		return nil, fmt.Errorf("redis store: secret %q: size %d must be positive", name, n)
	}
	fresh := make([]byte, n)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fail("secret", err)
	}
	key := s.keys.secret(name)
	for range secretTries {
		var get *goredis.StringCmd
		_, err := s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			p.SetNX(ctx, key, fresh, 0)
			get = p.Get(ctx, key)
			return nil
		})
		if err != nil && !errors.Is(err, goredis.Nil) {
			return nil, fail("secret", err)
		}
		secret, err = get.Bytes()
		if errors.Is(err, goredis.Nil) {
			continue
		}
		if err != nil {
			return nil, fail("secret", err)
		}
		return secret, nil
	}
	return nil, fail("secret", fmt.Errorf("secret %q vanished after SET NX %d times", name, secretTries))
}

// Ping implements store.Store with PING.
func (s *Store) Ping(ctx context.Context) (err error) {
	defer func() { s.metrics.Observe(store.OpPing, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("ping", err)
	}
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fail("ping", err)
	}
	return nil
}

// Close ends every subscription and closes the client.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed.Store(true)
		close(s.done)
		s.mu.Unlock()
		s.subs.Wait()
		if s.closeAP != nil {
			_ = s.closeAP()
		}
		if err := s.client.Close(); err != nil {
			s.closeErr = fmt.Errorf("redis store: close: %w", err)
			s.metrics.Observe(store.OpClose, err)
		}
	})
	return s.closeErr
}
