package wake

import (
	"context"
	"errors"
	"strings"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
)

// Wrap implements proxy.Module. It takes initial INVITEs from the PBX for
// a push-capable device binding, or for an AOR this node serves; every
// other request goes on down the chain.
func (w *Wake) Wrap(next proxy.Handler) proxy.Handler {
	return proxy.HandlerFunc(func(ctx context.Context, req *proxy.Request) {
		// A held call blocks this goroutine (the request's own) in run
		// until it ends: admit's large frame (bindings) is gone by then,
		// so that the stack kept per held call stays small.
		if c, targets := w.admit(ctx, req, next); c != nil {
			c.run(targets)
		}
	})
}

// admit decides what to do with a request: it returns the call to hold
// and its target devices, or nil when it passed the request on or
// answered it.
//
//go:noinline
func (w *Wake) admit(ctx context.Context, req *proxy.Request, next proxy.Handler) (*call, []store.Binding) {
	if req.Msg.IsCancel() && w.cancelElsewhere(ctx, req) {
		req.Respond(200, "OK")
		return nil, nil
	}
	if !req.Trusted || req.InDialog() || registrar.Relayed(ctx) {
		next.ServeSIP(ctx, req)
		return nil, nil
	}
	if req.Msg.Method == sip.MESSAGE && w.cfg.MessageTTL > 0 {
		if !w.message(ctx, req) {
			next.ServeSIP(ctx, req)
		}
		return nil, nil
	}
	if req.Msg.Method != sip.INVITE {
		next.ServeSIP(ctx, req)
		return nil, nil
	}
	var (
		aor     string
		targets []store.Binding
		single  bool
	)
	if a, ok := registrar.ResolvedAOR(ctx); ok {
		// The AOR's shared contact at the PBX: every device of the AOR.
		bs, err := w.cfg.Store.Bindings(ctx, a)
		if err != nil || len(bs) == 0 {
			req.Respond(480, "Temporarily Unavailable", sip.NewHeader("Warning", `399 sipwake "no device registered"`))
			return nil, nil
		}
		aor, targets = a, bs
	} else if b, ok := registrar.Resolved(ctx); ok {
		if b.Push == nil {
			// A device without push: the plain forwarder serves it.
			next.ServeSIP(ctx, req)
			return nil, nil
		}
		aor, targets, single = b.AOR, []store.Binding{b}, true
	} else if req.Target == nil && req.Msg.Recipient.User != "" && req.Server().ServesDomain(req.Msg.Recipient.Host) {
		a, err := registrar.NormalizeAOR(req.Msg.Recipient)
		if err != nil {
			req.Respond(404, "Not Found")
			return nil, nil
		}
		bs, err := w.cfg.Store.Bindings(ctx, a)
		if err != nil {
			req.Log().Warn("binding lookup failed", proxy.AOR(a), zap.Error(err))
			req.Respond(503, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
			return nil, nil
		}
		if len(bs) == 0 {
			req.Respond(480, "Temporarily Unavailable", sip.NewHeader("Warning", `399 sipwake "no device registered"`))
			return nil, nil
		}
		aor, targets = a, bs
	} else {
		next.ServeSIP(ctx, req)
		return nil, nil
	}
	if !req.Forwardable() {
		return nil, nil
	}
	return newCall(w, req, aor, single, pushAllowed(req.Msg)), targets
}

// pushAllowed reports whether an INVITE may wake devices: not one that
// replaces an existing dialog (RFC 3891: the device is already in a call
// with the app awake) and not one marked non-urgent (RFC 3261 §20.26).
func pushAllowed(m *sip.Request) bool {
	if proxy.FirstHeader(m, "Replaces") != nil {
		return false
	}
	if h := proxy.FirstHeader(m, "Priority"); h != nil && strings.EqualFold(strings.TrimSpace(h.Value()), "non-urgent") {
		return false
	}
	return true
}

// errNoPushForm: the device has no push form for the event (an iOS device
// that gave only a VoIP token gets no alert push: VoIP is for calls only).
var errNoPushForm = errors.New("wake: device accepts no push of this kind")

// notification builds the push for event ev to device b.
func (c *call) notification(b *store.Binding, ev push.Event) (*push.Notification, error) {
	t := b.Push
	n := &push.Notification{
		Target:     registrar.PushTarget(t),
		Payload:    push.Payload{Event: ev, CallID: c.callID, AOR: c.aor},
		CollapseID: push.CollapseID(c.callID),
	}
	if c.w.cfg.IncludeCaller {
		n.Payload.FromURI, n.Payload.FromName = c.fromURI, c.fromName
	}
	switch {
	case registrar.IsAPNs(t) && ev == push.EventCall && registrar.Accepts(t, registrar.PushTypeVoIP):
		n.Type = push.TypeVoIP
		n.Expiration = c.deadline
	case registrar.IsAPNs(t):
		if !registrar.Accepts(t, registrar.PushTypeRemote) {
			return nil, errNoPushForm
		}
		n.Type = push.TypeAlert
		n.Alert = alertText(ev, c.callerLabel())
		if ev == push.EventCall {
			n.Expiration = c.deadline
		}
	default:
		n.Type = push.TypeData
		if ev == push.EventCall {
			n.Expiration = c.deadline
		}
	}
	return n, nil
}

// alertText is the visible text of an alert push.
func alertText(ev push.Event, caller string) *push.Alert {
	switch ev {
	case push.EventCall:
		return &push.Alert{Title: "Incoming call", Body: caller}
	case push.EventCallAnsweredElsewhere:
		return &push.Alert{Title: "Call answered elsewhere", Body: caller}
	default:
		return &push.Alert{Title: "Missed call", Body: caller}
	}
}
