package registrar

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/store"
)

// Mode is how sipwake registers devices at the PBX.
type Mode string

// Registration modes.
const (
	// ModePassthrough relays each device REGISTER to the PBX.
	ModePassthrough Mode = "passthrough"
	// ModeOnBehalf keeps registrations alive at the PBX for sleeping
	// devices.
	ModeOnBehalf Mode = "on_behalf"
)

// Config is the registrar's configuration (registrar.* and upstream.path).
type Config struct {
	// Mode is passthrough or on_behalf.
	Mode Mode
	// MinExpires is the shortest registration accepted (default 60s).
	MinExpires time.Duration
	// MaxExpires is the longest registration accepted (default 168h).
	MaxExpires time.Duration
	// DefaultExpires applies when the device asks for none (default 3600s).
	DefaultExpires time.Duration
	// MaxBindingsPerAOR caps the devices of one AOR (default 10).
	MaxBindingsPerAOR int
	// Path adds a Path header (RFC 3327) to forwarded REGISTERs.
	Path bool
	// NodeID names this node in the bindings it stores.
	NodeID string
}

// Registrar is the REGISTER module.
type Registrar struct {
	cfg      Config
	store    store.Store
	log      *zap.Logger
	metrics  *metrics
	tokenKey []byte // signs binding tokens; from the store, see Start

	nodeURIOnce sync.Once
	nodeURIText string // Flow.NodeURI of this node's bindings
}

var (
	_ proxy.Module  = (*Registrar)(nil)
	_ proxy.Readier = (*Registrar)(nil)
	_ proxy.Starter = (*Registrar)(nil)
)

// tokenSecret names the store secret that binding tokens derive from.
const tokenSecret = "binding-token"

// Start loads the binding-token key, shared by every node of the store
// and kept across restarts.
func (r *Registrar) Start(ctx context.Context) error {
	key, err := r.store.Secret(ctx, tokenSecret, 32)
	if err != nil {
		return fmt.Errorf("registrar: binding-token key: %w", err)
	}
	r.tokenKey = key
	return nil
}

// New constructs the registrar (no side effects).
func New(cfg Config, st store.Store, log *zap.Logger, reg prometheus.Registerer) (*Registrar, error) {
	if st == nil {
		return nil, errors.New("registrar: no store")
	}
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.Mode == "" {
		cfg.Mode = ModePassthrough
	}
	if cfg.MinExpires <= 0 {
		cfg.MinExpires = 60 * time.Second
	}
	if cfg.MaxExpires <= 0 {
		cfg.MaxExpires = 168 * time.Hour
	}
	if cfg.DefaultExpires <= 0 {
		cfg.DefaultExpires = time.Hour
	}
	if cfg.MaxBindingsPerAOR <= 0 {
		cfg.MaxBindingsPerAOR = 10
	}
	r := &Registrar{cfg: cfg, store: st, log: log}
	r.metrics = newMetrics(reg, st)
	return r, nil
}

// Name implements proxy.Module.
func (*Registrar) Name() string { return "registrar" }

// Ready implements proxy.Readier: the store must be reachable.
func (r *Registrar) Ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := r.store.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
