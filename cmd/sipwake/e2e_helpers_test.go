package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/store"
)

// pbxIP is where the test PBX listens: a loopback address of its own, so
// that sip.trusted_sources can tell it from the devices on 127.0.0.1.
const pbxIP = "127.0.0.2"

// running is a sipwake daemon started in-process by startDaemon.
type running struct {
	*daemon
	cfg    *Config
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
	stop   sync.Once
	// UDP, TCP and TLS are the bound SIP addresses ("127.0.0.1:port").
	UDP, TCP, TLS string
}

// syncBuffer collects the daemon's JSON log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// e2eConfig is a config for a daemon in front of kam, listening on
// random loopback ports, with its embedded store in dir.
func e2eConfig(t testing.TB, kam *testpeers.Kamailio, dir string) *Config {
	cfg := defaultConfig()
	cfg.NodeID = "e2e"
	cfg.Log.Level = "debug"
	cert, key := testpeers.SelfSignedCert(t, dir, "127.0.0.1", "localhost", "sipwake.test")
	cfg.SIP.Listen = []string{"udp://127.0.0.1:0", "tcp://127.0.0.1:0", "tls://127.0.0.1:0"}
	cfg.SIP.TLS.CertFile, cfg.SIP.TLS.KeyFile = cert, key
	cfg.SIP.TrustedSources = []string{pbxIP + "/32"}
	if kam != nil {
		cfg.Upstream.URI = "sip:" + kam.UDPAddr + ";transport=udp"
		cfg.Upstream.Domains = []string{kam.Domain}
	}
	// No OPTIONS probe: the tests count the requests sipwake sends
	// (TestE2EUpstreamProbe turns it on).
	cfg.Upstream.OptionsInterval = 0
	cfg.Store.Embedded.Path = filepath.Join(dir, "sipwake.db")
	cfg.Ops.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.3:0" // distinct from ops.listen
	cfg.Drain.Delay = 0
	cfg.Drain.Timeout = 5 * time.Second
	return cfg
}

// startDaemon runs serve with cfg in-process until the test ends.
func startDaemon(t testing.TB, cfg *Config) *running {
	t.Helper()
	return startDaemonWith(t, cfg, context.Background())
}

// startDaemonWith is startDaemon with serve's context derived from base
// (test hooks such as storeWrapKey).
func startDaemonWith(t testing.TB, cfg *Config, base context.Context) *running {
	t.Helper()
	if probs := cfg.Validate(); len(probs) > 0 {
		t.Fatalf("e2e config invalid: %v", probs)
	}
	logs := &syncBuffer{}
	log, level, err := newLogger(cfg.Log, logs)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan *daemon, 1)
	ctx, cancel := context.WithCancel(context.WithValue(base, serveHookKey{},
		func(d *daemon) { started <- d }))
	r := &running{cfg: cfg, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- runServe(ctx, cfg, log.Named("sipwake"), level) }()
	select {
	case d := <-started:
		r.daemon = d
	case err := <-r.done:
		cancel()
		t.Fatalf("sipwake did not start: %v\n%s", err, logs.String())
	case <-time.After(15 * time.Second):
		cancel()
		t.Fatalf("sipwake did not start in time\n%s", logs.String())
	}
	r.UDP, r.TCP, r.TLS = r.srv.Addr("udp"), r.srv.Addr("tcp"), r.srv.Addr("tls")
	t.Cleanup(func() {
		r.Stop(t)
		if t.Failed() {
			t.Logf("sipwake log (last 60 lines):\n%s", tail(logs.String(), 60))
		}
	})
	return r
}

// Stop ends the daemon (as SIGTERM would) and waits for it.
func (r *running) Stop(t testing.TB) {
	r.stop.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("serve returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("sipwake did not stop in time")
		}
	})
}

// bindings returns the live bindings of an AOR from the daemon's store.
func (r *running) bindings(t testing.TB, aor string) []store.Binding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bs, err := r.store.Bindings(ctx, aor)
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	return bs
}

// waitBindings polls until the AOR has n bindings.
func (r *running) waitBindings(t testing.TB, aor string, n int, d time.Duration) []store.Binding {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		bs := r.bindings(t, aor)
		if len(bs) == n {
			return bs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d bindings, want %d", aor, len(bs), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startPBX starts Kamailio as the PBX on pbxIP.
func startPBX(t testing.TB, opts testpeers.KamailioOptions) *testpeers.Kamailio {
	t.Helper()
	opts.ListenIP = pbxIP
	return testpeers.StartKamailio(t, opts)
}

// digestResponse computes an RFC 2617 digest response without qop.
func digestResponse(user, realm, password, method, uri, nonce string) string {
	h := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	return h(h(user+":"+realm+":"+password) + ":" + nonce + ":" + h(method+":"+uri))
}

// authorization renders an Authorization header value.
func authorization(user, realm, password, method, uri, nonce string) string {
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=MD5`,
		user, realm, nonce, uri, digestResponse(user, realm, password, method, uri, nonce))
}
