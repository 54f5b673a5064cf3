package proxy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// ErrFlowGone is returned by Fork when the target is a device flow whose
// connection this node no longer holds.
var ErrFlowGone error = errFlowGone

// BranchEvent is a response on one branch of a forked request.
type BranchEvent struct {
	Branch *Branch
	// Response is ready to relay upstream (our Via removed, OnResponse
	// applied). For a branch that failed without an answer it is made
	// here: 408 for a timeout, 503 when the next hop failed.
	Response *sip.Response
	// Local reports that Response was made here rather than received.
	Local bool
}

// Final reports whether the event ends its branch.
func (e BranchEvent) Final() bool { return e.Response.StatusCode >= 200 }

// Branch is one client transaction of a request forked by a module that
// runs its own response context (RFC 3261 §16.7), such as a held INVITE
// delivered to devices as they wake.
type Branch struct {
	// Target is where this branch went.
	Target Target

	srv *Server
	r   *Request
	out *sip.Request

	mu        sync.Mutex
	gotProv   bool
	final     bool
	cancel    bool
	cancelled bool
	reason    sip.Header
}

// Fork sends a copy of the request to opt.Target as a new branch and
// returns at once. Every response of the branch except 100 is delivered to
// events, in order, ending with one final response (received or made
// here). Delivery stops when ctx ends, except that a 2xx is then relayed
// upstream directly (RFC 3261 §16.7 step 5: every 2xx goes upstream).
//
// The caller runs the response context: it relays what it chooses with
// Request.RespondWith and cancels the other branches with Branch.Cancel.
// Fork does not apply Max-Forwards and loop checks: call Forwardable once
// before forking.
func (r *Request) Fork(ctx context.Context, opt ForwardOptions, events chan<- BranchEvent) (*Branch, error) {
	s := r.srv
	out, tp, _, err := s.outgoing(r, opt)
	if err != nil {
		if errors.Is(err, errFlowGone) {
			return nil, ErrFlowGone
		}
		return nil, err
	}
	s.metrics.request(out.Method, dirOut)
	tx, responses, release, err := s.launch(out, tp)
	if err != nil {
		s.upstreamState(opt.Target, false)
		return nil, err
	}
	b := &Branch{Target: opt.Target, srv: s, r: r, out: out}
	if out.IsInvite() {
		if ctx, ok := tx.(*sip.ClientTx); ok {
			ctx.OnRetransmission(func(res *sip.Response) {
				if res.IsSuccess() {
					s.relay2xxRetransmission(r, opt, res)
				}
			})
		}
	}
	go func() {
		defer release()
		b.run(ctx, opt, tx, responses, events)
	}()
	return b, nil
}

// run delivers the branch's responses until its final one.
func (b *Branch) run(ctx context.Context, opt ForwardOptions, tx sip.ClientTransaction, responses <-chan *sip.Response, events chan<- BranchEvent) {
	s := b.srv
	deliver := func(res *sip.Response, local bool) bool {
		out := upstreamResponse(b.r, opt, res, false)
		if out == nil {
			return true
		}
		final := out.StatusCode >= 200
		b.mu.Lock()
		if out.IsProvisional() {
			b.gotProv = true
			if b.cancel && !b.cancelled {
				b.cancelled = true
				go s.sendCancel(b.out, b.reason)
			}
		}
		if final {
			b.final = true
		}
		b.mu.Unlock()
		select {
		case events <- BranchEvent{Branch: b, Response: out, Local: local}:
		case <-ctx.Done():
			if out.IsSuccess() {
				// Nobody is listening any more, but a 2xx must reach
				// the caller, who ACKs and ends the extra dialog.
				s.relay2xxRetransmission(b.r, opt, res)
			}
		}
		return !final
	}
	// Timer C (RFC 3261 §16.6 step 11): an INVITE branch that got a
	// provisional response but no final one is cancelled after it, and
	// given up 64*T1 later if even the CANCEL gets nothing.
	var (
		timer  *time.Timer
		fire   <-chan time.Time
		giveUp bool
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	armC := func() {
		if !b.out.IsInvite() || giveUp {
			return
		}
		if timer == nil {
			timer = time.NewTimer(timerC)
			fire = timer.C
			return
		}
		timer.Reset(timerC)
	}
	for {
		select {
		case <-fire:
			if giveUp {
				tx.Terminate()
				deliver(sip.NewResponseFromRequest(b.out, 408, "Request Timeout", nil), true)
				return
			}
			b.Cancel(sip.NewHeader("Reason", `SIP;cause=408;text="Timer C"`))
			giveUp = true
			timer.Reset(64 * sip.T1)
		case res := <-responses:
			s.metrics.response(b.out.Method, res.StatusCode, dirIn)
			s.upstreamState(opt.Target, true)
			if res.StatusCode < 200 {
				armC()
			}
			if res.StatusCode == 100 {
				// Hop by hop, not relayed, but it allows a CANCEL.
				b.mu.Lock()
				b.gotProv = true
				if b.cancel && !b.cancelled {
					b.cancelled = true
					go s.sendCancel(b.out, b.reason)
				}
				b.mu.Unlock()
				continue
			}
			if !deliver(res, false) {
				return
			}
		case <-tx.Done():
			err := tx.Err()
			if !errors.Is(err, sip.ErrTransactionTimeout) && !errors.Is(err, sip.ErrTransactionTransport) {
				// Ended normally: its final response may still be queued.
				wait := time.NewTimer(time.Second)
				for done := false; !done; {
					select {
					case res := <-responses:
						if res.StatusCode != 100 && !deliver(res, false) {
							wait.Stop()
							return
						}
					case <-wait.C:
						done = true
					}
				}
			}
			s.upstreamState(opt.Target, false)
			code, reason := 503, "Service Unavailable"
			if errors.Is(err, sip.ErrTransactionTimeout) {
				code, reason = 408, "Request Timeout"
			}
			if ce := b.r.Check(zap.DebugLevel, "branch failed"); ce != nil {
				ce.Write(zap.String(FieldDst, opt.Target.Dest), zap.Error(err))
			}
			res := sip.NewResponseFromRequest(b.out, code, reason, nil)
			deliver(res, true)
			return
		}
	}
}

// Cancel cancels the branch (RFC 3261 §16.10) with an optional Reason
// header (RFC 3326). A CANCEL may only follow a provisional response, so
// it is sent at once when one came, else when the first one comes. It
// does nothing on a branch that already ended.
func (b *Branch) Cancel(reason sip.Header) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.final || b.cancel {
		return
	}
	b.cancel = true
	b.reason = reason
	if b.gotProv {
		b.cancelled = true
		go b.srv.sendCancel(b.out, reason)
	}
}

// Ended reports whether the branch got its final response.
func (b *Branch) Ended() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.final
}

// Proceeding reports whether the branch got a provisional response.
func (b *Branch) Proceeding() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gotProv
}

// CallID is the Call-ID of the branch's request.
func (b *Branch) CallID() string {
	if h := b.out.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

// Transport is the transport the branch was sent over, lower case.
func (b *Branch) Transport() string { return strings.ToLower(b.out.Transport()) }

// OnCancel registers f to run when the caller cancels the request (the
// transaction layer has then answered 487). It reports false when the
// request cannot be cancelled any more.
func (r *Request) OnCancel(f func(cancel *sip.Request)) bool {
	return r.Tx.OnCancel(func(c *sip.Request) {
		r.answered.Store(true)
		r.failed.Store(true) // the transaction layer answered 487
		f(c)
	})
}
