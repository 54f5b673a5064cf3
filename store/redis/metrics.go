package redis

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/store"
)

const backend = "redis"

// allOps are the operation labels: the backend adds none of its own
// (a failed PUBLISH of a write's events counts as store.OpPublish).
var allOps = store.Ops()

// metrics are the collectors shared by every backend (store.Metrics).
type metrics = store.Metrics

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	return store.NewMetrics(reg, backend, allOps)
}
