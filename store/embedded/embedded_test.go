package embedded_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/embedded"
	"github.com/sipwake/sipwake/store/storetest"
)

func open(t *testing.T, opt embedded.Options) *embedded.Store {
	t.Helper()
	if opt.NodeID == "" {
		opt.NodeID = storetest.NodeA
	}
	s, err := embedded.Open(t.Context(), opt)
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

// TestConformance runs the shared suite. The embedded store serves one
// node: bbolt locks its file, so a second "node" cannot open it, and
// events never leave the process. Rather than fake a second node with a
// wrapper that merely relabels events, the suite runs in SingleNode mode:
// the two-node tests (events, racing writers) use one store for both roles,
// which is exactly what the embedded store promises. Each test gets one
// file, so a store it reopens after closing one (a restart) sees the data.
func TestConformance(t *testing.T) {
	var mu sync.Mutex
	paths := map[*testing.T]string{}
	path := func(t *testing.T) string {
		mu.Lock()
		defer mu.Unlock()
		p, ok := paths[t]
		if !ok {
			p = filepath.Join(t.TempDir(), "sipwake.db")
			paths[t] = p
		}
		return p
	}
	storetest.RunWithOptions(t, func(t *testing.T, nodeID string) store.Store {
		return open(t, embedded.Options{
			Path:          path(t),
			NodeID:        nodeID,
			Registerer:    prometheus.NewRegistry(),
			SweepInterval: 200 * time.Millisecond,
		})
	}, storetest.Options{SingleNode: true})
}

func TestRestartKeepsBindings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "dir", "sipwake.db") // directories created
	b := storetest.Fixture("sip:alice@example.com", "dev-1", "tok-1", time.Hour)

	s1, err := embedded.Open(t.Context(), embedded.Options{Path: path, NodeID: "n1"})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, err := s1.PutBinding(t.Context(), b, 0); err != nil {
		t.Fatalf("PutBinding: %v", err)
	}
	if err := s1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := open(t, embedded.Options{Path: path, NodeID: "n1"})
	bs, err := s2.Bindings(t.Context(), b.AOR)
	if err != nil || len(bs) != 1 {
		t.Fatalf("after restart: Bindings = %d bindings, %v; want 1", len(bs), err)
	}
	if bs[0].Instance != b.Instance || bs[0].Contact != b.Contact || !bs[0].Expires.Equal(b.Expires) {
		t.Errorf("after restart: got %+v, want %+v", bs[0], b)
	}
	if got, err := s2.BindingByToken(t.Context(), b.Token); err != nil || got.Instance != b.Instance {
		t.Errorf("after restart: BindingByToken = %q, %v", got.Instance, err)
	}
}

func TestSecondOpenFailsOnLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sipwake.db")
	open(t, embedded.Options{Path: path})

	const timeout = 300 * time.Millisecond
	start := time.Now()
	s, err := embedded.Open(t.Context(), embedded.Options{Path: path, NodeID: "n2", LockTimeout: timeout})
	elapsed := time.Since(start)
	if err == nil {
		s.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("error %q does not say the file is locked", err)
	}
	// bbolt retries the lock every 50ms, so it may give up a little early.
	if elapsed < timeout/2 || elapsed > timeout+5*time.Second {
		t.Errorf("second Open failed after %s, want about %s", elapsed, timeout)
	}
}

func TestOpenValidates(t *testing.T) {
	for _, opt := range []embedded.Options{
		{NodeID: "n"},
		{Path: filepath.Join(t.TempDir(), "x.db")},
	} {
		if s, err := embedded.Open(t.Context(), opt); err == nil {
			s.Close()
			t.Errorf("Open(%+v) succeeded, want an error", opt)
		}
	}
}

func TestSweeperDeletesExpired(t *testing.T) {
	s := open(t, embedded.Options{Path: filepath.Join(t.TempDir(), "s.db"), SweepInterval: -1})
	ctx := t.Context()
	for i, ttl := range []time.Duration{time.Second, time.Second, time.Hour} {
		b := storetest.Fixture("sip:sweep@example.com", fmt.Sprintf("d%d", i), fmt.Sprintf("t%d", i), ttl)
		if _, err := s.PutBinding(ctx, b, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.Sweep(time.Now()); err != nil || n != 0 {
		t.Fatalf("early Sweep = %d, %v; want 0", n, err)
	}
	n, err := s.Sweep(time.Now().Add(2 * time.Second))
	if err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2", n, err)
	}
	b, tok, exp, err := s.Counts()
	if err != nil || b != 1 || tok != 1 || exp != 1 {
		t.Errorf("after sweep: %d bindings, %d tokens, %d expiry keys (%v); want 1 each", b, tok, exp, err)
	}
}

func TestBackgroundSweeper(t *testing.T) {
	s := open(t, embedded.Options{Path: filepath.Join(t.TempDir(), "s.db"), SweepInterval: 50 * time.Millisecond})
	b := storetest.Fixture("sip:sweep@example.com", "d", "t", 300*time.Millisecond)
	if _, err := s.PutBinding(t.Context(), b, 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _, _, err := s.Counts()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("background sweeper did not delete the expired binding within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSlowSubscriberDoesNotBlockWriter(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := open(t, embedded.Options{Path: filepath.Join(t.TempDir(), "s.db"), Registerer: reg})
	if _, err := s.Subscribe(t.Context()); err != nil { // never read
		t.Fatal(err)
	}
	const puts = embedded.SubscriberBuffer + 50
	done := make(chan error, 1)
	go func() {
		for i := range puts {
			b := storetest.Fixture("sip:slow@example.com", fmt.Sprintf("d%d", i%3), fmt.Sprintf("t%d", i), time.Hour)
			if _, err := s.PutBinding(t.Context(), b, 0); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("writer blocked by a subscriber that does not read")
	}
	if got := counter(t, reg, "sipwake_store_events_dropped_total", map[string]string{"backend": "embedded"}); got != 50 {
		t.Errorf("dropped events counted %v, want 50", got)
	}
}

func TestErrorMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := open(t, embedded.Options{Path: filepath.Join(t.TempDir(), "s.db"), Registerer: reg})
	// A second store on the same registry shares the collectors.
	open(t, embedded.Options{Path: filepath.Join(t.TempDir(), "s2.db"), Registerer: reg})

	if err := s.DeleteBinding(t.Context(), "sip:x@example.com", "i"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteBinding: %v, want ErrNotFound", err)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Ping(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ping(canceled) = %v, want context.Canceled", err)
	}
	if _, err := s.PutBinding(canceled, storetest.Fixture("sip:x@example.com", "i", "t", time.Hour), 0); err == nil {
		t.Fatal("PutBinding(canceled) succeeded")
	}
	if _, err := s.Secret(canceled, "k", 32); err == nil {
		t.Fatal("Secret(canceled) succeeded")
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
	if err := s.Heartbeat(canceled, "n1", time.Minute); err == nil {
		t.Fatal("Heartbeat(canceled) succeeded")
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
	if _, err := s.Lease(canceled, "k", "n1", time.Minute); err == nil {
		t.Fatal("Lease(canceled) succeeded")
	}
	for op, want := range map[string]float64{"ping": 1, "put_binding": 1, "delete_binding": 0, "secret": 1,
		"claim_held": 0, "heartbeat": 1, "publish": 0, "sweep": 0, "put_message": 0, "acknowledge": 0,
		"lease": 1, "release_lease": 0} {
		labels := map[string]string{"backend": "embedded", "op": op}
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

func TestSecretSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sipwake.db")
	s1, err := embedded.Open(t.Context(), embedded.Options{Path: path, NodeID: "n1"})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	v, err := s1.Secret(t.Context(), "binding-token", 32)
	if err != nil || len(v) != 32 {
		t.Fatalf("Secret = %d bytes, %v; want 32", len(v), err)
	}
	if err := s1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2 := open(t, embedded.Options{Path: path, NodeID: "n2"})
	got, err := s2.Secret(t.Context(), "binding-token", 32)
	if err != nil || !bytes.Equal(got, v) {
		t.Errorf("after restart: Secret = %x, %v; want %x", got, err, v)
	}
	// Secrets are not bindings: the binding buckets stay empty.
	if b, tok, exp, err := s2.Counts(); err != nil || b+tok+exp != 0 {
		t.Errorf("Counts = %d, %d, %d, %v; want 0 each", b, tok, exp, err)
	}
}

func TestSweeperForgetsHeldCallsAndNodes(t *testing.T) {
	s := open(t, embedded.Options{Path: filepath.Join(t.TempDir(), "s.db"), SweepInterval: -1})
	ctx := t.Context()
	now := time.Now()
	// Forgotten one second from now, and an hour from now.
	soon := storetest.HeldFixture("soon", "sip:h@example.com", "n1", now, now.Add(-store.HeldRetention+time.Second))
	later := storetest.HeldFixture("later", "sip:h@example.com", "n1", now, now.Add(time.Hour))
	for _, h := range []store.HeldCall{soon, later} {
		if err := s.PutHeld(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Heartbeat(ctx, "n1", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx, "n2", time.Hour); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(now); err != nil || n != 0 {
		t.Fatalf("early Sweep = %d, %v; want 0", n, err)
	}
	if h, e, nodes, err := s.HeldCounts(); err != nil || h != 2 || e != 2 || nodes != 2 {
		t.Fatalf("before sweep: %d held, %d index keys, %d nodes (%v); want 2 each", h, e, nodes, err)
	}
	if n, err := s.Sweep(now.Add(2 * time.Second)); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	if h, e, nodes, err := s.HeldCounts(); err != nil || h != 1 || e != 1 || nodes != 1 {
		t.Errorf("after sweep: %d held, %d index keys, %d nodes (%v); want 1 each", h, e, nodes, err)
	}
	if got, err := s.ListHeld(ctx, store.HeldFilter{}); err != nil || len(got) != 1 || got[0].ID != "later" {
		t.Errorf("ListHeld after sweep = %d calls, %v; want only %q", len(got), err, "later")
	}
	// Deleting and replacing leave no index entry behind.
	later.Deadline = later.Deadline.Add(time.Hour)
	if err := s.PutHeld(ctx, later); err != nil {
		t.Fatal(err)
	}
	if h, e, _, err := s.HeldCounts(); err != nil || h != 1 || e != 1 {
		t.Errorf("after replace: %d held, %d index keys (%v); want 1 each", h, e, err)
	}
	if err := s.DeleteHeld(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	if h, e, _, err := s.HeldCounts(); err != nil || h != 0 || e != 0 {
		t.Errorf("after delete: %d held, %d index keys (%v); want 0 each", h, e, err)
	}
}
