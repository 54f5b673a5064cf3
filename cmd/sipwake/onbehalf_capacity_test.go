//go:build sipbench

package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/storetest"
)

// countingStore counts the store operations the keeper makes.
type countingStore struct {
	store.Store
	claims, claimed, bindings, regs, puts, accounts atomic.Int64
}

func (c *countingStore) ClaimDue(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]store.Registration, error) {
	c.claims.Add(1)
	rs, err := c.Store.ClaimDue(ctx, now, lease, limit)
	c.claimed.Add(int64(len(rs)))
	return rs, err
}

func (c *countingStore) BindingByToken(ctx context.Context, token string) (store.Binding, error) {
	c.bindings.Add(1)
	return c.Store.BindingByToken(ctx, token)
}

func (c *countingStore) Registration(ctx context.Context, token string) (store.Registration, error) {
	c.regs.Add(1)
	return c.Store.Registration(ctx, token)
}

func (c *countingStore) PutRegistration(ctx context.Context, r store.Registration, check bool) (uint64, error) {
	c.puts.Add(1)
	return c.Store.PutRegistration(ctx, r, check)
}

func (c *countingStore) Account(ctx context.Context, aor string) (store.Account, error) {
	c.accounts.Add(1)
	return c.Store.Account(ctx, aor)
}

func benchEnvInt(t *testing.T, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return n
	}
	return def
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestOnBehalfCapacity measures how many on-behalf accounts one node
// keeps registered at a PBX granting 60 s (Kamailio, on this machine),
// and what one refresh costs: CPU of the sipwake process and store
// operations. Run with `make bench-onbehalf`:
//
//	SIPWAKE_BENCH_ACCOUNTS  accounts (default 10000)
//	SIPWAKE_BENCH_AUTH      credentials (default) or trusted
//	SIPWAKE_BENCH_SECONDS   steady-state seconds watched (default 120)
//
// The accounts are seeded straight into a real Redis (bindings, sealed
// credentials, records due over the first 40 s, as after a day of
// devices registering); sipwake then keeps every one alive by itself.
// A lapse is any moment the PBX's location holds fewer contacts than
// accounts after the first refresh round.
func TestOnBehalfCapacity(t *testing.T) {
	n := benchEnvInt(t, "SIPWAKE_BENCH_ACCOUNTS", 10000)
	secs := benchEnvInt(t, "SIPWAKE_BENCH_SECONDS", 120)
	auth := os.Getenv("SIPWAKE_BENCH_AUTH")
	if auth == "" {
		auth = registrar.AuthCredentials
	}
	users := make(map[string]string, n)
	for i := range n {
		u := strconv.Itoa(100000 + i)
		users[u] = "pw" + u
	}
	kopts := testpeers.KamailioOptions{Users: users, Quiet: true, Children: 4, ShmMB: 256, MaxExpires: pbxExpiry}
	if auth == registrar.AuthTrusted {
		kopts.TrustedSources = []string{"127.0.0.1"}
	}
	kam := startPBX(t, kopts)
	redis := storetest.StartRedis(t)
	cfg := e2eConfig(t, kam, t.TempDir())
	cfg.Log.Level = "warn"
	cfg.Store.Driver = "redis"
	cfg.Store.Redis.Addresses = []string{redis}
	cfg.Registrar.Mode = "on_behalf"
	cfg.Registrar.OnBehalf.Auth = auth
	cfg.Registrar.RefreshPush = false
	cfg.Registrar.Credentials.KeyFile = writeKeyFile(t)
	counting := &countingStore{}
	sw := startDaemonWith(t, cfg, context.WithValue(context.Background(), storeWrapKey{},
		func(s store.Store) store.Store { counting.Store = s; return counting }))
	e := &wakeEnv{kam: kam, sw: sw}

	// Seed: what n devices registering over a day leave in the store.
	seedStart := time.Now()
	keyring := e.keyring(t)
	var wg sync.WaitGroup
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	now := time.Now()
	var seedErr atomic.Value
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := range next {
				u := strconv.Itoa(100000 + i)
				aor := "sip:" + u + "@pbx.test"
				tok := registrar.NewBindingToken()
				b := store.Binding{AOR: aor, Instance: "urn:bench:" + u, Contact: "sip:" + u + "@127.0.0.1:9", Source: "127.0.0.1:9",
					Transport: "tcp", Token: tok, Expires: now.Add(24 * time.Hour), LastSeen: now,
					Push: &store.PushTarget{Provider: "fcm", Token: "bench-token-" + u, Param: fcmProject}}
				if _, err := counting.Store.PutBinding(ctx, b, 10); err != nil {
					seedErr.Store(err)
					return
				}
				if auth == registrar.AuthCredentials {
					h, _ := registrar.HA1(registrar.AlgMD5, u, "pbx.test", "pw"+u)
					a, err := keyring.Seal(aor, registrar.Credentials{Username: u, HA1: []registrar.Credential{{Realm: "pbx.test", Algorithm: registrar.AlgMD5, HA1: h}}}, now)
					if err == nil {
						err = counting.Store.PutAccount(ctx, a)
					}
					if err != nil {
						seedErr.Store(err)
						return
					}
				}
				due := now.Add(time.Duration(i) * 40 * time.Second / time.Duration(n))
				r := store.Registration{Token: tok, AOR: aor, Instance: b.Instance, OnBehalf: true, Transport: "udp",
					CallID: fmt.Sprintf("sw-bench-%d", i), Expires: now, Granted: pbxExpiry, DeviceExpires: b.Expires,
					LastSeen: now, RefreshAt: due, Due: due, State: store.RegActive}
				if _, err := counting.Store.PutRegistration(ctx, r, false); err != nil {
					seedErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := seedErr.Load().(error); ok {
		t.Fatal(err)
	}
	t.Logf("%d accounts seeded (%s) in %s", n, auth, time.Since(seedStart).Round(time.Millisecond))

	// First round: every account registered within the 40 s it was
	// spread over (plus slack).
	deadline := time.Now().Add(90 * time.Second)
	for pbxStat(t, kam, "usrloc:location_contacts") < n {
		if time.Now().After(deadline) {
			t.Fatalf("after the first round the PBX holds %d of %d", pbxStat(t, kam, "usrloc:location_contacts"), n)
		}
		time.Sleep(time.Second)
	}
	metric := func(name string) float64 {
		_, body := httpGet(t, "http://"+sw.ops.Addr().String()+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, name+" ") {
				v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
				return v
			}
		}
		return 0
	}
	okName := `sipwake_registrar_upstream_refreshes_total{result="ok"}`
	c0 := counting.claims.Load()
	cl0, b0, r0, p0, a0 := counting.claimed.Load(), counting.bindings.Load(), counting.regs.Load(), counting.puts.Load(), counting.accounts.Load()
	ok0 := metric(okName)
	cpu0, wall0 := cpuTime(), time.Now()
	runtime.GC()
	lapses, fewest := 0, n
	for time.Since(wall0) < time.Duration(secs)*time.Second {
		held := pbxStat(t, kam, "usrloc:location_contacts")
		if held < n {
			lapses++
			fewest = min(fewest, held)
		}
		time.Sleep(2 * time.Second)
	}
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	refreshes := metric(okName) - ok0
	failed := 0.0
	for _, r := range []string{"auth_failed", "rejected", "timeout"} {
		failed += metric(`sipwake_registrar_upstream_refreshes_total{result="` + r + `"}`)
	}
	if refreshes == 0 {
		t.Fatal("no refresh in the window")
	}
	per := func(v int64) float64 { return float64(v) / refreshes }
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("accounts %d, auth %s, window %s: %.0f refreshes (%.1f/s, expected %.1f/s), %.0f failed",
		n, auth, wall.Round(time.Second), refreshes, refreshes/wall.Seconds(), float64(n)/40, failed)
	t.Logf("sipwake process CPU %.1f%% of one core: %.0f µs per refresh (test harness included)",
		100*cpu.Seconds()/wall.Seconds(), float64(cpu.Microseconds())/refreshes)
	t.Logf("store operations per refresh: %.2f in total (claims %.3f [%.1f records per claim], binding lookups %.2f, record reads %.2f, record writes %.2f, account reads %.2f)",
		per(counting.claims.Load()-c0+counting.bindings.Load()-b0+counting.regs.Load()-r0+counting.puts.Load()-p0+counting.accounts.Load()-a0),
		per(counting.claims.Load()-c0), float64(counting.claimed.Load()-cl0)/float64(max(1, counting.claims.Load()-c0)),
		per(counting.bindings.Load()-b0), per(counting.regs.Load()-r0), per(counting.puts.Load()-p0), per(counting.accounts.Load()-a0))
	t.Logf("heap in use %d MiB; PBX checks with a lapse: %d (fewest contacts %d)", ms.HeapInuse>>20, lapses, fewest)
	if lapses > 0 || failed > 0 {
		t.Errorf("%d accounts: %d lapses, %.0f failed refreshes", n, lapses, failed)
	}
}
