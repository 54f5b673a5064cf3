package registrar

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sipwake/sipwake/store"
)

// slowList is a store whose CountBindings takes until release is closed.
type slowList struct {
	store.Store
	release chan struct{}
	calls   atomic.Int32
	bs      []store.Binding
}

func (s *slowList) CountBindings(ctx context.Context) (map[string]int, error) {
	s.calls.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	counts := map[string]int{}
	for _, b := range s.bs {
		p := ""
		if b.Push != nil {
			p = b.Push.Provider
		}
		counts[p]++
	}
	return counts, nil
}

// TestBindingsGaugeNeverBlocksScrape: the first scrape waits at most 2 s
// for a count; once a count exists a scrape reports it at once, even while
// a slow recount runs, and one recount runs at a time.
func TestBindingsGaugeNeverBlocksScrape(t *testing.T) {
	st := &slowList{release: make(chan struct{}), bs: []store.Binding{
		{AOR: "sip:a@x", Push: &store.PushTarget{Provider: "apns"}},
		{AOR: "sip:b@x", Push: &store.PushTarget{Provider: "fcm"}},
		{AOR: "sip:c@x"},
	}}
	c := &bindingsCollector{st: st}
	start := time.Now()
	if n := collectCount(c); n != 0 {
		t.Fatalf("first scrape without a count: %d series", n)
	}
	if d := time.Since(start); d < 2*time.Second || d > 4*time.Second {
		t.Fatalf("first scrape took %v, want about 2 s", d)
	}
	close(st.release)
	deadline := time.Now().Add(5 * time.Second)
	for collectCount(c) != 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "sipwake_registrar_bindings" {
		t.Fatalf("gathered %v (%v), want the bindings gauge", mfs, err)
	}
	for _, m := range mfs[0].GetMetric() {
		if m.GetGauge().GetValue() != 1 {
			t.Errorf("gauge %v = %g, want 1", m.GetLabel(), m.GetGauge().GetValue())
		}
	}
	if n := len(mfs[0].GetMetric()); n != 3 {
		t.Fatalf("gauge series %d, want 3 (apns, fcm, none)", n)
	}

	// A stale count: the scrape answers at once with it and starts one
	// recount, however many scrapes come meanwhile.
	st.release = make(chan struct{})
	c.mu.Lock()
	c.at = time.Now().Add(-time.Minute)
	c.mu.Unlock()
	calls := st.calls.Load()
	for range 5 {
		start := time.Now()
		if n := collectCount(c); n != 3 {
			t.Fatalf("stale scrape: %d series, want 3", n)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("a scrape waited %v for the recount", d)
		}
	}
	deadline = time.Now().Add(2 * time.Second)
	for st.calls.Load() == calls && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if got := st.calls.Load() - calls; got != 1 {
		t.Errorf("%d recounts started, want 1", got)
	}
	close(st.release)
}

// collectCount runs one Collect and counts the series it gives.
func collectCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	n := 0
	for m := range ch {
		var pb dto.Metric
		if m.Write(&pb) == nil {
			n++
		}
	}
	return n
}
