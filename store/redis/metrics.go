package redis

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/store"
)

const backend = "redis"

// opPublish is this backend's own operation label; the others are store.Ops.
const opPublish = "publish"

var allOps = append(store.Ops(), opPublish)

// metrics are the collectors shared by every backend (store.Metrics).
type metrics = store.Metrics

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	return store.NewMetrics(reg, backend, allOps)
}
