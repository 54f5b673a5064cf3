package redis

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
)

// Timeouts the store sets on the client.
const (
	// OpenTimeout bounds Open's first PING when ctx has no earlier
	// deadline.
	OpenTimeout = 5 * time.Second
	// dialTimeout, readTimeout and writeTimeout bound each network step,
	// so that a dead server fails a call in seconds rather than hanging.
	dialTimeout  = 3 * time.Second
	readTimeout  = 3 * time.Second
	writeTimeout = 3 * time.Second
)

// Connection pool defaults applied to zero Options fields.
const (
	// DefaultPoolSize is the default Options.PoolSize. go-redis's own
	// default (10 per CPU) left REGISTER bursts waiting for a connection
	// on small hosts; 64 covers the request path's concurrency.
	DefaultPoolSize = 64
	// DefaultMinIdleConns is the default Options.MinIdleConns: a few
	// connections kept open so that a burst after a quiet period does not
	// pay for dials and handshakes (TLS, AUTH, CLIENT SETNAME).
	DefaultMinIdleConns = 4
)

// Replication-wait bounds for Options.WaitTimeout.
const (
	// DefaultWaitTimeout is the WAIT timeout when Options.WaitReplicas is
	// set and Options.WaitTimeout is zero.
	DefaultWaitTimeout = time.Second
	// MaxWaitTimeout is the longest Options.WaitTimeout accepted: WAIT
	// runs in the same round trip as the write, which the client's read
	// timeout (3 s) bounds.
	MaxWaitTimeout = 2 * time.Second
)

// Options configures Open. The mode follows go-redis NewUniversalClient:
// SentinelMaster set → Sentinel (Addresses are the sentinels); else several
// Addresses or Cluster → Cluster (Addresses are seed nodes); else a single
// server.
type Options struct {
	// Addresses are "host:port" of the server, the sentinels or the
	// cluster seed nodes. Required.
	Addresses []string
	// Username and Password authenticate to the server (ACL user, or
	// password only). With Sentinel they apply to the primary, not to the
	// sentinels.
	Username string
	Password string
	// DB is the database number; must be 0 in Cluster mode.
	DB int
	// SentinelMaster is the primary's name known to the sentinels.
	SentinelMaster string
	// Cluster forces Cluster mode with a single seed address (e.g. a
	// managed cluster's configuration endpoint). Several Addresses without
	// SentinelMaster mean Cluster anyway.
	Cluster bool
	// TLS, when not nil, enables TLS with this configuration.
	TLS *tls.Config
	// KeyPrefix starts every key and the events channel, so several
	// deployments can share one Redis. Empty means DefaultKeyPrefix. It
	// must not contain '{' or '}' (they would change the Cluster hash tag).
	KeyPrefix string
	// NodeID names this node in binding-change events. Required.
	NodeID string
	// Registerer receives the store's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// PoolSize caps the connections the client keeps to the server (to
	// each primary in Cluster mode); a call waits for a free one beyond
	// that. Zero means DefaultPoolSize; negative is refused. Subscriptions
	// use connections of their own, outside the pool.
	PoolSize int
	// MinIdleConns is how many idle connections the pool keeps open ahead
	// of demand (per primary in Cluster mode), at most PoolSize. Zero means
	// DefaultMinIdleConns; negative means none.
	MinIdleConns int
	// WaitReplicas, when positive, makes PutMessage send WAIT WaitReplicas
	// WaitTimeout right after its write, on the same connection, and fail
	// unless that many replicas acknowledged the message (see README.md,
	// Durability: with appendfsync everysec this is what keeps a message
	// answered 202 through the loss of the primary). Zero sends no WAIT;
	// negative is refused.
	WaitReplicas int
	// WaitTimeout bounds that WAIT: zero means DefaultWaitTimeout, at most
	// MaxWaitTimeout, negative is refused. Ignored without WaitReplicas.
	WaitTimeout time.Duration
}

// waitTimeout returns the effective WAIT timeout, at least a millisecond
// (WAIT counts milliseconds, and 0 would block for ever).
func (opt Options) waitTimeout() time.Duration {
	if opt.WaitTimeout == 0 {
		return DefaultWaitTimeout
	}
	return max(opt.WaitTimeout, time.Millisecond)
}

// isCluster reports whether opt selects Cluster mode.
func (opt Options) isCluster() bool {
	return opt.SentinelMaster == "" && (opt.Cluster || len(opt.Addresses) > 1)
}

// prefix returns the effective key prefix.
func (opt Options) prefix() string {
	if opt.KeyPrefix == "" {
		return DefaultKeyPrefix
	}
	return opt.KeyPrefix
}

// universalOptions validates opt and translates it to go-redis options.
// It is pure: no connection is made.
func universalOptions(opt Options) (*goredis.UniversalOptions, error) {
	switch {
	case len(opt.Addresses) == 0:
		return nil, errors.New("at least one address is required")
	case slices.Contains(opt.Addresses, ""):
		return nil, errors.New("empty address")
	case opt.NodeID == "":
		return nil, errors.New("node id is required")
	case strings.ContainsAny(opt.KeyPrefix, "{}"):
		return nil, errors.New("key prefix must not contain '{' or '}'")
	case opt.SentinelMaster != "" && opt.Cluster:
		return nil, errors.New("sentinel master and cluster mode are exclusive")
	case opt.isCluster() && opt.DB != 0:
		return nil, errors.New("db must be 0 in cluster mode")
	case opt.DB < 0:
		return nil, errors.New("db must not be negative")
	case opt.PoolSize < 0:
		return nil, errors.New("pool size must not be negative")
	case opt.WaitReplicas < 0:
		return nil, errors.New("wait replicas must not be negative")
	case opt.WaitTimeout < 0:
		return nil, errors.New("wait timeout must not be negative")
	case opt.WaitTimeout > MaxWaitTimeout:
		return nil, fmt.Errorf("wait timeout %s exceeds the maximum %s", opt.WaitTimeout, MaxWaitTimeout)
	}
	poolSize := opt.PoolSize
	if poolSize == 0 {
		poolSize = DefaultPoolSize
	}
	minIdle := opt.MinIdleConns
	switch {
	case minIdle == 0:
		minIdle = DefaultMinIdleConns
	case minIdle < 0:
		minIdle = 0
	}
	minIdle = min(minIdle, poolSize)
	return &goredis.UniversalOptions{
		Addrs:                 slices.Clone(opt.Addresses),
		ClientName:            clientName(opt.NodeID),
		DB:                    opt.DB,
		Username:              opt.Username,
		Password:              opt.Password,
		MasterName:            opt.SentinelMaster,
		IsClusterMode:         opt.Cluster,
		TLSConfig:             opt.TLS,
		DialTimeout:           dialTimeout,
		ReadTimeout:           readTimeout,
		WriteTimeout:          writeTimeout,
		ContextTimeoutEnabled: true,
		PoolSize:              poolSize,
		MinIdleConns:          minIdle,
	}, nil
}

// clientName is the CLIENT SETNAME value: "sipwake-<node>" with characters
// Redis refuses in a client name (spaces, newlines) replaced.
func clientName(node string) string {
	b := []byte("sipwake-" + node)
	for i, c := range b {
		if c <= ' ' || c >= 0x7f {
			b[i] = '_'
		}
	}
	return string(b)
}
