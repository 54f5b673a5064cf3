package push

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ErrClosed is wrapped by the *Error of pushes refused or dropped
// because the Dispatcher is closed.
var ErrClosed = errors.New("push: dispatcher closed")

// Defaults of DispatcherOptions.
const (
	DefaultQueueSize = 256
	DefaultWorkers   = 4
	DefaultTimeout   = 10 * time.Second
)

// Log field names (the shared vocabulary of INTERFACE.md "Logs").
const (
	fieldPNProvider = "pn_provider"
	fieldPNToken    = "pn_token"
	fieldCallID     = "call_id"
	fieldStatus     = "status"
	fieldDuration   = "duration"
)

// DispatcherOptions configure a Dispatcher.
type DispatcherOptions struct {
	// QueueSize is how many pushes may wait per provider; 0 means
	// DefaultQueueSize.
	QueueSize int
	// Workers is how many pushes run at once per provider; 0 means
	// DefaultWorkers.
	Workers int
	// Timeout bounds one push, from a worker taking it to the provider's
	// answer; 0 means DefaultTimeout.
	Timeout time.Duration
	// Registerer receives the sipwake_push_* metrics; nil registers
	// nothing.
	Registerer prometheus.Registerer
	// Logger logs the pushes (debug) and refused credentials (warn); nil
	// logs nothing.
	Logger *zap.Logger
}

// Dispatcher routes each push to the Notifier of its provider through a
// bounded queue and a few workers per provider, so that a provider that
// hangs or fails neither blocks the caller nor delays other providers.
// Targets whose provider has no Notifier of its own go to the fallback
// (the webhook), when one is set. It is safe for concurrent use.
type Dispatcher struct {
	opts    DispatcherOptions
	log     *zap.Logger
	metrics *metrics
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	stop    chan struct{}
	wg      sync.WaitGroup

	mu       sync.RWMutex
	lanes    map[string]*lane
	fallback *lane
	closed   bool
}

var _ Notifier = (*Dispatcher)(nil)

// lane is one provider's queue and workers.
type lane struct {
	name     string
	notifier Notifier
	queue    chan *job
	depth    prometheus.Gauge
}

// job is one queued push.
type job struct {
	n    *Notification
	ctx  context.Context // the caller's, for Notify; nil for Send
	done func(Result, error)
}

// NewDispatcher returns a Dispatcher with no provider: Register them,
// and SetFallback. A failure to register the metrics is logged; the
// Dispatcher works without them.
func NewDispatcher(opts DispatcherOptions) *Dispatcher {
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		log.Warn("push metrics not registered", zap.Error(err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Dispatcher{
		opts:    opts,
		log:     log,
		metrics: m,
		ctx:     ctx,
		cancel:  cancel,
		stop:    make(chan struct{}),
		lanes:   map[string]*lane{},
	}
}

// Register makes n the Notifier of provider (e.g. "apns" and "apns.dev"
// both to the APNs notifier, "fcm" to FCM) and starts its workers. A
// provider can be registered once.
func (d *Dispatcher) Register(provider string, n Notifier) error {
	if provider == "" || n == nil {
		return errors.New("push: register: provider and notifier are required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if _, dup := d.lanes[provider]; dup {
		return fmt.Errorf("push: register: provider %s already registered", provider)
	}
	d.lanes[provider] = d.startLane(provider, n)
	return nil
}

// SetFallback makes n the Notifier of targets whose provider has none of
// its own (the webhook). It can be set once.
func (d *Dispatcher) SetFallback(n Notifier) error {
	if n == nil {
		return errors.New("push: fallback: notifier is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.fallback != nil {
		return errors.New("push: fallback already set")
	}
	d.fallback = d.startLane(ProviderWebhook, n)
	return nil
}

// startLane creates a lane and its workers; d.mu is held.
func (d *Dispatcher) startLane(name string, n Notifier) *lane {
	l := &lane{
		name:     name,
		notifier: n,
		queue:    make(chan *job, d.opts.QueueSize),
		depth:    d.metrics.depth.WithLabelValues(name),
	}
	l.depth.Set(0)
	for _, t := range knownTypes {
		d.metrics.requests.WithLabelValues(name, string(t), resultOK, "")
	}
	d.wg.Add(d.opts.Workers)
	for range d.opts.Workers {
		go d.work(l)
	}
	return l
}

// Has reports whether a push for provider would be sent: it has a
// Notifier, or a fallback is set.
func (d *Dispatcher) Has(provider string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return !d.closed && (d.lanes[provider] != nil || d.fallback != nil)
}

// Send queues n for its provider and returns at once. done runs on a
// worker goroutine with the provider's verdict (an *Error on failure)
// and must not block for long. A non-nil error means nothing was queued
// and done will not run: an *Error with ReasonQueueFull when the
// provider's queue is full, ReasonNoProvider when no Notifier takes the
// target.
func (d *Dispatcher) Send(n *Notification, done func(Result, error)) error {
	return d.enqueue(&job{n: n, done: done})
}

// Notify sends n through its provider's queue and waits for the verdict
// or ctx, for `sipwake push test`. It implements Notifier.
func (d *Dispatcher) Notify(ctx context.Context, n *Notification) (Result, error) {
	type verdict struct {
		res Result
		err error
	}
	ch := make(chan verdict, 1)
	err := d.enqueue(&job{n: n, ctx: ctx, done: func(r Result, err error) { ch <- verdict{r, err} }})
	if err != nil {
		return Result{}, err
	}
	select {
	case v := <-ch:
		return v.res, v.err
	case <-ctx.Done():
		return Result{}, &Error{Provider: n.Target.Provider, Reason: ReasonTimeout, Err: ctx.Err()}
	}
}

func (d *Dispatcher) enqueue(j *job) error {
	if j.n == nil {
		return &Error{Reason: ReasonBadRequest, Detail: "no notification"}
	}
	provider := j.n.Target.Provider
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return &Error{Provider: provider, Reason: ReasonNoProvider, Detail: "dispatcher closed", Err: ErrClosed}
	}
	l := d.lanes[provider]
	if l == nil {
		l = d.fallback
	}
	if l == nil {
		d.count(j.n, ReasonNoProvider)
		return &Error{Provider: provider, Reason: ReasonNoProvider, Detail: "no notifier for provider " + provider}
	}
	select {
	case l.queue <- j:
		l.depth.Inc()
		return nil
	default:
		d.count(j.n, ReasonQueueFull)
		e := &Error{Provider: provider, Reason: ReasonQueueFull}
		d.logResult(j.n, Result{}, e, 0)
		return e
	}
}

// work runs l's pushes until Close.
func (d *Dispatcher) work(l *lane) {
	defer d.wg.Done()
	for {
		select {
		case <-d.stop:
			return
		case j := <-l.queue:
			l.depth.Dec()
			select {
			case <-d.stop:
				d.drop(j)
				continue
			default:
			}
			d.run(l, j)
		}
	}
}

// run sends one push and reports its verdict.
func (d *Dispatcher) run(l *lane, j *job) {
	n := j.n
	provider := n.Target.Provider
	ctx := d.ctx
	if j.ctx != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(j.ctx)
		defer cancel()
		defer context.AfterFunc(d.ctx, cancel)()
	}
	var res Result
	var err error
	switch {
	case ctx.Err() != nil:
		err = &Error{Provider: provider, Reason: ReasonTimeout, Detail: "gave up before sending", Err: ctx.Err()}
	case !n.Expiration.IsZero() && time.Now().After(n.Expiration):
		err = &Error{Provider: provider, Reason: ReasonTimeout, Detail: "expired in the queue"}
	default:
		ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
		start := time.Now()
		res, err = safeNotify(ctx, l.notifier, n)
		cancel()
		took := time.Since(start)
		d.metrics.duration.WithLabelValues(d.providerLabel(provider)).Observe(took.Seconds())
		if err != nil {
			err = asError(provider, err)
		}
		d.logResult(n, res, err, took)
	}
	d.count(n, ReasonOf(err))
	if j.done != nil {
		j.done(res, err)
	}
}

// safeNotify calls n.Notify, turning a panic into an error so that one
// bad push cannot take the daemon down.
func safeNotify(ctx context.Context, n Notifier, note *Notification) (res Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("push: notifier panic: %v", p)
		}
	}()
	return n.Notify(ctx, note)
}

// asError makes sure a failure is an *Error.
func asError(provider string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Provider: provider, Reason: ReasonOf(err), Err: err}
}

// drop fails a job that Close kept from running.
func (d *Dispatcher) drop(j *job) {
	if j.done != nil {
		j.done(Result{}, &Error{Provider: j.n.Target.Provider, Reason: ReasonNoProvider, Detail: "dispatcher closed", Err: ErrClosed})
	}
}

// Close stops the workers: pushes in flight are cancelled, queued ones
// fail with ErrClosed (their done runs), and later Sends are refused. It
// waits for the workers up to the push timeout.
func (d *Dispatcher) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	lanes := make([]*lane, 0, len(d.lanes)+1)
	for _, l := range d.lanes {
		lanes = append(lanes, l)
	}
	if d.fallback != nil {
		lanes = append(lanes, d.fallback)
	}
	d.mu.Unlock()
	close(d.stop)
	d.cancel()
	finished := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(d.opts.Timeout):
		d.log.Warn("push workers still busy at close")
	}
	for _, l := range lanes {
	drain:
		for {
			select {
			case j := <-l.queue:
				l.depth.Dec()
				d.drop(j)
			default:
				break drain
			}
		}
	}
	return nil
}

// Pruned counts a device token the caller removed after a permanent
// failure (sipwake_push_tokens_pruned_total).
func (d *Dispatcher) Pruned(provider, reason string) {
	d.metrics.pruned.WithLabelValues(d.providerLabel(provider), reasonLabel(reason)).Inc()
}

// providerLabel keeps the provider label to known values.
func (d *Dispatcher) providerLabel(p string) string {
	if slices.Contains(knownProviders, p) {
		return p
	}
	d.mu.RLock()
	_, ok := d.lanes[p]
	d.mu.RUnlock()
	if ok {
		return p
	}
	return labelOther
}

// count adds a push's outcome to sipwake_push_requests_total.
func (d *Dispatcher) count(n *Notification, reason string) {
	result := resultOK
	if reason != "" {
		result = resultError
	}
	d.metrics.requests.WithLabelValues(d.providerLabel(n.Target.Provider), typeLabel(n.Type), result,
		reasonLabel(reason)).Inc()
}

// logResult logs a push at debug, and refused credentials at warn: they
// fail every push until an operator acts. Callers log what a failure
// means for them.
func (d *Dispatcher) logResult(n *Notification, res Result, err error, took time.Duration) {
	level, msg := zapcore.DebugLevel, "push sent"
	if err != nil {
		msg = "push failed"
		if ReasonOf(err) == ReasonAuth {
			level = zapcore.WarnLevel
		}
	}
	ce := d.log.Check(level, msg)
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String(fieldPNProvider, n.Target.Provider),
		zap.String(fieldPNToken, Mask(n.Target.TokenFor(n.Type))),
		zap.String("push_type", string(n.Type)),
		zap.String("event", string(n.Payload.Event)),
	}
	if n.Payload.CallID != "" {
		fields = append(fields, zap.String(fieldCallID, n.Payload.CallID))
	}
	if res.Status != 0 {
		fields = append(fields, zap.Int(fieldStatus, res.Status))
	}
	if took > 0 {
		fields = append(fields, zap.Float64(fieldDuration, took.Seconds()))
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	ce.Write(fields...)
}
