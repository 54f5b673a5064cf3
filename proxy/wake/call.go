package wake

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
)

// Hold outcomes (metric label and log field).
const (
	outcomeAnswered  = "answered"
	outcomeRejected  = "rejected"  // a 6xx, or every branch failed
	outcomeCancelled = "cancelled" // the caller cancelled
	outcomeTimeout   = "timeout"   // nobody answered within the hold
	outcomeNoDevice  = "no_device" // no device could be reached at all
	outcomeStopped   = "stopped"   // the node stopped
	outcomeOrphaned  = "orphaned"  // finished by another node
)

// maxPushAttempts bounds retries of transient push failures per device.
const maxPushAttempts = 5

// device is one target device of a held call.
type device struct {
	b      store.Binding
	branch *proxy.Branch
	// pushed: a push was queued for the call; pushOK: the provider took it.
	pushed, pushOK bool
	// pushType is the type of the call push (voip, alert, data).
	pushType push.Type
	pushedAt time.Time
	attempts int
	// scheduled is a push waiting for the device's branch to ring.
	scheduled *time.Timer
	// delivered: the INVITE reached the device after it woke.
	delivered bool
	// ringing: its branch answered 180 or better.
	ringing bool
	// dead: the device cannot answer this call (token rejected).
	dead bool
}

// waking reports whether the device may still register and take the call.
func (d *device) waking() bool {
	return (d.pushed || d.scheduled != nil) && !d.delivered && !d.dead
}

type pushResult struct {
	d        *device
	ev       push.Event
	tok      string
	provider string
	err      error
}

// call is one held INVITE: its response context (RFC 3261 §16.7) and the
// devices it waits for.
type call struct {
	w        *Wake
	req      *proxy.Request
	aor      string
	callID   string
	fromURI  string
	fromName string
	single   bool
	push     bool
	received time.Time
	deadline time.Time
	id       string

	ctx  context.Context
	stop context.CancelFunc
	hold *time.Timer // the hold's deadline, from begin

	events  chan proxy.BranchEvent
	pushes  chan pushResult
	retry   chan *device
	cancels chan *sip.Request

	regMu   sync.Mutex
	regSig  chan struct{}
	regList []string

	devices  map[string]*device
	byBranch map[*proxy.Branch]*device
	// nDevices and nPushed are read by Wake.Held from other goroutines.
	nDevices, nPushed atomic.Int32
	ended             atomic.Bool

	finished    bool
	outcome     string
	provisional bool // a provisional went upstream
	feedback    bool // our own caller feedback went upstream
	best        *sip.Response
	bestLocal   bool
	stored      bool // the held record is in the store
	// storedDevices is how many pushed devices the record lists; heldRaw
	// is the INVITE it carries; heldDone ends with the last record write.
	storedDevices int
	heldRaw       []byte
	heldDone      chan struct{}
	cancelWhy     sip.Header
}

func newCall(w *Wake, req *proxy.Request, aor string, single, allowPush bool) *call {
	now := req.Received
	if now.IsZero() {
		now = time.Now()
	}
	c := &call{
		w:        w,
		req:      req,
		aor:      aor,
		callID:   req.Msg.CallID().Value(),
		single:   single,
		push:     allowPush && w.cfg.Pusher != nil,
		received: now,
		deadline: now.Add(w.cfg.HoldTimeout),
		pushes:   make(chan pushResult, 8),
		retry:    make(chan *device, 8),
		cancels:  make(chan *sip.Request, 1),
		regSig:   make(chan struct{}, 1),
		devices:  map[string]*device{},
		byBranch: map[*proxy.Branch]*device{},
	}
	c.id = heldID(req.Msg)
	if f := req.Msg.From(); f != nil {
		c.fromURI = f.Address.String()
		c.fromName = strings.Trim(f.DisplayName, `"`)
	}
	return c
}

// notifyRegistered is called by the watcher when a binding of the AOR was
// stored: maybe a woken device.
func (c *call) notifyRegistered(instance string) {
	c.regMu.Lock()
	c.regList = append(c.regList, instance)
	c.regMu.Unlock()
	select {
	case c.regSig <- struct{}{}:
	default:
	}
}

// recheck makes the call look again at every device it knows (after
// missed binding events): one that registered meanwhile gets the INVITE.
// It runs under Wake.mu; the device list is read through the
// registration queue, not the call's own maps.
func (c *call) recheck() {
	c.regMu.Lock()
	c.regList = append(c.regList, recheckAll)
	c.regMu.Unlock()
	select {
	case c.regSig <- struct{}{}:
	default:
	}
}

// recheckAll, queued as an instance, asks the call to look at all its
// devices.
const recheckAll = "\x00recheck"

func (c *call) takeRegistered() []string {
	c.regMu.Lock()
	defer c.regMu.Unlock()
	l := c.regList
	c.regList = nil
	return l
}

// run starts the hold: it forks and pushes on the request's goroutine,
// then detaches the request and waits on a goroutine of its own until the
// caller has its final answer and nothing is left to tell woken devices.
// That goroutine is parked for the whole hold, and its stack is the
// largest part of what a held call costs: started fresh, with small
// frames (loop leaves the work to the methods it calls), it stays small,
// where the request's goroutine carries the whole handler chain.
func (c *call) run(targets []store.Binding) {
	done := c.req.Detach()
	held := false
	defer func() {
		if !held { // begin ended the call, or panicked
			c.cleanup()
			done()
		}
	}()
	if !c.begin(targets) {
		return
	}
	held = true
	go func() {
		defer done()
		defer c.cleanup()
		defer func() {
			if p := recover(); p != nil {
				c.w.log.Error("held call panic", c.fields(zap.Any("panic", p), zap.Stack("stack"))...)
				if !c.req.Answered() {
					c.req.Respond(500, "Server Internal Error")
				}
			}
		}()
		c.loop()
	}()
}

// loop handles the call's events until it is done or the node stops.
//
//go:noinline
func (c *call) loop() {
	stopping := c.w.stopping()
	for !c.done() {
		select {
		case ev := <-c.events:
			c.onBranch(ev)
		case r := <-c.pushes:
			c.onPush(r)
		case d := <-c.retry:
			c.onRetry(d)
		case <-c.regSig:
			c.onRegSig()
		case cn := <-c.cancels:
			c.onCallerCancel(cn)
		case <-c.hold.C:
			c.onDeadline()
		case <-stopping:
			c.onStop()
			return
		}
	}
}

// cleanup releases what run holds once the call is over.
func (c *call) cleanup() {
	if c.hold != nil {
		c.hold.Stop()
	}
	c.w.remove(c)
	if c.stop != nil {
		c.stop()
	}
}

// begin starts the hold: it takes the caller's CANCEL, and forks to or
// pushes every target. It reports false when the call already ended.
//
//go:noinline
func (c *call) begin(targets []store.Binding) bool {
	c.ctx, c.stop = context.WithCancel(context.Background())
	c.w.add(c)
	if !c.req.OnCancel(func(cn *sip.Request) {
		select {
		case c.cancels <- cn:
		default:
		}
	}) {
		// Cancelled before the hold began: nothing to wake.
		c.end(outcomeCancelled, nil)
		return false
	}
	for i := range targets {
		c.start(targets[i])
	}
	if !c.canAnswer() {
		c.finishFailed()
	}
	c.hold = time.NewTimer(time.Until(c.deadline))
	return true
}

// onRetry is a scheduled push falling due.
//
//go:noinline
func (c *call) onRetry(d *device) {
	if d.scheduled == nil {
		return // stopped (it rang, or a push went out) after it fired
	}
	d.scheduled = nil
	if !c.finished && !d.delivered && !d.dead && !d.ringing {
		c.sendPush(d, push.EventCall)
	}
}

// onRegSig hands the bindings stored for the AOR to onRegistered.
//
//go:noinline
func (c *call) onRegSig() {
	for _, inst := range c.takeRegistered() {
		if inst != recheckAll {
			c.onRegistered(inst)
			continue
		}
		all := make([]string, 0, len(c.devices))
		for i := range c.devices {
			all = append(all, i)
		}
		for _, i := range all {
			c.onRegistered(i)
		}
	}
}

// onStop answers the caller when the node stops.
//
//go:noinline
func (c *call) onStop() {
	if !c.finished {
		c.finish(c.reply(503, "Service Unavailable", `SIP;cause=503;text="Node stopping"`), outcomeStopped)
	}
}

// done reports whether the loop may end: the caller has its answer and no
// woken device still needs the INVITE-then-CANCEL treatment.
func (c *call) done() bool {
	if !c.finished {
		return false
	}
	if c.w.cfg.CancelledDelivery != DeliverInviteCancel || time.Now().After(c.deadline) {
		return true
	}
	if c.outcome != outcomeCancelled && c.outcome != outcomeAnswered {
		return true
	}
	for _, d := range c.devices {
		if d.pushType == push.TypeVoIP && d.pushed && !d.delivered && !d.dead {
			return false
		}
	}
	return true
}

// start handles one target device when the INVITE arrives: fork at once
// over a live flow, push a push-capable device.
func (c *call) start(b store.Binding) {
	d := c.devices[b.Instance]
	if d == nil {
		d = &device{}
		c.devices[b.Instance] = d
		c.nDevices.Add(1)
	}
	d.b = b
	canPush := c.push && b.Push != nil
	alive := c.flowAlive(b)
	if alive {
		c.fork(d)
		// A device already pushed for the call (a call adopted from a
		// lost node) has now had it delivered.
		d.delivered = d.pushed && d.branch != nil
	}
	switch {
	case !canPush:
	case alive && d.branch != nil && isReliable(b.Transport) && c.w.cfg.AwakePushDelay > 0:
		// Its connection is open: it is probably awake. Push only if it
		// does not ring soon.
		d.scheduled = time.AfterFunc(c.w.cfg.AwakePushDelay, func() { c.postRetry(d) })
	default:
		c.sendPush(d, push.EventCall)
	}
}

func isReliable(transport string) bool {
	t := strings.ToLower(transport)
	return t == "tcp" || t == "tls" || t == "ws" || t == "wss"
}

// flowAlive reports whether the device's flow can be used now.
func (c *call) flowAlive(b store.Binding) bool {
	return c.w.flowUsable(c.req.Server(), &b)
}

// fork sends the INVITE to the device over its flow.
func (c *call) fork(d *device) {
	t, err := c.w.targetFor(&d.b, c.callID)
	if err != nil {
		c.w.log.Warn("stored contact unusable", c.fields(zap.Error(err))...)
		return
	}
	if c.events == nil {
		// Made at the first fork: a call held for sleeping devices has
		// no branch until one wakes (run's select waits on nil until
		// then; only run's goroutine forks).
		c.events = make(chan proxy.BranchEvent, 16)
	}
	br, err := c.req.Fork(c.ctx, proxy.ForwardOptions{Target: t}, c.events)
	if err != nil {
		if !errors.Is(err, proxy.ErrFlowGone) {
			c.w.log.Info("invite not forwarded", c.fields(zap.String(proxy.FieldDst, t.Dest), zap.Error(err))...)
		}
		return
	}
	d.branch = br
	c.byBranch[br] = d
}

func (c *call) postRetry(d *device) {
	select {
	case c.retry <- d:
	case <-c.ctx.Done():
	}
}

// sendPush queues a push of event ev for d.
func (c *call) sendPush(d *device, ev push.Event) {
	if d.b.Push == nil || c.w.cfg.Pusher == nil {
		return
	}
	if d.scheduled != nil {
		d.scheduled.Stop()
		d.scheduled = nil
	}
	n, err := c.notification(&d.b, ev)
	if err != nil {
		if ce := c.w.log.Check(zap.DebugLevel, "push skipped"); ce != nil {
			ce.Write(c.fields(zap.String("event", string(ev)), zap.String(proxy.FieldPNProvider, d.b.Push.Provider))...)
		}
		return
	}
	if ev == push.EventCall {
		if d.attempts == 0 && !c.w.firstPush(c.callID, d.b.Instance, c.deadline) {
			return // this device was already pushed for this call
		}
		if !d.pushed {
			c.nPushed.Add(1)
		}
		d.pushed = true
		d.pushType = n.Type
		d.attempts++
		if d.pushedAt.IsZero() {
			d.pushedAt = time.Now()
		}
	}
	tok, provider := d.b.Push.Token, d.b.Push.Provider
	err = c.w.cfg.Pusher.Send(n, func(_ push.Result, err error) {
		select {
		case c.pushes <- pushResult{d: d, ev: ev, tok: tok, provider: provider, err: err}:
		case <-c.ctx.Done():
		}
	})
	if err != nil {
		c.onPush(pushResult{d: d, ev: ev, tok: tok, provider: provider, err: err})
		return
	}
	if ev == push.EventCall {
		c.feedbackUpstream()
		c.storeHeld()
	}
}

// onPush handles a provider's verdict.
func (c *call) onPush(r pushResult) {
	d := r.d
	fields := []zap.Field{zap.String("event", string(r.ev)), zap.String(proxy.FieldInstance, maskInstance(d.b.Instance)),
		zap.String(proxy.FieldPNProvider, r.provider), proxy.PNToken(r.tok)}
	if r.err == nil {
		c.w.log.Info("push sent", c.fields(fields...)...)
		if r.ev == push.EventCall {
			d.pushOK = true
		}
		return
	}
	fields = append(fields, zap.Error(r.err))
	if push.IsPermanent(r.err) {
		c.w.log.Info("push token pruned", c.fields(fields...)...)
		c.w.pruneToken(d.b, r.tok, r.provider, push.ReasonOf(r.err))
		if r.ev == push.EventCall {
			d.dead = true
			if !c.finished && !c.canAnswer() {
				c.finishFailed()
			}
		}
		return
	}
	c.w.log.Info("push failed", c.fields(fields...)...)
	if r.ev != push.EventCall || c.finished || d.delivered || d.dead {
		return
	}
	if d.attempts >= maxPushAttempts {
		d.dead = true
		if !c.canAnswer() {
			c.finishFailed()
		}
		return
	}
	wait := backoff(d.attempts)
	if ra, ok := push.RetryAfter(r.err); ok && ra > wait {
		wait = ra
	}
	if time.Now().Add(wait).After(c.deadline) {
		d.dead = true
		if !c.canAnswer() {
			c.finishFailed()
		}
		return
	}
	d.scheduled = time.AfterFunc(wait, func() { c.postRetry(d) })
}

// backoff is the wait before push attempt n+1: 250 ms doubling, with
// jitter, at most 8 s.
func backoff(n int) time.Duration {
	d := 250 * time.Millisecond << min(n-1, 5)
	if d > 8*time.Second {
		d = 8 * time.Second
	}
	return d/2 + rand.N(d/2+1)
}

// canAnswer reports whether any device may still answer the call.
func (c *call) canAnswer() bool {
	if time.Now().After(c.deadline) {
		return false
	}
	for _, d := range c.devices {
		if d.branch != nil && !d.branch.Ended() {
			return true
		}
		if d.waking() {
			return true
		}
	}
	return false
}

// onRegistered handles a binding stored for the AOR: a woken device gets
// the INVITE, exactly once, over its new flow.
func (c *call) onRegistered(instance string) {
	d := c.devices[instance]
	if d == nil && c.single {
		return
	}
	if d != nil && (d.delivered || (d.branch != nil && d.branch.Proceeding())) {
		return
	}
	if c.finished && (d == nil || d.pushType != push.TypeVoIP || !d.pushed) {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	bs, err := c.w.cfg.Store.Bindings(ctx, c.aor)
	cancel()
	if err != nil {
		c.w.log.Warn("binding lookup failed", c.fields(zap.Error(err))...)
		return
	}
	var b *store.Binding
	for i := range bs {
		if bs[i].Instance == instance {
			b = &bs[i]
		}
	}
	if b == nil || !b.LastSeen.After(c.received) {
		return // removed, or a change that is not a new registration
	}
	if d == nil {
		d = &device{}
		c.devices[instance] = d
		c.nDevices.Add(1)
	} else if d.branch != nil && !d.branch.Ended() && d.b.Source == b.Source {
		return // same flow, its branch still pending
	}
	old := d.branch
	if old != nil && !old.Ended() {
		old.Cancel(nil) // the old flow is gone
	}
	if d.scheduled != nil {
		d.scheduled.Stop()
		d.scheduled = nil
	}
	d.b = *b
	d.branch = nil
	c.fork(d)
	if d.branch == nil {
		// Its new flow failed too: a later registration may still work.
		d.branch = old
		if !c.finished && !c.canAnswer() {
			c.finishFailed()
		}
		return
	}
	d.delivered = true
	now := time.Now()
	c.w.metrics.delivery.Observe(now.Sub(c.received).Seconds())
	if d.pushOK || d.pushed {
		c.w.metrics.wakeup.Observe(now.Sub(d.pushedAt).Seconds())
	}
	c.w.log.Info("invite delivered", c.fields(zap.String(proxy.FieldInstance, maskInstance(instance)),
		zap.Float64(proxy.FieldDuration, now.Sub(c.received).Seconds()))...)
	if c.finished {
		// The call ended while the device woke: it gets the INVITE so the
		// app can report it, and the CANCEL right after.
		d.branch.Cancel(c.cancelReason())
	}
}

// onBranch runs the response context for one branch response.
func (c *call) onBranch(ev proxy.BranchEvent) {
	d := c.byBranch[ev.Branch]
	res := ev.Response
	code := res.StatusCode
	if c.finished {
		if code >= 200 && code < 300 {
			c.req.RespondWith(res) // every 2xx goes upstream (§16.7 step 5)
		}
		return
	}
	switch {
	case code < 200:
		if code >= 180 && d != nil {
			d.ringing = true
			if d.scheduled != nil {
				d.scheduled.Stop()
				d.scheduled = nil
			}
		}
		c.provisional = true
		c.req.RespondWith(res)
	case code < 300:
		if d != nil {
			d.delivered = true // it took the call: no "elsewhere" push for it
		}
		c.req.RespondWith(res)
		c.cancelWhy = sip.NewHeader("Reason", `SIP;cause=200;text="Call completed elsewhere"`)
		c.end(outcomeAnswered, d)
	case code >= 600:
		if d != nil {
			d.delivered = true
		}
		c.req.RespondWith(res)
		c.cancelWhy = sip.NewHeader("Reason", "SIP;cause="+strconv.Itoa(code)+`;text="`+strings.ReplaceAll(res.Reason, `"`, "")+`"`)
		c.end(outcomeRejected, d)
	default:
		c.keepBest(res, ev.Local)
		if d != nil && !d.pushed && !d.delivered && c.push && d.b.Push != nil && (ev.Local || code == 408 || code == 480) {
			// Its open connection did not reach the app: wake it.
			c.sendPush(d, push.EventCall)
		}
		if !c.canAnswer() {
			c.finishFailed()
		}
	}
}

// keepBest remembers the best failure so far (RFC 3261 §16.7 step 6):
// the lowest class wins, a response received beats one made here.
func (c *call) keepBest(res *sip.Response, local bool) {
	if c.best == nil || (c.bestLocal && !local) || (c.bestLocal == local && res.StatusCode/100 < c.best.StatusCode/100) {
		c.best, c.bestLocal = res, local
	}
}

// finishFailed answers the caller when no device can answer any more.
func (c *call) finishFailed() {
	if c.best != nil && !c.bestLocal {
		res := c.best
		if res.StatusCode == 503 {
			// §16.7 step 6: a 503 from downstream must not make the
			// caller think this proxy is overloaded.
			res = sip.NewResponseFromRequest(c.req.Msg, 500, "Server Internal Error", nil)
		}
		c.finish(res, outcomeRejected)
		return
	}
	why := "no device can be reached"
	for _, d := range c.devices {
		if d.dead {
			why = "push token rejected"
		}
	}
	c.finish(c.reply(c.w.cfg.NoAnswerStatus, "Temporarily Unavailable", `SIP;cause=480;text="`+why+`"`, why), outcomeNoDevice)
}

// onDeadline ends the hold: a call already ringing somewhere goes on
// (the PBX decides how long it rings); otherwise no device answered.
func (c *call) onDeadline() {
	if c.finished {
		return
	}
	for _, d := range c.devices {
		if d.branch != nil && !d.branch.Ended() && d.branch.Proceeding() {
			for _, x := range c.devices {
				if x.scheduled != nil {
					x.scheduled.Stop()
					x.scheduled = nil
				}
				x.dead = x.dead || x.branch == nil
			}
			return
		}
	}
	c.cancelWhy = nil
	c.finish(c.reply(c.w.cfg.NoAnswerStatus, "Temporarily Unavailable", `SIP;cause=480;text="No device answered"`, "no device answered in time"), outcomeTimeout)
}

// onCallerCancel handles the caller's CANCEL (the transaction layer
// answered it 200 and the INVITE 487).
func (c *call) onCallerCancel(cn *sip.Request) {
	if c.finished {
		return
	}
	c.cancelWhy = nil
	if cn == nil {
		// Cancelled through another node: the transaction layer here
		// never saw the CANCEL, so the INVITE is answered here.
		c.req.Respond(487, "Request Terminated")
	} else if h := proxy.FirstHeader(cn, "Reason"); h != nil {
		c.cancelWhy = sip.NewHeader("Reason", h.Value())
	}
	c.end(outcomeCancelled, nil)
}

// reply makes a final response of ours with a Reason and a Warning.
func (c *call) reply(code int, reason, why string, warning ...string) *sip.Response {
	res := sip.NewResponseFromRequest(c.req.Msg, code, reason, nil)
	res.AppendHeader(sip.NewHeader("Reason", why))
	if len(warning) > 0 {
		res.AppendHeader(sip.NewHeader("Warning", `399 sipwake "`+warning[0]+`"`))
	}
	return res
}

// finish sends the caller its final answer and ends the call.
func (c *call) finish(res *sip.Response, outcome string) {
	if c.finished {
		return
	}
	c.req.RespondWith(res)
	c.end(outcome, nil)
}

// end ends the call after its final response went upstream (or the caller
// cancelled): other branches are cancelled, devices still waking are
// told, and the held record goes.
func (c *call) end(outcome string, winner *device) {
	c.finished = true
	c.ended.Store(true)
	c.outcome = outcome
	dur := time.Since(c.received)
	c.w.metrics.holdDuration.WithLabelValues(outcome).Observe(dur.Seconds())
	c.w.log.Info("hold ended", c.fields(zap.String("outcome", outcome), zap.Float64(proxy.FieldDuration, dur.Seconds()))...)
	reason := c.cancelReason()
	for _, d := range c.devices {
		if d.scheduled != nil {
			d.scheduled.Stop()
			d.scheduled = nil
		}
		if d != winner && d.branch != nil && !d.branch.Ended() {
			d.branch.Cancel(reason)
		}
	}
	c.tellWaking(outcome)
	if c.stored {
		id := c.id
		c.heldWrite(func(ctx context.Context) {
			if err := c.w.cfg.Store.DeleteHeld(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
				c.w.log.Warn("held call record not removed", c.fields(zap.Error(err))...)
			}
		})
	}
}

// cancelReason is the Reason header for CANCELs sent after the call ended.
func (c *call) cancelReason() sip.Header {
	if c.cancelWhy != nil {
		return c.cancelWhy
	}
	return nil
}

// tellWaking pushes the devices that were woken for the call but did not
// get it: the ringing screen goes away (Android), the call shows as
// missed (iOS alert).
func (c *call) tellWaking(outcome string) {
	var ev push.Event
	switch outcome {
	case outcomeAnswered:
		ev = push.EventCallAnsweredElsewhere
	case outcomeCancelled, outcomeRejected:
		ev = push.EventCallCancelled
		if c.cancelWhy != nil && strings.Contains(c.cancelWhy.Value(), "cause=200") {
			ev = push.EventCallAnsweredElsewhere
		}
	case outcomeTimeout, outcomeNoDevice:
		if !c.w.cfg.MissedCallPush {
			return
		}
		ev = push.EventCallMissed
	default:
		return
	}
	for _, d := range c.devices {
		if !d.pushOK || d.delivered || d.dead || d.b.Push == nil {
			continue
		}
		e := ev
		if registrar.IsAPNs(d.b.Push) && e == push.EventCallCancelled {
			e = push.EventCallMissed // an alert: the call was missed
		}
		c.sendPush(d, e)
	}
}

// feedbackUpstream sends wake.caller_feedback once, unless a device's own
// provisional response already went upstream.
func (c *call) feedbackUpstream() {
	if c.feedback || c.provisional || c.finished {
		return
	}
	c.feedback = true
	switch c.w.cfg.CallerFeedback {
	case "110":
		c.req.Respond(110, "Push sent")
	case "180":
		c.req.Respond(180, "Ringing")
	case "183":
		c.req.Respond(183, "Session Progress")
	}
}

// storeHeld writes the held-call record, off the SIP path, each time the
// set of pushed devices grows (a peer resuming the call needs them all).
// Writes are ordered, and none happens after the record was deleted.
func (c *call) storeHeld() {
	h := store.HeldCall{
		ID: c.id, CallID: c.callID, AOR: c.aor, Node: c.w.cfg.NodeID,
		Received: c.received, Deadline: c.deadline,
		Source: c.req.Source, Transport: strings.ToLower(c.req.Transport),
	}
	for inst, d := range c.devices {
		if d.pushed {
			h.Instances = append(h.Instances, inst)
		}
	}
	if c.stored && len(h.Instances) == c.storedDevices {
		return
	}
	if !c.stored {
		c.heldRaw = heldRequest(c.req.Msg)
	}
	h.Request = c.heldRaw
	c.stored, c.storedDevices = true, len(h.Instances)
	c.heldWrite(func(ctx context.Context) {
		if err := c.w.cfg.Store.PutHeld(ctx, h); err != nil {
			c.w.log.Warn("held call record not stored", c.fields(zap.Error(err))...)
		}
	})
}

// heldWrite runs store writes of the held record one after another, in
// the order they were made, on a goroutine of their own.
func (c *call) heldWrite(f func(ctx context.Context)) {
	prev := c.heldDone
	done := make(chan struct{})
	c.heldDone = done
	go func() {
		defer close(done)
		if prev != nil {
			<-prev
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f(ctx)
	}()
}

// heldRequest is the INVITE as kept in the held record: as this node
// received it (Via with received/rport, our Route removed), body
// included, so that another node can answer it or deliver it.
func heldRequest(m *sip.Request) []byte {
	return []byte(m.String())
}

func (c *call) callerLabel() string {
	if !c.w.cfg.IncludeCaller {
		return ""
	}
	if c.fromName != "" {
		return c.fromName
	}
	return c.fromURI
}

// maskInstance keeps device identities that embed a push token out of the
// logs in full.
func maskInstance(id string) string {
	if strings.HasPrefix(id, "contact:") || strings.HasPrefix(id, "urn:") || strings.HasPrefix(id, "<urn:") {
		return id
	}
	return proxy.Mask(id)
}

// HeldInfo describes a held call for the admin API.
type HeldInfo struct {
	CallID   string    `json:"call_id"`
	AOR      string    `json:"aor"`
	Node     string    `json:"node"`
	Received time.Time `json:"received"`
	Deadline time.Time `json:"deadline"`
	Devices  int       `json:"devices"`
	Pushed   int       `json:"pushed"`
	Finished bool      `json:"finished"`
}

// info runs under Wake.mu on another goroutine: it reads only fields fixed
// at creation and atomics.
func (c *call) info() HeldInfo {
	return HeldInfo{CallID: c.callID, AOR: c.aor, Node: c.w.cfg.NodeID, Received: c.received, Deadline: c.deadline,
		Devices: int(c.nDevices.Load()), Pushed: int(c.nPushed.Load()), Finished: c.ended.Load()}
}

// fields are a log line's fields: the request's (call_id, method, cseq,
// src, transport), the AOR, then extra. Built per line rather than kept in
// a child logger: a held call lives long and its logs are few, so the
// logger's copy of the encoder would cost more than it saves.
func (c *call) fields(extra ...zap.Field) []zap.Field {
	fs := proxy.RequestFields(c.req.Msg, c.req.Source, c.req.Transport)
	fs = append(fs, proxy.AOR(c.aor))
	return append(fs, extra...)
}
