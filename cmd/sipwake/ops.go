package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// readyCheckTimeout bounds each readiness check of one /readyz request.
const readyCheckTimeout = 2 * time.Second

// namedCheck is one readiness check: Check returns nil when the dependency it watches
// (the store, the upstream, …) can serve. A module's Ready method fits as Check.
type namedCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// newRegistry returns a fresh registry for one daemon, with the Go runtime and process
// collectors registered. Modules register their own metrics on it.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// opsServer serves GET /livez, /readyz and /metrics on ops.listen. It starts in the
// "starting" state (not ready) until SetStarted; SetDraining turns readiness off again and
// sets sipwake_draining.
type opsServer struct {
	log      *zap.Logger
	handler  http.Handler
	draining prometheus.Gauge

	mu         sync.Mutex
	checks     []namedCheck
	starting   bool
	isDraining bool

	httpListener
}

// newOpsServer builds the ops server and registers sipwake_build_info and sipwake_draining
// on reg; /metrics serves reg. Nothing listens until Start.
func newOpsServer(listen string, reg *prometheus.Registry, log *zap.Logger, checks ...namedCheck) (*opsServer, error) {
	if log == nil {
		log = zap.NewNop()
	}
	bi := currentBuildInfo()
	buildInfoGauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sipwake_build_info",
		Help: "Always 1; the labels describe the running binary.",
	}, []string{"version", "commit", "go_version", "sip_library"})
	buildInfoGauge.WithLabelValues(bi.Version, bi.Commit, bi.GoVersion, bi.SIPLibrary).Set(1)
	draining := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sipwake_draining",
		Help: "1 while the daemon drains after SIGTERM, else 0.",
	})
	for _, c := range []prometheus.Collector{buildInfoGauge, draining} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ops: register metrics: %w", err)
		}
	}
	s := &opsServer{
		httpListener: httpListener{name: "ops", listen: listen, writeTimeout: 30 * time.Second},
		log:          log,
		draining:     draining,
		checks:       append([]namedCheck(nil), checks...),
		starting:     true,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", s.serveLivez)
	mux.HandleFunc("GET /readyz", s.serveReadyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg,
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      zap.NewStdLog(log),
	}))
	s.handler = mux
	return s, nil
}

// AddCheck adds a readiness check; safe while serving.
func (s *opsServer) AddCheck(c namedCheck) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, c)
}

// SetStarted ends the starting state: from now on /readyz reflects the checks.
func (s *opsServer) SetStarted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.starting = false
}

// SetDraining turns the draining state on or off; while on, /readyz answers 503 and
// sipwake_draining is 1.
func (s *opsServer) SetDraining(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.isDraining = on
	if on {
		s.draining.Set(1)
	} else {
		s.draining.Set(0)
	}
}

// Handler returns the HTTP handler, for tests and for mounting elsewhere.
func (s *opsServer) Handler() http.Handler {
	return s.handler
}

// Start binds ops.listen and serves in a goroutine. A bind error is returned, so once
// Start returns nil the port is bound; Addr tells which. ctx bounds the bind only.
func (s *opsServer) Start(ctx context.Context) error {
	if err := s.start(ctx, s.handler, s.log); err != nil {
		return err
	}
	s.log.Info("ops listening", zap.String("addr", s.Addr().String()))
	return nil
}

func (s *opsServer) serveLivez(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// readyFailure is one failing readiness check in the /readyz body.
type readyFailure struct {
	Check string `json:"check"`
	Error string `json:"error"`
}

// readyStatus is the /readyz body.
type readyStatus struct {
	Status  string         `json:"status"` // "ready" or "not ready"
	Failing []readyFailure `json:"failing"`
}

// ready runs every check concurrently and returns the failures, state first, then checks
// in the order they were added.
func (s *opsServer) ready(ctx context.Context) []readyFailure {
	s.mu.Lock()
	checks := append([]namedCheck(nil), s.checks...)
	starting, draining := s.starting, s.isDraining
	s.mu.Unlock()

	failing := []readyFailure{}
	if starting {
		failing = append(failing, readyFailure{Check: "starting", Error: "sipwake is starting"})
	}
	if draining {
		failing = append(failing, readyFailure{Check: "draining", Error: "sipwake is draining"})
	}
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, readyCheckTimeout)
			defer cancel()
			errs[i] = c.Check(cctx)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			failing = append(failing, readyFailure{Check: checks[i].Name, Error: err.Error()})
		}
	}
	return failing
}

func (s *opsServer) serveReadyz(w http.ResponseWriter, r *http.Request) {
	st := readyStatus{Status: "ready", Failing: s.ready(r.Context())}
	code := http.StatusOK
	if len(st.Failing) > 0 {
		st.Status, code = "not ready", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}
