package registrar

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/store"
)

// metrics of the registrar (INTERFACE.md "Metrics").
type metrics struct {
	registrations *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, st store.Store) *metrics {
	m := &metrics{
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "registrar", Name: "registrations_total",
			Help: "REGISTER transactions by result: ok, removed, query, challenged, rejected, unsupported_provider, bad_request, interval_too_brief, too_many_bindings, error.",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.registrations, &bindingsCollector{st: st})
	}
	return m
}

func (m *metrics) result(r string) { m.registrations.WithLabelValues(r).Inc() }

var bindingsDesc = prometheus.NewDesc("sipwake_registrar_bindings",
	"Live device bindings in the store, by push provider (none = no push target).", []string{"provider"}, nil)

// bindingsCollector counts the live bindings at scrape time, at most once
// per 15 s (the count walks the store).
type bindingsCollector struct {
	st     store.Store
	mu     sync.Mutex
	at     time.Time
	counts map[string]int
}

func (c *bindingsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- bindingsDesc }

func (c *bindingsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil || time.Since(c.at) > 15*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		bs, err := c.st.ListBindings(ctx, store.ListOptions{})
		cancel()
		if err == nil {
			counts := map[string]int{"none": 0}
			for _, b := range bs {
				p := "none"
				if b.Push != nil {
					p = b.Push.Provider
				}
				counts[p]++
			}
			c.counts, c.at = counts, time.Now()
		}
	}
	for p, n := range c.counts {
		ch <- prometheus.MustNewConstMetric(bindingsDesc, prometheus.GaugeValue, float64(n), p)
	}
}
