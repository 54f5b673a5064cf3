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
	refreshes     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, st store.Store) *metrics {
	m := &metrics{
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "registrar", Name: "registrations_total",
			Help: "REGISTER transactions by result: ok, removed, query, challenged, rejected, unsupported_provider, bad_request, interval_too_brief, too_many_bindings, error.",
		}, []string{"result"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "registrar", Name: "upstream_refreshes_total",
			Help: "REGISTERs sipwake sent to the PBX on a device's behalf, by result: ok, auth_failed, rejected, timeout, deregistered.",
		}, []string{"result"}),
	}
	for _, r := range []string{refreshOK, refreshAuthFailed, refreshRejected, refreshTimeout, refreshDeregistered} {
		m.refreshes.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.registrations, m.refreshes, &bindingsCollector{st: st}, &registrationsCollector{st: st})
	}
	return m
}

func (m *metrics) result(r string) { m.registrations.WithLabelValues(r).Inc() }

func (m *metrics) refresh(r string) { m.refreshes.WithLabelValues(r).Inc() }

var registrationsDesc = prometheus.NewDesc("sipwake_registrar_upstream_registrations",
	"Contacts sipwake keeps registered at the PBX on the devices' behalf, by state: active, backing_off, needs_login.", []string{"state"}, nil)

// registrationsCollector counts on-behalf registrations per state at
// scrape time, at most once per 5 s.
type registrationsCollector struct {
	st     store.Store
	mu     sync.Mutex
	at     time.Time
	counts map[string]int
}

func (c *registrationsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- registrationsDesc }

func (c *registrationsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil || time.Since(c.at) > 5*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		counts, err := c.st.CountRegistrations(ctx)
		cancel()
		if err == nil {
			c.counts, c.at = counts, time.Now()
		}
	}
	for _, s := range []string{store.RegActive, store.RegBackingOff, store.RegNeedsLogin} {
		ch <- prometheus.MustNewConstMetric(registrationsDesc, prometheus.GaugeValue, float64(c.counts[s]), s)
	}
}

var bindingsDesc = prometheus.NewDesc("sipwake_registrar_bindings",
	"Live device bindings in the store, by push provider (none = no push target).", []string{"provider"}, nil)

// bindingsCollector counts the live bindings, at most once per 15 s. The
// count walks every AOR of the store (on Redis about 14 ms per 1,000
// devices, most of it in Redis), so it runs beside the scrape: a scrape
// reports the last count and starts a new one when that is stale; only
// the first scrape waits for one, up to 2 s.
type bindingsCollector struct {
	st      store.Store
	mu      sync.Mutex
	at      time.Time
	counts  map[string]int
	running chan struct{} // closed when the count in progress ends
}

// bindingsCountTimeout bounds one count.
const bindingsCountTimeout = time.Minute

func (c *bindingsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- bindingsDesc }

func (c *bindingsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if c.running == nil && (c.counts == nil || time.Since(c.at) > 15*time.Second) {
		c.running = make(chan struct{})
		go c.count(c.running)
	}
	if c.counts == nil && c.running != nil {
		running := c.running
		c.mu.Unlock()
		select {
		case <-running:
		case <-time.After(2 * time.Second):
		}
		c.mu.Lock()
	}
	defer c.mu.Unlock()
	for p, n := range c.counts {
		ch <- prometheus.MustNewConstMetric(bindingsDesc, prometheus.GaugeValue, float64(n), p)
	}
}

// count records the bindings' count per provider; done is closed at the
// end, success or not.
func (c *bindingsCollector) count(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), bindingsCountTimeout)
	byProvider, err := c.st.CountBindings(ctx)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(done)
	c.running = nil
	if err != nil {
		return // the last count stays (a store error is counted by the store)
	}
	counts := map[string]int{"none": 0}
	for p, n := range byProvider {
		if p == "" {
			p = "none"
		}
		counts[p] += n
	}
	c.counts, c.at = counts, time.Now()
}
