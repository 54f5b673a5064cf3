package registrar

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/push"
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
	// NodeAddress is the host[:port] other nodes reach this one at for
	// the device connections it holds (Flow.NodeURI); empty: the
	// advertised address.
	NodeAddress string
	// UpstreamContacts is per_device (one sipwake contact per device at
	// the PBX, the default) or per_aor (one per AOR; sipwake forks).
	UpstreamContacts string
	// RefreshPush sends a push with event "register" to a device whose
	// registration nears expiry (it sent +sip.pnsreg, or is a legacy
	// client).
	RefreshPush bool
	// RefreshBefore is how long before expiry the refresh push goes, at
	// most (a third of a short registration otherwise); also the
	// +sip.pnsreg value (default 130s).
	RefreshBefore time.Duration
	// RefreshPushType is the iOS form of the refresh push: background
	// (default) or alert; never VoIP.
	RefreshPushType string
	// RefreshPushInterval is the least time between two refresh pushes to
	// one device (default 5m).
	RefreshPushInterval time.Duration
	// InactivityTimeout ends the on-behalf registration of a device that
	// has not registered by itself for this long (default 168h; 0 never).
	InactivityTimeout time.Duration
	// OnBehalf configures on-behalf mode.
	OnBehalf OnBehalfConfig
	// Keyring seals and opens stored credentials; nil when no key is
	// configured.
	Keyring *Keyring
	// Server is the proxy the keeper sends its REGISTERs through.
	Server *proxy.Server
	// Pusher sends refresh and login pushes.
	Pusher Pusher
}

// Upstream contact layouts.
const (
	PerDevice = "per_device"
	PerAOR    = "per_aor"
)

// How the PBX accepts sipwake's own REGISTERs in on-behalf mode.
const (
	// AuthCredentials: sipwake answers the PBX's challenge with the
	// account's stored HA1.
	AuthCredentials = "credentials"
	// AuthTrusted: the PBX trusts sipwake's address or TLS client
	// certificate and does not challenge its REGISTERs.
	AuthTrusted = "trusted"
)

// OnBehalfConfig is registrar.on_behalf.
type OnBehalfConfig struct {
	// Auth is how the PBX accepts sipwake's REGISTERs: credentials
	// (default) or trusted. An AOR with stored credentials always uses
	// them.
	Auth string
	// Domains overrides Auth per AOR domain.
	Domains map[string]string
	// MaxAuthFailures: this many refusals (401/403/407) in a row stop the
	// refreshes until the device registers by itself (default 3).
	MaxAuthFailures int
	// WipeOnAuthFailure deletes the stored credentials when that happens.
	WipeOnAuthFailure bool
	// WipeOnInactivity deletes them when the device went silent for
	// InactivityTimeout.
	WipeOnInactivity bool
	// Concurrency caps the REGISTERs in flight (default 256).
	Concurrency int
}

// Pusher queues pushes without blocking (push.Dispatcher).
type Pusher interface {
	// Send queues n; done runs with the provider's verdict. A non-nil
	// error means nothing was queued.
	Send(n *push.Notification, done func(push.Result, error)) error
}

// Registrar is the REGISTER module.
type Registrar struct {
	cfg      Config
	store    store.Store
	log      *zap.Logger
	metrics  *metrics
	tokenKey []byte // signs binding tokens; from the store, see Start
	tokens   *tokenMACs
	keeper   *keeper

	nodeURIOnce sync.Once
	nodeURIText string // Flow.NodeURI of this node's bindings
}

var (
	_ proxy.Module  = (*Registrar)(nil)
	_ proxy.Readier = (*Registrar)(nil)
	_ proxy.Starter = (*Registrar)(nil)
	_ proxy.Stopper = (*Registrar)(nil)
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
	r.tokenKey, r.tokens = key, newTokenMACs(key)
	r.startKeeper()
	return nil
}

// Stop stops the keeper (records in hand are finished first).
func (r *Registrar) Stop(context.Context) error {
	r.stopKeeper()
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
	switch cfg.UpstreamContacts {
	case "":
		cfg.UpstreamContacts = PerDevice
	case PerDevice, PerAOR:
	default:
		return nil, fmt.Errorf("registrar: upstream contacts %q is not %s or %s", cfg.UpstreamContacts, PerDevice, PerAOR)
	}
	switch cfg.Mode {
	case ModePassthrough, ModeOnBehalf:
	default:
		return nil, fmt.Errorf("registrar: mode %q is not %s or %s", cfg.Mode, ModePassthrough, ModeOnBehalf)
	}
	if cfg.RefreshBefore <= 0 {
		cfg.RefreshBefore = 130 * time.Second
	}
	switch cfg.RefreshPushType {
	case "":
		cfg.RefreshPushType = "background"
	case "background", "alert":
	default:
		return nil, fmt.Errorf("registrar: refresh push type %q is not background or alert", cfg.RefreshPushType)
	}
	if cfg.RefreshPushInterval <= 0 {
		cfg.RefreshPushInterval = 5 * time.Minute
	}
	if cfg.InactivityTimeout < 0 {
		cfg.InactivityTimeout = 0
	}
	if cfg.OnBehalf.Auth == "" {
		cfg.OnBehalf.Auth = AuthCredentials
	}
	if a := cfg.OnBehalf.Auth; a != AuthCredentials && a != AuthTrusted {
		return nil, fmt.Errorf("registrar: on-behalf auth %q is not %s or %s", a, AuthCredentials, AuthTrusted)
	}
	domains := make(map[string]string, len(cfg.OnBehalf.Domains))
	for d, a := range cfg.OnBehalf.Domains {
		if a != AuthCredentials && a != AuthTrusted {
			return nil, fmt.Errorf("registrar: on-behalf auth %q for domain %s is not %s or %s", a, d, AuthCredentials, AuthTrusted)
		}
		domains[strings.ToLower(d)] = a
	}
	cfg.OnBehalf.Domains = domains
	if cfg.OnBehalf.MaxAuthFailures <= 0 {
		cfg.OnBehalf.MaxAuthFailures = 3
	}
	if cfg.OnBehalf.Concurrency <= 0 {
		cfg.OnBehalf.Concurrency = 256
	}
	if cfg.Pusher == nil {
		cfg.RefreshPush = false
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
