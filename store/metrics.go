package store

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Operation label values of sipwake_store_errors_total, one per Store
// method; a backend may add its own (sweep).
const (
	OpPutBinding     = "put_binding"
	OpDeleteBinding  = "delete_binding"
	OpDeleteAOR      = "delete_aor"
	OpBindings       = "bindings"
	OpBindingByToken = "binding_by_token"
	OpListBindings   = "list_bindings"
	OpSubscribe      = "subscribe"
	OpPing           = "ping"
	OpClose          = "close"
	OpSecret         = "secret"
	OpClearPush      = "clear_push"
	OpPutHeld        = "put_held"
	OpDeleteHeld     = "delete_held"
	OpListHeld       = "list_held"
	OpClaimHeld      = "claim_held"
	OpHeartbeat      = "heartbeat"
	OpNodeAlive      = "node_alive"
	OpPutMessage     = "put_message"
	OpMessage        = "message"
	OpListMessages   = "list_messages"
	OpMessagesFor    = "messages_for"
	OpAcknowledge    = "acknowledge"
	OpAddPending     = "add_pending"
	OpCountAttempt   = "count_attempt"
	OpDeleteMessage  = "delete_message"
	OpLease          = "lease"
	OpReleaseLease   = "release_lease"
	// Registrations and accounts.
	OpPutRegistration    = "put_registration"
	OpRegistration       = "registration"
	OpDeleteRegistration = "delete_registration"
	OpListRegistrations  = "list_registrations"
	OpClaimDue           = "claim_due"
	OpCountRegistrations = "count_registrations"
	OpCountBindings      = "count_bindings"
	OpPutAccount         = "put_account"
	OpAccount            = "account"
	OpDeleteAccount      = "delete_account"
	OpListAccounts       = "list_accounts"
	// OpPublish counts failed Publish calls, and the redis backend's
	// failed PUBLISH of the events a write announces.
	OpPublish = "publish"
)

// Ops lists the operations every backend has.
func Ops() []string {
	return []string{OpPutBinding, OpDeleteBinding, OpDeleteAOR, OpBindings, OpBindingByToken,
		OpListBindings, OpSubscribe, OpPing, OpClose, OpSecret, OpClearPush, OpPutHeld,
		OpDeleteHeld, OpListHeld, OpClaimHeld, OpHeartbeat, OpNodeAlive, OpPublish,
		OpPutMessage, OpMessage, OpListMessages, OpMessagesFor, OpAcknowledge, OpAddPending,
		OpCountAttempt, OpDeleteMessage, OpLease, OpReleaseLease,
		OpPutRegistration, OpRegistration, OpDeleteRegistration, OpListRegistrations,
		OpClaimDue, OpCountRegistrations, OpPutAccount, OpAccount, OpDeleteAccount, OpListAccounts,
		OpCountBindings}
}

// Metrics are the collectors every store backend shares. The metric names
// and help are the same for all backends (label backend tells them apart),
// so several stores can register on one registry.
type Metrics struct {
	backend string
	errors  *prometheus.CounterVec
	// Dropped counts binding-change events dropped because a subscriber's
	// buffer was full.
	Dropped prometheus.Counter
}

// NewMetrics registers sipwake_store_errors_total{backend,op} and
// sipwake_store_events_dropped_total{backend} on reg (nil registers
// nothing), with every op of ops present at zero.
func NewMetrics(reg prometheus.Registerer, backend string, ops []string) (*Metrics, error) {
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipwake_store_errors_total",
		Help: "Store backend errors by backend and operation; not found, too many bindings and conflicts are not counted.",
	}, []string{"backend", "op"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipwake_store_events_dropped_total",
		Help: "Binding-change events dropped because a subscriber's buffer was full.",
	}, []string{"backend"})
	if reg != nil {
		var err error
		if errs, err = registerOnce(reg, errs); err != nil {
			return nil, err
		}
		if dropped, err = registerOnce(reg, dropped); err != nil {
			return nil, err
		}
	}
	for _, op := range ops {
		errs.WithLabelValues(backend, op)
	}
	return &Metrics{backend: backend, errors: errs, Dropped: dropped.WithLabelValues(backend)}, nil
}

// registerOnce registers c, or returns the collector already registered
// under the same description (another store on the same registry).
func registerOnce(reg prometheus.Registerer, c *prometheus.CounterVec) (*prometheus.CounterVec, error) {
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

// Observe counts err under op unless it is a normal outcome (not found,
// too many bindings, conflict, closed).
func (m *Metrics) Observe(op string, err error) {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrTooManyBindings) ||
		errors.Is(err, ErrConflict) || errors.Is(err, ErrClosed) {
		return
	}
	m.errors.WithLabelValues(m.backend, op).Inc()
}
