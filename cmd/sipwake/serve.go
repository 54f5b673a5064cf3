package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/proxy/wake"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/embedded"
	redisstore "github.com/sipwake/sipwake/store/redis"
)

// runServe runs the daemon until ctx ends (SIGTERM/SIGINT), then drains:
// readiness and OPTIONS turn 503, new out-of-dialog requests get 503 with
// Retry-After, transactions in flight finish (up to drain.timeout), and
// everything stops.
func runServe(ctx context.Context, cfg *Config, log *zap.Logger, level zap.AtomicLevel) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	reg := newRegistry()
	ops, err := newOpsServer(cfg.Ops.Listen, reg, log.Named("ops"))
	if err != nil {
		return err
	}
	if err := ops.Start(ctx); err != nil {
		return fmt.Errorf("ops: %w", err)
	}
	defer shutdown(ops.Shutdown, 5*time.Second)

	st, err := openStore(ctx, cfg, log, reg)
	if err != nil {
		return unavailable(err)
	}
	if wrap, ok := ctx.Value(storeWrapKey{}).(func(store.Store) store.Store); ok {
		st = wrap(st)
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Warn("store not closed cleanly", zap.Error(err))
		}
	}()

	pcfg, err := proxyConfig(cfg, log, reg)
	if err != nil {
		return err
	}
	// Flow tokens in Record-Route are signed with a key every node of the
	// store shares, kept across restarts, so in-dialog requests still
	// find their device after a restart or through another node.
	if pcfg.FlowKey, err = st.Secret(ctx, "flow-token", 32); err != nil {
		return unavailable(fmt.Errorf("store: flow-token key: %w", err))
	}
	// The SIP trace and HEP export; stopped (flushed) after the proxy, on return.
	tap, stopCapture, err := startCapture(cfg, log, reg)
	if err != nil {
		return err
	}
	defer stopCapture()
	pcfg.Tap = tap
	srv, err := proxy.New(pcfg)
	if err != nil {
		return err
	}
	pusher, err := buildPusher(cfg, log.Named("push"), reg)
	if err != nil {
		return err
	}
	defer pusher.Close()
	mods, err := buildModules(cfg, srv, st, pusher, log, reg)
	if err != nil {
		return err
	}
	srv.Use(mods...)
	ops.AddCheck(namedCheck{Name: "store", Check: st.Ping})
	ops.AddCheck(namedCheck{Name: "sip", Check: func(context.Context) error { return srv.Ready() }})
	if err := srv.Start(ctx); err != nil {
		return err
	}
	admin, err := startAdminAPI(ctx, cfg, st, mods, pusher, level, tap, log.Named("admin"))
	if err != nil {
		return err
	}
	defer shutdown(admin.Shutdown, 5*time.Second)
	ops.SetStarted()
	slog := log.Named("serve")
	// 33 s: past the 32 s for which a finished INVITE transaction may be
	// kept (non-INVITE ones go after 5 s).
	go trimMemory(ctx, srv, 33*time.Second, slog)
	if hook, ok := ctx.Value(serveHookKey{}).(func(*daemon)); ok {
		hook(&daemon{srv: srv, store: st, ops: ops, pusher: pusher, admin: admin})
	}
	slog.Info("sipwake started", zap.String("node", cfg.NodeID), zap.String("store", cfg.Store.Driver),
		zap.String("upstream", cfg.Upstream.URI), zap.String("ops", ops.Addr().String()))

	<-ctx.Done()
	drain(cfg, srv, ops, mods, slog)
	return nil
}

// drain is the SIGTERM sequence (CONVENTIONS.md C11): readiness and
// OPTIONS turn 503 at once and new out-of-dialog requests get 503 with
// Retry-After, while transactions in flight, held INVITEs (which end by
// themselves within wake.invite_hold_timeout) and calls in progress
// (until their BYE) finish; after
// drain.delay at least and drain.timeout at most, everything stops
// (held INVITEs still waiting are answered). Progress is logged every
// 5 s. A second SIGTERM or SIGINT stops at once.
func drain(cfg *Config, srv *proxy.Server, ops *opsServer, mods []proxy.Module, log *zap.Logger) {
	start := time.Now()
	held := func() int { return 0 }
	for _, m := range mods {
		if w, ok := m.(*wake.Wake); ok {
			held = func() int { return len(w.Held()) }
		}
	}
	log.Info("draining", zap.Duration("delay", cfg.Drain.Delay), zap.Duration("timeout", cfg.Drain.Timeout),
		zap.Int64("in_flight", srv.InFlight()), zap.Int("held_calls", held()), zap.Int("calls", srv.Dialogs()))
	ops.SetDraining(true)
	dctx, cancel := context.WithTimeout(context.Background(), cfg.Drain.Timeout)
	defer cancel()
	// The first signal ended ctx; the next one cuts the drain short.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	forced := false
	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(dctx) }()
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	delay := time.After(cfg.Drain.Delay)
	var result error
	done, delayed := false, cfg.Drain.Delay <= 0
	for !(done && delayed) {
		select {
		case result = <-drained:
			done = true
		case <-delay:
			delayed = true
		case <-dctx.Done():
			delayed = true
		case sig := <-sigs:
			log.Warn("second signal: stopping now", zap.String("signal", sig.String()),
				zap.Int64("in_flight", srv.InFlight()), zap.Int("held_calls", held()))
			forced = true
			cancel()
			delayed = true
		case <-progress.C:
			log.Info("still draining", zap.Float64(proxy.FieldDuration, time.Since(start).Seconds()),
				zap.Int64("in_flight", srv.InFlight()), zap.Int("held_calls", held()), zap.Int("calls", srv.Dialogs()))
		}
	}
	if result != nil && !forced {
		log.Warn("drain timed out; stopping with transactions in flight", zap.Error(result),
			zap.Int64("in_flight", srv.InFlight()), zap.Int("held_calls", held()), zap.Int("calls", srv.Dialogs()))
	}
	stopIn := 5 * time.Second
	if forced {
		stopIn = time.Second
	}
	sctx, scancel := context.WithTimeout(context.Background(), stopIn)
	defer scancel()
	if err := srv.Stop(sctx); err != nil {
		log.Warn("sip stop", zap.Error(err))
	}
	log.Info("stopped", zap.Float64(proxy.FieldDuration, time.Since(start).Seconds()))
}

// daemon is what a running serve holds; tests reach it through
// serveStarted.
type daemon struct {
	srv    *proxy.Server
	store  store.Store
	ops    *opsServer
	pusher *push.Dispatcher
	admin  *adminServer
}

// startAdmin starts the admin API on admin.listen: bindings, held calls,
// test pushes, the log level, and on-behalf accounts (from the registrar
// module), for the CLI.
func startAdminAPI(ctx context.Context, cfg *Config, st store.Store, mods []proxy.Module, pusher *push.Dispatcher,
	level zap.AtomicLevel, tap *proxy.Tap, log *zap.Logger) (*adminServer, error) {
	deps := adminDeps{Store: st, Level: level, Trace: tap}
	for _, m := range mods {
		switch m := m.(type) {
		case *wake.Wake:
			deps.Held = m.Held
		case *registrar.Registrar:
			deps.Registrar = m
		}
	}
	if pushConfigured(cfg) {
		deps.Push = pusher
	}
	token := ""
	if cfg.Admin.TokenFile != "" {
		var err error
		if token, err = readAdminToken(cfg.Admin.TokenFile); err != nil {
			return nil, fmt.Errorf("admin.token_file: %w", err)
		}
	}
	a, err := newAdminServer(cfg.Admin.Listen, token, deps, log)
	if err != nil {
		return nil, err
	}
	if err := a.Start(ctx); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return a, nil
}

// serveHookKey keys a func(*daemon) in the context of runServe, called
// once the daemon serves (tests only).
type serveHookKey struct{}

// storeWrapKey keys a func(store.Store) store.Store in the context of
// runServe that wraps the opened store (benchmarks count operations).
type storeWrapKey struct{}

func shutdown(f func(context.Context) error, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_ = f(ctx)
}

// openStore opens the configured backend; an unreachable backend is exit
// status 2.
func openStore(ctx context.Context, cfg *Config, log *zap.Logger, reg prometheus.Registerer) (store.Store, error) {
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch cfg.Store.Driver {
	case "redis":
		opt := redisstore.Options{
			Addresses:      cfg.Store.Redis.Addresses,
			Username:       cfg.Store.Redis.Username,
			DB:             cfg.Store.Redis.DB,
			SentinelMaster: cfg.Store.Redis.SentinelMaster,
			KeyPrefix:      cfg.Store.Redis.KeyPrefix,
			NodeID:         cfg.NodeID,
			Registerer:     reg,
			WaitReplicas:   cfg.Store.Redis.WaitReplicas,
			WaitTimeout:    cfg.Store.Redis.WaitTimeout,
		}
		if cfg.Store.Redis.PasswordFile != "" {
			pw, err := readSecret(cfg.Store.Redis.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("store.redis.password_file: %w", err)
			}
			opt.Password = pw
		}
		if cfg.Store.Redis.TLS {
			opt.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		st, err := redisstore.Open(octx, opt)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		// A MESSAGE answered 202 must survive a Redis crash: say so when
		// the server is not set up for that.
		if d, err := st.CheckDurability(octx); err == nil {
			for _, w := range d.Warnings() {
				log.Warn("stored messages are not durable", zap.String("reason", w))
			}
		}
		return st, nil
	default:
		st, err := embedded.Open(octx, embedded.Options{Path: cfg.Store.Embedded.Path, NodeID: cfg.NodeID, Registerer: reg})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return st, nil
	}
}

// readSecret reads the first line of a secret file.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line), nil
}

// proxyConfig maps the sip.* and upstream.* keys onto the proxy.
func proxyConfig(cfg *Config, log *zap.Logger, reg prometheus.Registerer) (proxy.Config, error) {
	pc := proxy.Config{
		NodeID:          cfg.NodeID,
		Advertise:       cfg.SIP.Advertise,
		TrustedSources:  cfg.TrustedPrefixes(),
		Upstream:        cfg.Upstream.URI,
		UpstreamDomains: cfg.Upstream.Domains,
		UpstreamProbe:   cfg.Upstream.OptionsInterval,
		MaxMessageBytes: cfg.SIP.MaxMessageBytes,
		Logger:          log.Named("proxy"),
		Registerer:      reg,
	}
	for _, l := range cfg.ListenURLs() {
		pc.Listen = append(pc.Listen, proxy.Listen{Network: l.Network, Addr: l.Addr})
		if l.Network == "tls" && pc.TLS == nil {
			cert, err := tls.LoadX509KeyPair(cfg.SIP.TLS.CertFile, cfg.SIP.TLS.KeyFile)
			if err != nil {
				return pc, fmt.Errorf("sip.tls: %w", err)
			}
			pc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: cfg.TLSMinVersion()}
		}
	}
	if len(pc.Listen) == 0 {
		return pc, errors.New("sip.listen: no listener")
	}
	return pc, nil
}
