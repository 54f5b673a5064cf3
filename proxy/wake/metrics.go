package wake

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	held         prometheus.Gauge
	holdDuration *prometheus.HistogramVec
	wakeup       prometheus.Histogram
	delivery     prometheus.Histogram

	messagesStored  prometheus.Counter
	messagesPending prometheus.Gauge
	deliveries      *prometheus.CounterVec
	deliveryDelay   prometheus.Histogram
}

// latencyBuckets suit the wait for a phone to wake: 100 ms to 30 s.
var latencyBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 30}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sipwake", Subsystem: "wake", Name: "invites_held",
			Help: "INVITEs held on this node while their devices wake.",
		}),
		holdDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "sipwake", Subsystem: "wake", Name: "invite_hold_duration_seconds",
			Help:    "Time from a held INVITE's arrival to its final answer, by outcome (answered, rejected, cancelled, timeout, no_device, stopped).",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
		wakeup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sipwake", Subsystem: "wake", Name: "push_to_register_seconds",
			Help:    "Time from a call push to the woken device's accepted REGISTER.",
			Buckets: latencyBuckets,
		}),
		delivery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sipwake", Subsystem: "wake", Name: "invite_delivery_seconds",
			Help:    "Time from a held INVITE's arrival to its delivery to a woken device.",
			Buckets: latencyBuckets,
		}),
		messagesStored: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "wake", Name: "messages_stored_total",
			Help: "MESSAGEs stored for sleeping devices and answered 202.",
		}),
		messagesPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "sipwake", Subsystem: "wake", Name: "messages_pending",
			Help: "Stored MESSAGEs not yet delivered to every target device (as of the last scan).",
		}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "wake", Name: "message_deliveries_total",
			Help: "Stored-MESSAGE deliveries per device, by result (delivered, refused, failed, expired).",
		}, []string{"result"}),
		deliveryDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sipwake", Subsystem: "wake", Name: "message_delivery_delay_seconds",
			Help:    "Time from a MESSAGE's 202 to its delivery to a device.",
			Buckets: []float64{0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600},
		}),
	}
	for _, r := range []string{resultDelivered, resultRefused, resultFailed, resultExpired} {
		m.deliveries.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.held, m.holdDuration, m.wakeup, m.delivery,
			m.messagesStored, m.messagesPending, m.deliveries, m.deliveryDelay)
	}
	return m
}

func sortHeld(h []HeldInfo) {
	sort.Slice(h, func(i, j int) bool {
		if !h[i].Received.Equal(h[j].Received) {
			return h[i].Received.Before(h[j].Received)
		}
		return h[i].CallID < h[j].CallID
	})
}
