package push

import (
	"errors"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Result label values of sipwake_push_requests_total.
const (
	resultOK    = "ok"
	resultError = "error"
)

// labelOther stands for a provider, push type or reason outside the
// known sets, so that label values stay few.
const labelOther = "other"

// metrics are the push side's collectors (INTERFACE.md "Metrics").
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	pruned   *prometheus.CounterVec
	depth    *prometheus.GaugeVec
}

// newMetrics builds the collectors and registers them on reg (nil
// registers nothing). Collectors already registered by another
// Dispatcher on the same registry are shared; another registration
// failure is returned with usable, unregistered collectors.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "push", Name: "requests_total",
			Help: "Pushes by provider, push type and result (ok or error); reason is the error's class, empty on ok.",
		}, []string{"provider", "push_type", "result", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sipwake", Subsystem: "push", Name: "request_duration_seconds",
			Help:    "Time from sending a push to the provider's answer (or failure), by provider.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12), // 5 ms … 10 s
		}, []string{"provider"}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "push", Name: "tokens_pruned_total",
			Help: "Device tokens removed because the provider said they are dead, by provider and reason.",
		}, []string{"provider", "reason"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "sipwake", Subsystem: "push", Name: "queue_depth",
			Help: "Pushes waiting for a worker, by provider queue (webhook for the fallback).",
		}, []string{"provider"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	m.requests = registerOnce(reg, m.requests, &errs)
	m.duration = registerOnce(reg, m.duration, &errs)
	m.pruned = registerOnce(reg, m.pruned, &errs)
	m.depth = registerOnce(reg, m.depth, &errs)
	return m, errors.Join(errs...)
}

// registerOnce registers c, or returns the collector of the same
// description already registered.
func registerOnce[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		*errs = append(*errs, err)
	}
	return c
}

var (
	knownProviders = []string{ProviderAPNs, ProviderAPNsDev, ProviderFCM, ProviderWebPush, ProviderWebhook}
	knownTypes     = []Type{TypeVoIP, TypeAlert, TypeBackground, TypeData}
	knownReasons   = []string{ReasonUnregistered, ReasonBadToken, ReasonTopicMismatch, ReasonRateLimited,
		ReasonServerError, ReasonTimeout, ReasonNetwork, ReasonAuth, ReasonBadRequest, ReasonQueueFull,
		ReasonNoProvider, ReasonPayloadTooLong}
)

func typeLabel(t Type) string {
	if slices.Contains(knownTypes, t) {
		return string(t)
	}
	return labelOther
}

func reasonLabel(r string) string {
	if r == "" || slices.Contains(knownReasons, r) {
		return r
	}
	return labelOther
}
