package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Handler handles one SIP request. It either answers it (Request.Respond)
// or passes it on to the next handler.
type Handler interface {
	ServeSIP(ctx context.Context, r *Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request)

// ServeSIP calls f.
func (f HandlerFunc) ServeSIP(ctx context.Context, r *Request) { f(ctx, r) }

// Middleware wraps the next handler of the chain.
type Middleware func(next Handler) Handler

// Chain builds one handler from middlewares, the first outermost, ending
// in last.
func Chain(last Handler, mws ...Middleware) Handler {
	h := last
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Module is a named link of the handler chain.
type Module interface {
	// Name is the module's short name, used in logs and metrics.
	Name() string
	// Wrap returns the module's handler in front of next.
	Wrap(next Handler) Handler
}

// Starter is a module with sockets or goroutines to start.
type Starter interface {
	Start(ctx context.Context) error
}

// Stopper is a module with something to release; Stop undoes even a
// partial Start.
type Stopper interface {
	Stop(ctx context.Context) error
}

// Readier is a module with an external dependency; /readyz and OPTIONS
// report not ready while Ready returns an error.
type Readier interface {
	Ready() error
}

// Target is where a request is forwarded.
type Target struct {
	// URI, when set, replaces the Request-URI.
	URI *sip.Uri
	// Dest is the next hop "host:port".
	Dest string
	// Transport is UDP, TCP or TLS.
	Transport string
	// Flow means Dest is a device flow: an existing connection must be
	// reused and none may be opened (devices behind NAT accept none).
	Flow bool
	// Device marks the target as a device (for Record-Route flow tokens).
	Device bool
	// Relay marks the target as another sipwake node that owns the
	// device's flow: this node stays out of the dialog's route set, so
	// in-dialog requests go straight to that node.
	Relay bool
}

// Request is one server transaction's request as it travels down the chain.
type Request struct {
	// Msg is the request as received (after route preprocessing).
	Msg *sip.Request
	// Tx is the server transaction.
	Tx sip.ServerTransaction
	// Received is when the request arrived.
	Received time.Time
	// Transport is the transport it arrived on: UDP, TCP or TLS.
	Transport string
	// Source is the remote "ip:port".
	Source string
	// Trusted reports whether Source is in sip.trusted_sources (the PBX).
	Trusted bool
	// Target is set by a module that resolved where the request goes.
	Target *Target
	// RouteFlow is the device flow named by the Record-Route entry of ours
	// that this in-dialog request was routed through, if any.
	RouteFlow *Flow
	// OwnRoute reports that route preprocessing removed a Route of ours.
	OwnRoute bool

	srv      *Server
	light    bool // on a light transaction (light.go)
	logOnce  sync.Once
	log      *zap.Logger
	answered atomic.Bool
	failed   atomic.Bool // a final failure (or the 487 to a CANCEL) went upstream
	detached atomic.Bool
	finish   func()
}

// Detach lets a module keep the request after its handler returns: the
// server then neither answers it nor ends its transaction until the
// returned function runs, which the module must call exactly once when it
// is done (a final response not sent by then is answered 500). A module
// holding a request for long (an INVITE waiting for a phone to wake) runs
// its wait on a goroutine of its own, whose stack can stay small, instead
// of keeping the deep stack of the handler chain parked. Drain still
// waits for detached requests.
func (r *Request) Detach() (done func()) {
	r.detached.Store(true)
	var once sync.Once
	return func() { once.Do(r.finish) }
}

// Server returns the proxy serving the request.
func (r *Request) Server() *Server { return r.srv }

// Log returns the transaction's logger, carrying call_id, method and src.
// The fields are encoded only when a line is written: most transactions
// log nothing at the configured level.
func (r *Request) Log() *zap.Logger {
	r.logOnce.Do(func() {
		r.log = r.srv.log.WithLazy(zap.Inline(requestFields{r.Msg, r.Source, r.Transport}))
	})
	return r.log
}

// Check is Log().Check, without building the transaction's logger when
// the level is off, as it is for the lines of every successful request.
func (r *Request) Check(lvl zapcore.Level, msg string) *zapcore.CheckedEntry {
	if !r.srv.log.Core().Enabled(lvl) {
		return nil
	}
	return r.Log().Check(lvl, msg)
}

// InDialog reports whether the request carries a To tag.
func (r *Request) InDialog() bool {
	if to := r.Msg.To(); to != nil {
		return to.Params.Has("tag")
	}
	return false
}

// Answered reports whether a final response was sent through Respond.
func (r *Request) Answered() bool { return r.answered.Load() }

// Respond answers the request statefully with code and reason, adding the
// given headers.
func (r *Request) Respond(code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(r.Msg, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	r.RespondWith(res)
}

// RespondWith sends res on the server transaction.
func (r *Request) RespondWith(res *sip.Response) {
	if r.Msg.IsAck() {
		return
	}
	r.track(res)
	if res.IsSuccess() && r.failed.Load() {
		// The transaction already sent a failure and would drop this
		// 2xx silently, but every 2xx must reach the caller (RFC 3261
		// §16.7 step 5), who then ACKs and ends that dialog.
		r.srv.metrics.response(r.Msg.Method, res.StatusCode, dirOut)
		if err := r.srv.writeMsg(res); err != nil {
			if ce := r.Check(zap.DebugLevel, "response not sent"); ce != nil {
				ce.Write(zap.Int("status", res.StatusCode), zap.Error(err))
			}
		}
		return
	}
	if res.StatusCode >= 200 {
		r.answered.Store(true)
	}
	if res.StatusCode >= 300 {
		r.failed.Store(true)
	}
	r.srv.metrics.response(r.Msg.Method, res.StatusCode, dirOut)
	t0 := r.srv.tapTime()
	if err := r.Tx.Respond(res); err != nil {
		if ce := r.Check(zap.DebugLevel, "response not sent"); ce != nil {
			ce.Write(zap.Int("status", res.StatusCode), zap.Error(err))
		}
		return
	}
	r.srv.captureOnConn(txConn(r.Tx), res, t0)
}

// Forward relays the request to the target statefully and relays the
// responses back; it returns when the request's final response was sent.
func (r *Request) Forward(ctx context.Context, opt ForwardOptions) {
	r.srv.forward(ctx, r, opt)
}
