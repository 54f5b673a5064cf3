package redis_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/redis"
	"github.com/sipwake/sipwake/store/storetest"
)

// gateHook holds the first pipeline of binding writes until released, and
// records the size of every pipeline.
type gateHook struct {
	held    chan struct{} // closed when the first pipeline is held
	release chan struct{}
	once    sync.Once

	mu    sync.Mutex
	sizes []int
}

func (g *gateHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }

// ProcessHook: a batch of one goes out as a plain command.
func (g *gateHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		g.trip([]goredis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (g *gateHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		g.trip(cmds)
		return next(ctx, cmds)
	}
}

func (g *gateHook) trip(cmds []goredis.Cmder) {
	n := 0
	for _, c := range cmds {
		if c.Name() == "evalsha" || c.Name() == "eval" {
			n++
		}
	}
	if n == 0 {
		return
	}
	g.mu.Lock()
	g.sizes = append(g.sizes, n)
	g.mu.Unlock()
	g.once.Do(func() {
		close(g.held)
		<-g.release
	})
}

// openPipelineStore opens a store on a fresh redis-server, with a context
// that bounds the test; both end with it.
func openPipelineStore(t *testing.T) (*redis.Store, context.Context) {
	t.Helper()
	addr := storetest.StartRedis(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	s, err := redis.Open(ctx, redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefixFor(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, ctx
}

// TestBindingWritesDrainInOneTrip: binding writes that queue up while a
// round trip is out (a machine short of CPU, a slow Redis) leave together
// in the next one. With go-redis's default cap of 128 KiB per batch, 1,000
// writes took 15 round trips of 68, one after the other.
func TestBindingWritesDrainInOneTrip(t *testing.T) {
	s, ctx := openPipelineStore(t)
	s.PipelineAlone()
	// The first write after a server start loads the script (NOSCRIPT,
	// then EVAL): done before the count.
	warm := storetest.Fixture("sip:warm@example.com", "w", "tok-w", time.Hour)
	if _, err := s.PutBinding(ctx, warm, 0); err != nil {
		t.Fatal(err)
	}
	gate := &gateHook{held: make(chan struct{}), release: make(chan struct{})}
	s.AddHook(gate)
	released := false
	defer func() {
		if !released {
			close(gate.release)
		}
	}()

	const backlog = 1000
	var wg sync.WaitGroup
	errs := make(chan error, backlog+1)
	var started atomic.Int32
	put := func(i int) {
		defer wg.Done()
		if i > 0 {
			started.Add(1)
		}
		b := storetest.Fixture(fmt.Sprintf("sip:backlog%d@example.com", i), fmt.Sprintf("dev%d", i), fmt.Sprintf("tok%d", i), time.Hour)
		if _, err := s.PutBinding(ctx, b, 0); err != nil {
			errs <- err
		}
	}
	wg.Add(1)
	go put(0)
	select {
	case <-gate.held:
	case <-ctx.Done():
		t.Fatal("the first write never reached the pipeline")
	}
	wg.Add(backlog)
	for i := 1; i <= backlog; i++ {
		go put(i)
	}
	for started.Load() < backlog {
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d writes started", started.Load(), backlog)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// From the call to the queue is a few microseconds of CPU.
	time.Sleep(time.Second)
	close(gate.release)
	released = true
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	gate.mu.Lock()
	defer gate.mu.Unlock()
	// One pipeline; two if a straggler missed it (a slow machine).
	if rest := gate.sizes[1:]; len(rest) == 0 || len(rest) > 2 {
		t.Errorf("the backlog of %d writes left in pipelines of %v, want one", backlog, rest)
	}
}

// TestBindingWriteGarbage: a binding write leaves a few KiB of garbage,
// not the pipeline's whole queue. go-redis recycles a batch's queue only
// up to 1,000 entries; with a larger MaxBatchSize every flush allocated a
// fresh 32 KiB queue, which at low concurrency (one write a flush) was 40 %
// of all the bytes a registration allocated (BenchmarkRegisterPassthrough
// Parallel: 91 KiB a registration against 64).
func TestBindingWriteGarbage(t *testing.T) {
	s, ctx := openPipelineStore(t)
	s.PipelineAlone() // a lone write skips the pipeline otherwise
	const n = 400
	bindings := make([]store.Binding, 2*n)
	for i := range bindings {
		bindings[i] = storetest.Fixture(fmt.Sprintf("sip:g%d@example.com", i), fmt.Sprintf("dev%d", i), fmt.Sprintf("tok%d", i), time.Hour)
	}
	for _, b := range bindings[:n] { // script loaded, pools filled
		if _, err := s.PutBinding(ctx, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, b := range bindings[n:] {
		if _, err := s.PutBinding(ctx, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated per binding write", per)
	if per > 16<<10 {
		t.Errorf("%d bytes allocated per binding write, want at most 16 KiB", per)
	}
}

// callerKey marks the context of a binding write, to tell the commands
// sent on the caller's context from those the pipeliner sends on its own.
type callerKey struct{}

// pathHook counts binding writes by the way they reached Redis: on the
// caller's own context (straight from the client), or otherwise (the
// pipeliner's batches, on its context).
type pathHook struct {
	direct, pipelined atomic.Int32
	hold              chan struct{} // when set, a direct write waits on it
}

func (h *pathHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *pathHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if cmd.Name() == "evalsha" || cmd.Name() == "eval" {
			if ctx.Value(callerKey{}) != nil {
				h.direct.Add(1)
				if h.hold != nil {
					select {
					case <-h.hold:
					case <-ctx.Done():
					}
				}
			} else {
				h.pipelined.Add(1)
			}
		}
		return next(ctx, cmd)
	}
}

func (h *pathHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "evalsha" || c.Name() == "eval" {
				h.pipelined.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// TestLoneBindingWriteSkipsPipeline: a binding write with few beside it
// goes straight to Redis, one round trip on the caller's goroutine; beyond
// DirectPuts at once, writes share the pipeline.
func TestLoneBindingWriteSkipsPipeline(t *testing.T) {
	s, ctx := openPipelineStore(t)
	h := &pathHook{}
	s.AddHook(h)
	wctx := context.WithValue(ctx, callerKey{}, true)
	put := func(i int) error {
		b := storetest.Fixture(fmt.Sprintf("sip:lone%d@example.com", i), fmt.Sprintf("dev%d", i), fmt.Sprintf("tok%d", i), time.Hour)
		_, err := s.PutBinding(wctx, b, 0)
		return err
	}
	const lone = 20
	for i := range lone {
		if err := put(i); err != nil {
			t.Fatal(err)
		}
	}
	// The first write loads the script: EVALSHA, then EVAL.
	if d, p := h.direct.Load(), h.pipelined.Load(); d < lone || p != 0 {
		t.Fatalf("%d writes one after the other: %d direct, %d pipelined; want all direct", lone, d, p)
	}

	// As many writes held on their way as go straight: the writes beside
	// them take the pipeline.
	h.direct.Store(0)
	h.hold = make(chan struct{})
	first := make(chan error, redis.DirectPuts)
	for i := range redis.DirectPuts {
		go func() { first <- put(lone + i) }()
	}
	for h.direct.Load() < redis.DirectPuts {
		if ctx.Err() != nil {
			t.Fatalf("%d of %d writes reached Redis", h.direct.Load(), redis.DirectPuts)
		}
		time.Sleep(time.Millisecond)
	}
	const beside = 30
	var wg sync.WaitGroup
	errs := make(chan error, beside)
	for i := range beside {
		wg.Go(func() {
			if err := put(lone + redis.DirectPuts + i); err != nil {
				errs <- err
			}
		})
	}
	// The writes beside end while the first ones are held; should one of
	// them be held too, it is let go after 2 s and the count below fails.
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(2 * time.Second):
	}
	close(h.hold)
	wg.Wait()
	for range redis.DirectPuts {
		if err := <-first; err != nil {
			t.Fatal(err)
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if d, p := h.direct.Load(), h.pipelined.Load(); d != redis.DirectPuts || p != beside {
		t.Fatalf("%d writes beside %d held ones: %d direct, %d pipelined; want %d and %d",
			beside, redis.DirectPuts, d, p, redis.DirectPuts, beside)
	}
}
