package wake

import (
	"context"
	"errors"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/store"
)

// Node liveness: a heartbeat every beat, lapsing after nodeTTL. A held
// call whose node's heartbeat lapsed is finished by another node within
// nodeTTL plus one scan.
const (
	beat     = time.Second
	nodeTTL  = 3 * time.Second
	scanEach = 2 * time.Second
)

// hasCall reports whether this node holds the call with held-record id.
func (w *Wake) hasCall(id string) *call {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, set := range w.calls {
		for c := range set {
			if c.id == id {
				return c
			}
		}
	}
	return nil
}

// adopt finishes held calls that no live node holds: those of a node
// whose heartbeat lapsed (killed, partitioned) and this node's own from
// before a restart. The caller gets a prompt final answer instead of
// silence; the PBX may then try again.
func (w *Wake) adopt(ctx context.Context) {
	if w.cfg.Server == nil {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	held, err := w.cfg.Store.ListHeld(lctx, store.HeldFilter{})
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("held calls not listed", zap.Error(err))
		}
		return
	}
	alive := map[string]bool{w.cfg.NodeID: true}
	for _, h := range held {
		if h.Node == w.cfg.NodeID {
			if h.Received.After(w.started) || w.hasCall(h.ID) != nil {
				continue // ours, running
			}
		} else {
			live, ok := alive[h.Node]
			if !ok {
				nctx, cancel := context.WithTimeout(ctx, time.Second)
				live, err = w.cfg.Store.NodeAlive(nctx, h.Node)
				cancel()
				if err != nil {
					continue
				}
				alive[h.Node] = live
			}
			if live {
				continue
			}
		}
		w.finishOrphan(ctx, h)
	}
}

// finishOrphan claims a held call of a lost node and answers its caller.
func (w *Wake) finishOrphan(ctx context.Context, h store.HeldCall) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if h.Node != w.cfg.NodeID {
		var err error
		if h, err = w.cfg.Store.ClaimHeld(cctx, h.ID, h.Node, w.cfg.NodeID); err != nil {
			if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
				w.log.Warn("held call not claimed", zap.Error(err))
			}
			return // another node took it, or it is gone
		}
	}
	log := w.log.With(proxy.CallID(h.CallID), proxy.AOR(h.AOR), zap.String("node", h.Node))
	defer func() {
		if err := w.cfg.Store.DeleteHeld(cctx, h.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			log.Warn("held call record not removed", zap.Error(err))
		}
	}()
	if time.Now().After(h.Deadline) {
		return // over: the caller was answered by its PBX's timers
	}
	if w.resume(ctx, h, log) {
		return
	}
	m, err := sip.ParseMessage(h.Request)
	req, ok := m.(*sip.Request)
	if err != nil || !ok {
		log.Warn("held call record unusable", zap.Error(err))
		return
	}
	err = w.cfg.Server.AnswerStateless(req, h.Source, h.Transport, w.cfg.NoAnswerStatus, "Temporarily Unavailable",
		sip.NewHeader("Reason", `SIP;cause=480;text="Holding node lost"`),
		sip.NewHeader("Warning", `399 sipwake "the node holding the call stopped"`))
	if err != nil {
		log.Warn("orphan call not answered", zap.Error(err))
		return
	}
	w.metrics.holdDuration.WithLabelValues(outcomeOrphaned).Observe(time.Since(h.Received).Seconds())
	log.Info("orphan call answered", zap.Int(proxy.FieldStatus, w.cfg.NoAnswerStatus))
}

// resume delivers an adopted held call when a device pushed for it has
// registered again since the INVITE arrived: the INVITE goes to it, and
// the call runs here until its deadline, answering the caller statelessly.
// It reports whether it resumed the call.
func (w *Wake) resume(ctx context.Context, h store.HeldCall, log *zap.Logger) bool {
	bctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	bs, err := w.cfg.Store.Bindings(bctx, h.AOR)
	cancel()
	if err != nil {
		return false
	}
	pushed := map[string]bool{}
	for _, inst := range h.Instances {
		pushed[inst] = true
	}
	var woken []store.Binding
	for _, b := range bs {
		if pushed[b.Instance] && b.LastSeen.After(h.Received) {
			woken = append(woken, b)
		}
	}
	if len(woken) == 0 {
		return false
	}
	req, err := w.cfg.Server.AdoptRequest(h.Request, h.Source, h.Transport)
	if err != nil {
		log.Warn("held call record unusable", zap.Error(err))
		return false
	}
	c := newCall(w, req, h.AOR, true, false)
	c.received, c.deadline, c.id = h.Received, h.Deadline, h.ID
	for _, inst := range h.Instances {
		if !pushed[inst] {
			continue
		}
		// Known as pushed, so that later registrations deliver too.
		c.devices[inst] = &device{pushed: true, pushOK: true}
		c.nDevices.Add(1)
	}
	log.Info("orphan call resumed", zap.Int("devices", len(woken)))
	c.run(woken)
	return true
}

// cancelElsewhere honours a CANCEL for a call another node holds (a load
// balancer sent it here): the holding node is told through the store.
// It reports whether the CANCEL matched a held call.
func (w *Wake) cancelElsewhere(ctx context.Context, req *proxy.Request) bool {
	id := heldID(req.Msg)
	if c := w.hasCall(id); c != nil {
		return false // ours: the transaction layer matched it, or will
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	held, err := w.cfg.Store.ListHeld(lctx, store.HeldFilter{})
	if err != nil {
		return false
	}
	for _, h := range held {
		if h.ID != id {
			continue
		}
		if err := w.cfg.Store.Publish(lctx, store.Event{Kind: store.EventHeldCancelled, Key: id, Node: w.cfg.NodeID}); err != nil {
			req.Log().Warn("cancel not passed on", zap.Error(err))
			return false
		}
		return true
	}
	return false
}

// heldID is a held call's record id: the INVITE's (or its CANCEL's)
// Call-ID and top Via branch.
func heldID(m *sip.Request) string {
	branch := ""
	if v := m.Via(); v != nil {
		branch, _ = v.Params.Get("branch")
	}
	return m.CallID().Value() + "|" + branch
}
