package proxy

import (
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	dirIn  = "in"
	dirOut = "out"
)

// metrics of the SIP engine (INTERFACE.md "Metrics").
type metrics struct {
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	upstream  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "sip", Name: "requests_total",
			Help: "SIP requests received (direction=in) and sent (direction=out), by method.",
		}, []string{"method", "direction"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "sip", Name: "responses_total",
			Help: "SIP responses received (in) and sent (out), by request method and status class.",
		}, []string{"method", "code_class", "direction"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "sip", Name: "messages_dropped_total",
			Help: "SIP messages dropped without an answer, by reason.",
		}, []string{"reason"}),
		upstream: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sipwake", Name: "upstream_up",
			Help: "1 when the last exchange with the upstream PBX got an answer, 0 after a timeout or transport error.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.responses, m.dropped, m.upstream)
	}
	return m
}

// methodLabel keeps the method label to a closed set.
func methodLabel(m sip.RequestMethod) string {
	switch m {
	case sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER, sip.OPTIONS,
		sip.SUBSCRIBE, sip.NOTIFY, sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK,
		sip.UPDATE, sip.PUBLISH:
		return string(m)
	}
	return "other"
}

var codeClasses = [...]string{"", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx"}

func codeClass(code int) string {
	if c := code / 100; c >= 1 && c <= 6 {
		return codeClasses[c]
	}
	return "other"
}

func (m *metrics) request(method sip.RequestMethod, dir string) {
	m.requests.WithLabelValues(methodLabel(method), dir).Inc()
}

func (m *metrics) response(method sip.RequestMethod, code int, dir string) {
	m.responses.WithLabelValues(methodLabel(method), codeClass(code), dir).Inc()
}
