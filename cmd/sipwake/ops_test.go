package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// startOps starts an ops server on 127.0.0.1:0 and stops it at the end of the test.
func startOps(t *testing.T, checks ...namedCheck) (*opsServer, string) {
	t.Helper()
	s, err := newOpsServer("127.0.0.1:0", newRegistry(), nil, checks...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s, "http://" + s.Addr().String()
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func get(t *testing.T, method, url string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

func readyz(t *testing.T, base string) (int, readyStatus) {
	t.Helper()
	code, body, hdr := get(t, http.MethodGet, base+"/readyz")
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("/readyz Content-Type %q", ct)
	}
	var st readyStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, st
}

func TestOpsLivez(t *testing.T) {
	s, base := startOps(t)
	for _, draining := range []bool{false, true} {
		s.SetDraining(draining)
		if code, body, _ := get(t, http.MethodGet, base+"/livez"); code != 200 || body != "ok\n" {
			t.Fatalf("/livez (draining %v) = %d %q", draining, code, body)
		}
	}
	if code, _, _ := get(t, http.MethodHead, base+"/livez"); code != 200 {
		t.Fatalf("HEAD /livez = %d", code)
	}
	if code, _, _ := get(t, http.MethodPost, base+"/livez"); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /livez = %d, want 405", code)
	}
	if code, _, _ := get(t, http.MethodGet, base+"/nope"); code != http.StatusNotFound {
		t.Fatalf("GET /nope = %d, want 404", code)
	}
}

func TestOpsReadyzTransitions(t *testing.T) {
	var storeErr atomic.Pointer[error]
	storeCheck := namedCheck{Name: "store", Check: func(ctx context.Context) error {
		if p := storeErr.Load(); p != nil {
			return *p
		}
		return nil
	}}
	s, base := startOps(t, storeCheck)

	type want struct {
		code    int
		failing []readyFailure
	}
	step := func(name string, w want) {
		t.Helper()
		code, st := readyz(t, base)
		wantStatus := "ready"
		if w.code != 200 {
			wantStatus = "not ready"
		}
		if code != w.code || st.Status != wantStatus || len(st.Failing) != len(w.failing) {
			t.Fatalf("%s: /readyz = %d %+v, want %d %+v", name, code, st, w.code, w.failing)
		}
		for i := range w.failing {
			if st.Failing[i] != w.failing[i] {
				t.Fatalf("%s: failing[%d] = %+v, want %+v", name, i, st.Failing[i], w.failing[i])
			}
		}
	}

	step("starting", want{503, []readyFailure{{"starting", "sipwake is starting"}}})
	s.SetStarted()
	step("started", want{200, nil})

	down := errors.New("dial tcp 127.0.0.1:6379: connection refused")
	storeErr.Store(&down)
	step("store down", want{503, []readyFailure{{"store", down.Error()}}})

	s.AddCheck(namedCheck{Name: "sip", Check: func(context.Context) error { return errors.New("no listener") }})
	step("two failing", want{503, []readyFailure{{"store", down.Error()}, {"sip", "no listener"}}})

	storeErr.Store(nil)
	s.SetDraining(true)
	step("draining", want{503, []readyFailure{{"draining", "sipwake is draining"}, {"sip", "no listener"}}})
}

func TestOpsReadyzCheckTimeout(t *testing.T) {
	s, err := newOpsServer("127.0.0.1:0", prometheus.NewRegistry(), nil, namedCheck{Name: "slow", Check: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}})
	if err != nil {
		t.Fatal(err)
	}
	s.SetStarted()
	// A request context that ends early bounds every check.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	failing := s.ready(ctx)
	if len(failing) != 1 || failing[0].Check != "slow" || failing[0].Error != context.DeadlineExceeded.Error() {
		t.Fatalf("failing = %+v", failing)
	}
}

func TestOpsMetrics(t *testing.T) {
	s, base := startOps(t)
	metrics := func() string {
		code, body, _ := get(t, http.MethodGet, base+"/metrics")
		if code != 200 {
			t.Fatalf("/metrics = %d", code)
		}
		return body
	}
	body := metrics()
	bi := currentBuildInfo()
	for _, want := range []string{
		`sipwake_build_info{commit="` + bi.Commit + `",go_version="` + runtime.Version() + `",sip_library="github.com/emiago/sipgo v`,
		"sipwake_draining 0\n",
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	s.SetDraining(true)
	if body := metrics(); !strings.Contains(body, "sipwake_draining 1\n") {
		t.Errorf("/metrics while draining lacks sipwake_draining 1")
	}
}

func TestOpsRegistersOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newOpsServer(":0", reg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := newOpsServer(":0", reg, nil); err == nil {
		t.Fatal("a second ops server on the same registry registered its metrics again")
	}
}

func TestOpsLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := newOpsServer("127.0.0.1:0", prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Fatal("Addr before Start is not nil")
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	if err := s.Start(ctx); err == nil {
		t.Fatal("second Start succeeded")
	}

	// The port is bound once Start returns: a second server on it fails in Start.
	other, err := newOpsServer(addr, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(ctx); err == nil {
		_ = other.Shutdown(ctx)
		t.Fatal("Start on a bound port succeeded")
	} else if !strings.HasPrefix(err.Error(), "ops: listen: ") {
		t.Fatalf("bind error %q", err)
	}

	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still accepting after Shutdown")
	}
}

func TestMakeBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.99",
		Main:      debug.Module{Path: "github.com/sipwake/sipwake", Version: "v1.2.3"},
		Deps: []*debug.Module{
			{Path: "github.com/spf13/cobra", Version: "v1.10.2"},
			{Path: "github.com/emiago/sipgo", Version: "v1.7.2"},
		},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}},
	}
	tests := []struct {
		name     string
		ver, rev string
		bi       *debug.BuildInfo
		ok       bool
		want     buildInfo
	}{
		{"from build info", "", "", bi, true, buildInfo{"v1.2.3", "abc123-dirty", "go1.99", "github.com/emiago/sipgo v1.7.2"}},
		{"ldflags win", "v9.9.9", "fff", bi, true, buildInfo{"v9.9.9", "fff", "go1.99", "github.com/emiago/sipgo v1.7.2"}},
		{"no build info", "", "", nil, false, buildInfo{"devel", "unknown", runtime.Version(), "github.com/emiago/sipgo unknown"}},
		{"devel and replaced sipgo", "", "", &debug.BuildInfo{
			Main: debug.Module{Version: "(devel)"},
			Deps: []*debug.Module{{Path: "github.com/emiago/sipgo", Version: "v1.7.2", Replace: &debug.Module{Path: "../sipgo", Version: "v1.8.0-fork"}}},
		}, true, buildInfo{"devel", "unknown", runtime.Version(), "github.com/emiago/sipgo v1.8.0-fork"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := makeBuildInfo(tt.ver, tt.rev, tt.bi, tt.ok); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
