package wake

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/store"
)

// What an iOS device woken by a VoIP push gets when the call ended (caller
// CANCEL, answered elsewhere) before it registered again.
const (
	// DeliverInviteCancel sends it the INVITE immediately followed by a
	// CANCEL with the Reason, so the app can report the call to CallKit
	// and end it at once (iOS kills apps that take a VoIP push without
	// reporting a call). An alert push also says the call was missed.
	DeliverInviteCancel = "invite_cancel"
	// DeliverPushOnly sends only the alert push; the app must report and
	// end a CallKit call on its own when it finds no INVITE.
	DeliverPushOnly = "push_only"
)

// Store is what the module needs from the store.
type Store interface {
	Bindings(ctx context.Context, aor string) ([]store.Binding, error)
	ClearPush(ctx context.Context, aor, instance, token string) (bool, error)
	PutHeld(ctx context.Context, h store.HeldCall) error
	DeleteHeld(ctx context.Context, id string) error
	ListHeld(ctx context.Context, f store.HeldFilter) ([]store.HeldCall, error)
	Subscribe(ctx context.Context) (<-chan store.Event, error)
	Publish(ctx context.Context, e store.Event) error
	ClaimHeld(ctx context.Context, id, from, to string) (store.HeldCall, error)
	Heartbeat(ctx context.Context, node string, ttl time.Duration) error
	NodeAlive(ctx context.Context, node string) (bool, error)
	PutMessage(ctx context.Context, m store.StoredMessage) (bool, error)
	ListMessages(ctx context.Context, f store.MessageFilter) ([]store.StoredMessage, error)
	MessagesFor(ctx context.Context, aor, instance string, limit int) ([]store.StoredMessage, error)
	Acknowledge(ctx context.Context, id, instance string) (int, error)
	AddPending(ctx context.Context, id, instance string) error
	CountAttempt(ctx context.Context, id string) error
	DeleteMessage(ctx context.Context, id string) error
	Lease(ctx context.Context, key, node string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, key, node string) error
}

// Pusher queues pushes without blocking (push.Dispatcher).
type Pusher interface {
	// Send queues n; done runs with the provider's verdict. A non-nil
	// error means nothing was queued (and done does not run).
	Send(n *push.Notification, done func(push.Result, error)) error
}

// Router routes a request to a device through the node that owns its
// flow (registrar.Registrar).
type Router interface {
	OwnedElsewhere(b store.Binding) bool
	RelayTarget(b store.Binding, callID string) (proxy.Target, error)
}

// pruneCounter is the optional part of a Pusher that counts removed tokens.
type pruneCounter interface {
	Pruned(provider, reason string)
}

// Config configures the module.
type Config struct {
	// NodeID names this node in held-call records.
	NodeID string
	// HoldTimeout is how long an INVITE waits for woken devices (30s).
	HoldTimeout time.Duration
	// CallerFeedback is sent upstream while devices wake: "none", "110",
	// "180" or "183".
	CallerFeedback string
	// NoAnswerStatus is the final status when no device answered in time
	// (480).
	NoAnswerStatus int
	// MissedCallPush sends a call_missed push when a held call ends
	// unanswered.
	MissedCallPush bool
	// IncludeCaller puts the caller's URI and name in pushes.
	IncludeCaller bool
	// CancelledDelivery is DeliverInviteCancel or DeliverPushOnly.
	CancelledDelivery string
	// AwakePushDelay: a push-capable device whose TCP/TLS connection is
	// still open gets the INVITE at once and a push only if it has not
	// answered 180 or better after this delay (or its branch failed).
	AwakePushDelay time.Duration
	// MessageAcceptTimeout is how long a MESSAGE is offered to devices
	// with a live flow before it is stored and answered 202 (5s).
	MessageAcceptTimeout time.Duration
	// MessageTTL is how long a stored MESSAGE is kept for delivery; 0
	// turns store-and-forward off (MESSAGEs pass through).
	MessageTTL time.Duration
	// MessagePreview puts the start of a text message in its push.
	MessagePreview bool
	// MessageLateDelivery makes a device that registers for the AOR while
	// a message still waits for another device a target of it too.
	MessageLateDelivery bool
	// Router reaches devices whose flow another node owns (the
	// registrar); nil on a single node.
	Router Router
	// Server is the proxy, for answering calls of a lost node.
	Server *proxy.Server
	// Store, Pusher, Logger and Registerer are the module's dependencies.
	Store      Store
	Pusher     Pusher
	Logger     *zap.Logger
	Registerer prometheus.Registerer
}

// Wake is the module.
type Wake struct {
	cfg     Config
	log     *zap.Logger
	metrics *metrics

	mu    sync.Mutex
	calls map[string]map[*call]struct{} // by AOR
	// pushed remembers (Call-ID, device) pairs already pushed, until the
	// call's deadline: one push per device per call, also when the PBX
	// sends the same call again on another branch.
	pushed map[string]time.Time

	dl       deliverer
	adopting atomic.Bool
	started  time.Time
	wg       sync.WaitGroup
	stop     context.CancelFunc
	stopCh   chan struct{}
	stopOnce sync.Once
	events   <-chan store.Event
}

var (
	_ proxy.Module  = (*Wake)(nil)
	_ proxy.Starter = (*Wake)(nil)
	_ proxy.Stopper = (*Wake)(nil)
)

// New builds the module; nothing runs until Start.
func New(cfg Config) (*Wake, error) {
	if cfg.Store == nil {
		return nil, errors.New("wake: no store")
	}
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = 30 * time.Second
	}
	if cfg.NoAnswerStatus == 0 {
		cfg.NoAnswerStatus = 480
	}
	if cfg.NoAnswerStatus < 400 || cfg.NoAnswerStatus > 699 {
		return nil, fmt.Errorf("wake: no-answer status %d is not a failure status", cfg.NoAnswerStatus)
	}
	switch cfg.CallerFeedback {
	case "", "none", "110", "180", "183":
	default:
		return nil, fmt.Errorf("wake: caller feedback %q is not none, 110, 180 or 183", cfg.CallerFeedback)
	}
	switch cfg.CancelledDelivery {
	case "":
		cfg.CancelledDelivery = DeliverInviteCancel
	case DeliverInviteCancel, DeliverPushOnly:
	default:
		return nil, fmt.Errorf("wake: cancelled call delivery %q is not %s or %s", cfg.CancelledDelivery, DeliverInviteCancel, DeliverPushOnly)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	w := &Wake{
		cfg:    cfg,
		log:    cfg.Logger,
		calls:  map[string]map[*call]struct{}{},
		pushed: map[string]time.Time{},
		stopCh: make(chan struct{}),
		dl: deliverer{running: map[string]bool{}, again: map[string]bool{},
			retries: map[string]*retryState{}},
	}
	if cfg.MessageAcceptTimeout <= 0 {
		w.cfg.MessageAcceptTimeout = 5 * time.Second
	}
	w.metrics = newMetrics(cfg.Registerer)
	return w, nil
}

// Name implements proxy.Module.
func (w *Wake) Name() string { return "wake" }

// Start subscribes to binding changes (a woken device registering, on
// any node) and starts the node heartbeat.
func (w *Wake) Start(ctx context.Context) error {
	bg, cancel := context.WithCancel(context.Background())
	events, err := w.cfg.Store.Subscribe(bg)
	if err != nil {
		cancel()
		return fmt.Errorf("wake: subscribe to binding changes: %w", err)
	}
	w.stop = cancel
	w.events = events
	w.started = time.Now()
	w.wg.Add(3)
	go func() {
		defer w.wg.Done()
		w.watch(bg, events)
	}()
	go func() {
		defer w.wg.Done()
		if w.cfg.MessageTTL > 0 {
			w.messageHousekeeping(bg)
		}
	}()
	go func() {
		defer w.wg.Done()
		w.housekeeping(bg)
	}()
	return nil
}

// Stop ends the background work and answers the calls still held (503)
// so that no caller is left in silence.
func (w *Wake) Stop(ctx context.Context) error {
	w.stopOnce.Do(func() { close(w.stopCh) })
	if w.stop != nil {
		w.stop()
	}
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	// The held calls answer as soon as they see the stop: wait until they
	// have, so that their answers leave before the listeners close.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		w.mu.Lock()
		n := len(w.calls)
		w.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stopping is closed when the module stops: held calls answer at once.
func (w *Wake) stopping() <-chan struct{} { return w.stopCh }

// Held lists the calls this node holds, oldest first.
func (w *Wake) Held() []HeldInfo {
	w.mu.Lock()
	var out []HeldInfo
	for _, set := range w.calls {
		for c := range set {
			out = append(out, c.info())
		}
	}
	w.mu.Unlock()
	sortHeld(out)
	return out
}

// watch routes binding changes to the calls waiting for their AOR.
func (w *Wake) watch(ctx context.Context, events <-chan store.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return
			}
			switch e.Kind {
			case store.EventBindingPut:
				w.mu.Lock()
				for c := range w.calls[e.AOR] {
					c.notifyRegistered(e.Instance)
				}
				w.mu.Unlock()
				if w.cfg.MessageTTL > 0 && !e.NoMessages {
					go w.messagesOnRegister(e.AOR, e.Instance)
				}
			case store.EventResync:
				// Binding changes made while the subscription was down
				// were missed: held calls look again at their devices.
				w.mu.Lock()
				for _, set := range w.calls {
					for c := range set {
						c.recheck()
					}
				}
				w.mu.Unlock()
				if w.cfg.MessageTTL > 0 {
					w.messagesResync(ctx)
				}
			case store.EventHeldCancelled:
				if c := w.hasCall(e.Key); c != nil {
					select {
					case c.cancels <- nil: // nil: cancelled through another node
					default:
					}
				}
			}
		}
	}
}

// housekeeping beats the node's heartbeat, finishes the held calls of
// lost nodes and forgets old push dedupe entries.
func (w *Wake) housekeeping(ctx context.Context) {
	t := time.NewTicker(beat)
	defer t.Stop()
	lastScan := time.Time{}
	for {
		hctx, cancel := context.WithTimeout(ctx, beat)
		if err := w.cfg.Store.Heartbeat(hctx, w.cfg.NodeID, nodeTTL); err != nil && ctx.Err() == nil {
			w.log.Warn("heartbeat failed", zap.Error(err))
		}
		cancel()
		if time.Since(lastScan) >= scanEach && w.adopting.CompareAndSwap(false, true) {
			// On its own goroutine: a slow store or slow resumed calls
			// must not make this node's own heartbeat lapse.
			lastScan = time.Now()
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				defer w.adopting.Store(false)
				w.adopt(ctx)
			}()
		}
		now := time.Now()
		w.mu.Lock()
		for k, until := range w.pushed {
			if now.After(until) {
				delete(w.pushed, k)
			}
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// firstPush records that (callID, instance) is pushed until deadline; it
// reports false when it already was.
func (w *Wake) firstPush(callID, instance string, deadline time.Time) bool {
	k := callID + "\x00" + instance
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.pushed[k]; ok {
		return false
	}
	w.pushed[k] = deadline
	return true
}

func (w *Wake) add(c *call) {
	w.mu.Lock()
	set := w.calls[c.aor]
	if set == nil {
		set = map[*call]struct{}{}
		w.calls[c.aor] = set
	}
	set[c] = struct{}{}
	w.mu.Unlock()
	w.metrics.held.Inc()
}

func (w *Wake) remove(c *call) {
	w.mu.Lock()
	if set := w.calls[c.aor]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(w.calls, c.aor)
		}
	}
	w.mu.Unlock()
	w.metrics.held.Dec()
}
