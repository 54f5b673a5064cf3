package push

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// stub is a Notifier whose behaviour a test sets.
type stub struct {
	name  string
	calls atomic.Int64
	fn    func(ctx context.Context, n *Notification) (Result, error)
}

func (s *stub) Notify(ctx context.Context, n *Notification) (Result, error) {
	s.calls.Add(1)
	if s.fn != nil {
		return s.fn(ctx, n)
	}
	return Result{ID: s.name, Status: 200}, nil
}

// hang blocks until ctx ends, like a provider that never answers.
func hang(ctx context.Context, _ *Notification) (Result, error) {
	<-ctx.Done()
	return Result{}, &Error{Reason: ReasonTimeout, Err: ctx.Err()}
}

func newTestDispatcher(t *testing.T, opts DispatcherOptions) (*Dispatcher, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	d := NewDispatcher(opts)
	t.Cleanup(func() { _ = d.Close() })
	return d, reg
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func note(provider string) *Notification {
	return &Notification{
		Target:  Target{Provider: provider, Token: "token-" + provider + "-0123456789", Param: "x"},
		Type:    TypeVoIP,
		Payload: Payload{Event: EventCall, CallID: "cid-1"},
	}
}

// verdicts collects done callbacks.
type verdicts struct {
	ch chan verdict
}

type verdict struct {
	res Result
	err error
}

func newVerdicts() *verdicts { return &verdicts{ch: make(chan verdict, 1000)} }

func (v *verdicts) done(r Result, err error) { v.ch <- verdict{r, err} }

func (v *verdicts) next(t *testing.T, within time.Duration) verdict {
	t.Helper()
	select {
	case got := <-v.ch:
		return got
	case <-time.After(within):
		t.Fatalf("no verdict within %v", within)
		return verdict{}
	}
}

// value reads a metric from reg; labels are name=value pairs.
func value(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelValue(m, labels[i]) != labels[i+1] {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestDispatcherRoutes(t *testing.T) {
	d, _ := newTestDispatcher(t, DispatcherOptions{})
	apple, google, hook := &stub{name: "apns"}, &stub{name: "fcm"}, &stub{name: "webhook"}
	must(t, d.Register(ProviderAPNs, apple))
	must(t, d.Register(ProviderAPNsDev, apple))
	must(t, d.Register(ProviderFCM, google))
	if err := d.Register(ProviderFCM, google); err == nil {
		t.Errorf("a provider was registered twice")
	}
	if d.Has(ProviderWebPush) {
		t.Errorf("Has(webpush) without a fallback")
	}
	var e *Error
	if err := d.Send(note(ProviderWebPush), nil); !errors.As(err, &e) || e.Reason != ReasonNoProvider {
		t.Errorf("webpush without fallback: %v, want no_provider", err)
	}
	must(t, d.SetFallback(hook))
	for _, p := range []string{ProviderAPNs, ProviderAPNsDev, ProviderFCM, ProviderWebPush, "other"} {
		if !d.Has(p) {
			t.Errorf("Has(%s) = false", p)
		}
	}
	for _, tc := range []struct{ provider, want string }{
		{ProviderAPNs, "apns"}, {ProviderAPNsDev, "apns"}, {ProviderFCM, "fcm"}, {ProviderWebPush, "webhook"},
	} {
		res, err := d.Notify(context.Background(), note(tc.provider))
		if err != nil || res.ID != tc.want {
			t.Errorf("%s went to %q (%v), want %s", tc.provider, res.ID, err, tc.want)
		}
	}
	if apple.calls.Load() != 2 || google.calls.Load() != 1 || hook.calls.Load() != 1 {
		t.Errorf("calls apns %d fcm %d webhook %d", apple.calls.Load(), google.calls.Load(), hook.calls.Load())
	}
}

func TestDispatcherHangingProviderIsolated(t *testing.T) {
	d, reg := newTestDispatcher(t, DispatcherOptions{QueueSize: 4, Workers: 2, Timeout: 20 * time.Second})
	started := make(chan struct{}, 10)
	must(t, d.Register(ProviderAPNs, &stub{fn: func(ctx context.Context, n *Notification) (Result, error) {
		started <- struct{}{}
		return hang(ctx, n)
	}}))
	must(t, d.Register(ProviderFCM, &stub{name: "fcm"}))
	v := newVerdicts()
	// Fill APNs: 2 in flight, 4 queued, the rest refused at once.
	accepted, full := 0, 0
	for i := range 10 {
		start := time.Now()
		err := d.Send(note(ProviderAPNs), v.done)
		if took := time.Since(start); took > 100*time.Millisecond {
			t.Errorf("Send blocked for %v", took)
		}
		switch ReasonOf(err) {
		case "":
			accepted++
		case ReasonQueueFull:
			full++
			if IsPermanent(err) {
				t.Errorf("queue full is not a dead token")
			}
		default:
			t.Fatalf("Send: %v", err)
		}
		if i == 1 { // both workers busy before the queue fills
			<-started
			<-started
		}
	}
	if accepted != 6 || full != 4 {
		t.Errorf("accepted %d refused %d, want 6 and 4 (2 workers + queue of 4)", accepted, full)
	}
	// FCM is not held up by APNs.
	fcmDone := newVerdicts()
	for range 20 {
		must(t, d.Send(note(ProviderFCM), fcmDone.done))
		if got := fcmDone.next(t, 2*time.Second); got.err != nil || got.res.ID != "fcm" {
			t.Fatalf("fcm verdict %+v", got)
		}
	}
	if got := value(t, reg, "sipwake_push_queue_depth", "provider", "apns"); got != 4 {
		t.Errorf("apns queue depth %v, want 4", got)
	}
	if got := value(t, reg, "sipwake_push_requests_total", "provider", "apns", "result", "error", "reason", "queue_full"); got != 4 {
		t.Errorf("queue_full count %v, want 4", got)
	}
	if got := value(t, reg, "sipwake_push_requests_total", "provider", "fcm", "push_type", "voip", "result", "ok"); got != 20 {
		t.Errorf("fcm ok count %v, want 20", got)
	}
}

func TestDispatcherTimeout(t *testing.T) {
	d, reg := newTestDispatcher(t, DispatcherOptions{Timeout: 100 * time.Millisecond})
	must(t, d.Register(ProviderAPNs, &stub{fn: hang}))
	v := newVerdicts()
	start := time.Now()
	must(t, d.Send(note(ProviderAPNs), v.done))
	got := v.next(t, 3*time.Second)
	if ReasonOf(got.err) != ReasonTimeout {
		t.Errorf("verdict %v, want timeout", got.err)
	}
	if took := time.Since(start); took < 90*time.Millisecond || took > 2*time.Second {
		t.Errorf("timed out after %v, want about 100ms", took)
	}
	if got := value(t, reg, "sipwake_push_request_duration_seconds", "provider", "apns"); got != 1 {
		t.Errorf("duration samples %v, want 1", got)
	}
}

func TestDispatcherExpiredInQueue(t *testing.T) {
	d, _ := newTestDispatcher(t, DispatcherOptions{})
	s := &stub{}
	must(t, d.Register(ProviderFCM, s))
	n := note(ProviderFCM)
	n.Expiration = time.Now().Add(-time.Second)
	v := newVerdicts()
	must(t, d.Send(n, v.done))
	if got := v.next(t, 2*time.Second); ReasonOf(got.err) != ReasonTimeout {
		t.Errorf("verdict %v, want timeout", got.err)
	}
	if s.calls.Load() != 0 {
		t.Errorf("an expired push was sent")
	}
}

func TestDispatcherNotify(t *testing.T) {
	d, _ := newTestDispatcher(t, DispatcherOptions{Workers: 1})
	release := make(chan struct{})
	must(t, d.Register(ProviderAPNs, &stub{fn: func(ctx context.Context, n *Notification) (Result, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return Result{Status: 200}, nil
	}}))
	// The only worker is busy: a Notify waiting behind it gives up with
	// its context.
	must(t, d.Send(note(ProviderAPNs), nil))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := d.Notify(ctx, note(ProviderAPNs)); ReasonOf(err) != ReasonTimeout {
		t.Errorf("Notify behind a busy worker: %v, want timeout", err)
	}
	close(release)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	if res, err := d.Notify(ctx2, note(ProviderAPNs)); err != nil || res.Status != 200 {
		t.Errorf("Notify: %+v %v", res, err)
	}
	if _, err := d.Notify(ctx2, note("nope")); ReasonOf(err) != ReasonNoProvider {
		t.Errorf("unknown provider: %v", err)
	}
}

func TestDispatcherErrorsAreClassified(t *testing.T) {
	d, _ := newTestDispatcher(t, DispatcherOptions{})
	calls := 0
	var mu sync.Mutex
	must(t, d.Register(ProviderFCM, &stub{fn: func(context.Context, *Notification) (Result, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		switch calls {
		case 1:
			panic("boom")
		case 2:
			return Result{}, errors.New("plain")
		}
		return Result{Status: 200}, nil
	}}))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for i, want := range []string{ReasonNetwork, ReasonNetwork, ""} {
		_, err := d.Notify(ctx, note(ProviderFCM))
		var e *Error
		if want != "" && (!errors.As(err, &e) || e.Reason != want || e.Provider != ProviderFCM) {
			t.Errorf("call %d: %#v, want an *Error %s", i+1, err, want)
		}
		if want == "" && err != nil {
			t.Errorf("call %d: %v", i+1, err)
		}
	}
}

func TestDispatcherClose(t *testing.T) {
	d, reg := newTestDispatcher(t, DispatcherOptions{Workers: 1, QueueSize: 5, Timeout: time.Minute})
	started := make(chan struct{}, 1)
	must(t, d.Register(ProviderAPNs, &stub{fn: func(ctx context.Context, n *Notification) (Result, error) {
		started <- struct{}{}
		return hang(ctx, n)
	}}))
	v := newVerdicts()
	for range 4 {
		must(t, d.Send(note(ProviderAPNs), v.done))
	}
	<-started
	start := time.Now()
	must(t, d.Close())
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v", took)
	}
	closed := 0
	for range 4 {
		got := v.next(t, time.Second)
		if errors.Is(got.err, ErrClosed) {
			closed++
		} else if ReasonOf(got.err) != ReasonTimeout {
			t.Errorf("in-flight push: %v, want cancelled", got.err)
		}
	}
	if closed != 3 {
		t.Errorf("%d queued pushes failed with ErrClosed, want 3", closed)
	}
	if err := d.Send(note(ProviderAPNs), v.done); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if err := d.Register(ProviderFCM, &stub{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Register after Close: %v", err)
	}
	if got := value(t, reg, "sipwake_push_queue_depth", "provider", "apns"); got != 0 {
		t.Errorf("queue depth %v after Close", got)
	}
	must(t, d.Close())
}

func TestDispatcherMetricsAndLogs(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	d, reg := newTestDispatcher(t, DispatcherOptions{Logger: zap.New(core)})
	const tok = "0123456789abcdef0123456789abcdefSECRET"
	must(t, d.Register(ProviderAPNs, &stub{fn: func(_ context.Context, n *Notification) (Result, error) {
		if n.Type == TypeAlert {
			return Result{Status: 410}, &Error{Provider: ProviderAPNs, Status: 410, Reason: ReasonUnregistered, Permanent: true}
		}
		if n.Type == TypeBackground {
			return Result{Status: 403}, &Error{Provider: ProviderAPNs, Status: 403, Reason: ReasonAuth}
		}
		return Result{Status: 200}, nil
	}}))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, typ := range []Type{TypeVoIP, TypeAlert, TypeBackground} {
		n := note(ProviderAPNs)
		n.Target.Token, n.Type = tok, typ
		_, _ = d.Notify(ctx, n)
	}
	d.Pruned(ProviderAPNs, ReasonUnregistered)
	d.Pruned("made-up", "whatever")
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sipwake_push_requests_total", []string{"provider", "apns", "push_type", "voip", "result", "ok", "reason", ""}, 1},
		{"sipwake_push_requests_total", []string{"provider", "apns", "push_type", "alert", "result", "error", "reason", "unregistered"}, 1},
		{"sipwake_push_requests_total", []string{"provider", "apns", "push_type", "background", "result", "error", "reason", "auth"}, 1},
		{"sipwake_push_requests_total", []string{"provider", "apns", "push_type", "alert", "result", "ok"}, 0},
		{"sipwake_push_request_duration_seconds", []string{"provider", "apns"}, 3},
		{"sipwake_push_tokens_pruned_total", []string{"provider", "apns", "reason", "unregistered"}, 1},
		{"sipwake_push_tokens_pruned_total", []string{"provider", "other", "reason", "other"}, 1},
		{"sipwake_push_queue_depth", []string{"provider", "apns"}, 0},
	} {
		if got := value(t, reg, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	entries := logs.All()
	if len(entries) != 3 {
		t.Fatalf("%d log lines, want 3", len(entries))
	}
	for i, want := range []struct {
		msg   string
		level zapcore.Level
	}{{"push sent", zapcore.DebugLevel}, {"push failed", zapcore.DebugLevel}, {"push failed", zapcore.WarnLevel}} {
		e := entries[i]
		if e.Message != want.msg || e.Level != want.level {
			t.Errorf("line %d: %s %q, want %s %q", i, e.Level, e.Message, want.level, want.msg)
		}
		f := e.ContextMap()
		if f["pn_provider"] != "apns" || f["pn_token"] != Mask(tok) || f["call_id"] != "cid-1" {
			t.Errorf("line %d fields %v", i, f)
		}
	}
	for _, e := range entries {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + strings.TrimSpace(stringOf(v))
		}
		if strings.Contains(line, tok[:20]) {
			t.Errorf("a log line holds the token: %s", line)
		}
	}
	if e := entries[1].ContextMap(); e["error"] == nil {
		t.Errorf("push failed without error field: %v", e)
	}
}

func stringOf(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return ""
}

func TestDispatcherSharedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := NewDispatcher(DispatcherOptions{Registerer: reg})
	b := NewDispatcher(DispatcherOptions{Registerer: reg})
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	a.Pruned(ProviderFCM, ReasonBadToken)
	b.Pruned(ProviderFCM, ReasonBadToken)
	if got := value(t, reg, "sipwake_push_tokens_pruned_total", "provider", "fcm"); got != 2 {
		t.Errorf("shared counter %v, want 2", got)
	}
}
