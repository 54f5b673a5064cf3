package embedded

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/store"
)

const backend = "embedded"

// Operation label values of sipwake_store_errors_total for this backend.
const (
	opPutBinding     = "put_binding"
	opDeleteBinding  = "delete_binding"
	opDeleteAOR      = "delete_aor"
	opBindings       = "bindings"
	opBindingByToken = "binding_by_token"
	opListBindings   = "list_bindings"
	opSubscribe      = "subscribe"
	opPing           = "ping"
	opClose          = "close"
	opSweep          = "sweep"
	opSecret         = "secret"
)

var allOps = []string{opPutBinding, opDeleteBinding, opDeleteAOR, opBindings,
	opBindingByToken, opListBindings, opSubscribe, opPing, opClose, opSweep, opSecret}

// metrics holds the store's collectors. Both store backends declare the
// same metric names with the same help, so they can share a registry.
type metrics struct {
	errors  *prometheus.CounterVec
	dropped *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipwake_store_errors_total",
			Help: "Store backend errors by backend and operation; not found and too many bindings are not counted.",
		}, []string{"backend", "op"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipwake_store_events_dropped_total",
			Help: "Binding-change events dropped because a subscriber's buffer was full.",
		}, []string{"backend"}),
	}
	if reg != nil {
		var err error
		if m.errors, err = register(reg, m.errors); err != nil {
			return nil, err
		}
		if m.dropped, err = register(reg, m.dropped); err != nil {
			return nil, err
		}
	}
	for _, op := range allOps {
		m.errors.WithLabelValues(backend, op)
	}
	m.dropped.WithLabelValues(backend)
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same description (another store on the same registry).
func register(reg prometheus.Registerer, c *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}

// observe counts err under op unless it is a normal outcome.
func (m *metrics) observe(op string, err error) {
	if err == nil || errors.Is(err, store.ErrNotFound) ||
		errors.Is(err, store.ErrTooManyBindings) || errors.Is(err, store.ErrClosed) {
		return
	}
	m.errors.WithLabelValues(backend, op).Inc()
}
