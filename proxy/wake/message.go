package wake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
)

// Message delivery timing.
const (
	// deliverTimeout bounds one delivery attempt of one message.
	deliverTimeout = 10 * time.Second
	// deliverLease is how long a node holds a device's delivery lease; it
	// is renewed before each page, so a node that dies mid-round blocks
	// the others for at most this long.
	deliverLease = 20 * time.Second
	// messageScan is how often stored messages are swept (expired ones
	// removed) and picked up (pending deliveries to registered devices).
	messageScan = 30 * time.Second
	// retryFirst and retryMax bound the backoff between delivery rounds
	// to a device that stays registered but does not answer.
	retryFirst = 5 * time.Second
	retryMax   = 5 * time.Minute
	// previewMax caps the message body shown in a push.
	previewMax = 120
)

// Message delivery results (metric label).
const (
	resultDelivered = "delivered"
	resultRefused   = "refused" // the device answered with a definitive failure
	resultFailed    = "failed"  // an attempt failed; it is retried
	resultExpired   = "expired"
)

// passThrough reports whether a MESSAGE is forwarded as it is, never
// stored or pushed: typing notifications, delivery reports, and what the
// sender marked non-urgent.
func passThrough(m *sip.Request) bool {
	if h := m.ContentType(); h != nil {
		ct := strings.ToLower(strings.TrimSpace(strings.SplitN(h.Value(), ";", 2)[0]))
		if ct == "application/im-iscomposing+xml" || ct == "message/imdn+xml" {
			return true
		}
	}
	if h := proxy.FirstHeader(m, "Priority"); h != nil && strings.EqualFold(strings.TrimSpace(h.Value()), "non-urgent") {
		return true
	}
	return false
}

// messageID identifies a MESSAGE for de-duplication: Call-ID, From tag
// and CSeq (a retransmission or a PBX retry has the same), and the target
// (the PBX forks one copy per device contact, all with the same three).
func messageID(m *sip.Request, target string) string {
	tag := ""
	if f := m.From(); f != nil {
		tag, _ = f.Params.Get("tag")
	}
	cseq := ""
	if c := m.CSeq(); c != nil {
		cseq = strconv.FormatUint(uint64(c.SeqNo), 10)
	}
	sum := sha256.Sum256([]byte(m.CallID().Value() + "\x00" + tag + "\x00" + cseq + "\x00" + target))
	return hex.EncodeToString(sum[:16])
}

// message handles a MESSAGE from the PBX for a device or an AOR. It
// reports false when the MESSAGE is not one it takes (the chain goes on).
func (w *Wake) message(ctx context.Context, req *proxy.Request) bool {
	if passThrough(req.Msg) {
		return false
	}
	var (
		aor     string
		targets []store.Binding
		idKey   string
	)
	if a, ok := registrar.ResolvedAOR(ctx); ok {
		bs, err := w.cfg.Store.Bindings(ctx, a)
		if err != nil || len(bs) == 0 {
			return false
		}
		aor, targets, idKey = a, bs, a
	} else if b, ok := registrar.Resolved(ctx); ok {
		aor, targets, idKey = b.AOR, []store.Binding{b}, b.Instance
	} else if req.Target == nil && req.Msg.Recipient.User != "" && req.Server().ServesDomain(req.Msg.Recipient.Host) {
		a, err := registrar.NormalizeAOR(req.Msg.Recipient)
		if err != nil {
			return false
		}
		bs, err := w.cfg.Store.Bindings(ctx, a)
		if err != nil {
			req.Log().Warn("binding lookup failed", proxy.AOR(a), zap.Error(err))
			req.Respond(503, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
			return true
		}
		if len(bs) == 0 {
			req.Respond(480, "Temporarily Unavailable", sip.NewHeader("Warning", `399 sipwake "no device registered"`))
			return true
		}
		aor, targets, idKey = a, bs, a
	} else {
		return false
	}
	if !req.Forwardable() {
		return true
	}
	w.acceptMessage(req, aor, idKey, targets)
	return true
}

// acceptMessage offers the MESSAGE to the devices with a live flow for up
// to wake.message_accept_timeout; a 2xx goes back at once. Devices that
// did not take it get it stored, durably, and only then is the PBX
// answered 202 Accepted; a store failure is answered 503, never 202.
func (w *Wake) acceptMessage(req *proxy.Request, aor, idKey string, targets []store.Binding) {
	events := make(chan proxy.BranchEvent, 2*len(targets)+2)
	ctx, cancel := context.WithCancel(context.Background())
	byBranch := map[*proxy.Branch]*store.Binding{}
	for i := range targets {
		b := &targets[i]
		if !w.flowUsable(req.Server(), b) {
			continue
		}
		t, err := w.targetFor(b, req.Msg.CallID().Value())
		if err != nil {
			continue
		}
		br, err := req.Fork(ctx, proxy.ForwardOptions{Target: t, NoRecordRoute: true}, events)
		if err == nil {
			byBranch[br] = b
		}
	}
	// Devices still to be stored for: those without a 2xx and without a
	// definitive refusal.
	pending := map[string]bool{}
	for i := range targets {
		pending[targets[i].Instance] = true
	}
	var refusal *sip.Response
	var took []string // devices that answered it (2xx or a definitive refusal)
	open := len(byBranch)
	timer := time.NewTimer(w.cfg.MessageAcceptTimeout)
	defer timer.Stop()
wait:
	for open > 0 {
		select {
		case ev := <-events:
			if !ev.Final() {
				continue
			}
			open--
			b := byBranch[ev.Branch]
			code := ev.Response.StatusCode
			switch {
			case code < 300:
				delete(pending, b.Instance)
				took = append(took, b.Instance)
				req.RespondWith(ev.Response)
			case !ev.Local && definitive(code):
				delete(pending, b.Instance)
				took = append(took, b.Instance)
				if refusal == nil {
					refusal = ev.Response
				}
			}
			if req.Answered() {
				break wait
			}
		case <-timer.C:
			break wait
		}
	}
	if len(pending) == 0 {
		cancel()
		if !req.Answered() && refusal != nil {
			req.RespondWith(refusal)
		}
		return
	}
	id := messageID(req.Msg, idKey)
	m := store.StoredMessage{
		ID: id, AOR: aor, Received: req.Received, Expires: req.Received.Add(w.cfg.MessageTTL),
		Request: []byte(req.Msg.String()), Sender: senderOf(req.Msg),
	}
	if m.Received.IsZero() {
		m.Received = time.Now()
		m.Expires = m.Received.Add(w.cfg.MessageTTL)
	}
	for inst := range pending {
		m.Pending = append(m.Pending, inst)
	}
	// Devices that already answered are recorded, so that late delivery
	// does not give them the message again.
	m.Delivered = took
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	created, err := w.cfg.Store.PutMessage(sctx, m)
	scancel()
	if err != nil {
		cancel()
		w.log.Warn("message not stored", append(proxy.RequestFields(req.Msg, req.Source, req.Transport), proxy.AOR(aor), zap.Error(err))...)
		if !req.Answered() {
			req.Respond(503, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
		}
		return
	}
	// Branches still open may yet deliver: their 2xx acknowledges the
	// stored copy (the events channel kept what came meanwhile).
	go w.watchLate(ctx, cancel, events, byBranch, id, open)
	if !req.Answered() {
		req.Respond(202, "Accepted")
	}
	if !created {
		w.log.Debug("message already stored", proxy.CallID(req.Msg.CallID().Value()), proxy.AOR(aor))
		return
	}
	w.metrics.messagesStored.Inc()
	w.log.Info("message stored", append(proxy.RequestFields(req.Msg, req.Source, req.Transport), proxy.AOR(aor),
		zap.Int("devices", len(m.Pending)))...)
	for i := range targets {
		if pending[targets[i].Instance] {
			w.pushMessage(&targets[i], req.Msg, m.Sender)
		}
	}
}

// definitive reports whether a device's failure answer means it will not
// take the message (rather than that it could not be reached now).
func definitive(code int) bool {
	switch code {
	case 408, 480, 500, 503, 504:
		return false
	}
	return code >= 400
}

// watchLate waits for branches still open when the MESSAGE was stored: a
// 2xx means that device has it.
func (w *Wake) watchLate(ctx context.Context, cancel context.CancelFunc, events <-chan proxy.BranchEvent,
	byBranch map[*proxy.Branch]*store.Binding, id string, open int) {
	defer cancel()
	deadline := time.NewTimer(deliverTimeout + sip.Timer_F)
	defer deadline.Stop()
	for open > 0 {
		select {
		case ev := <-events:
			if !ev.Final() {
				continue
			}
			open--
			if ev.Response.StatusCode < 300 {
				w.acknowledge(id, byBranch[ev.Branch].Instance, time.Time{})
			}
		case <-deadline.C:
			return
		}
	}
}

// flowUsable reports whether a request can be sent to a device now:
// through the node that owns its flow (which answers 480 when the
// connection is gone), or over a connection this node holds (UDP always).
func (w *Wake) flowUsable(srv *proxy.Server, b *store.Binding) bool {
	if r := w.cfg.Router; r != nil && r.OwnedElsewhere(*b) {
		return true
	}
	return srv.FlowAlive(b.Transport, b.Source)
}

// targetFor is where a request for b goes from this node.
func (w *Wake) targetFor(b *store.Binding, callID string) (proxy.Target, error) {
	if r := w.cfg.Router; r != nil && r.OwnedElsewhere(*b) {
		return r.RelayTarget(*b, callID)
	}
	return registrar.TargetFor(*b)
}

func senderOf(m *sip.Request) string {
	if f := m.From(); f != nil {
		return f.Address.String()
	}
	return ""
}

// pushMessage sends one alert push (iOS, never VoIP) or data push
// (Android) for a stored message; pushes for one sender collapse.
func (w *Wake) pushMessage(b *store.Binding, m *sip.Request, sender string) {
	if b.Push == nil || w.cfg.Pusher == nil {
		return
	}
	t := b.Push
	n := &push.Notification{
		Target:     registrar.PushTarget(t),
		Payload:    push.Payload{Event: push.EventMessage, CallID: m.CallID().Value(), AOR: b.AOR},
		CollapseID: push.CollapseID(b.AOR + "\x00" + sender),
		Expiration: time.Now().Add(w.cfg.MessageTTL),
	}
	if w.cfg.IncludeCaller {
		n.Payload.FromURI = sender
		if f := m.From(); f != nil {
			n.Payload.FromName = strings.Trim(f.DisplayName, `"`)
		}
	}
	if w.cfg.MessagePreview {
		n.Payload.Body = preview(m)
	}
	switch {
	case registrar.IsAPNs(t):
		if !registrar.Accepts(t, registrar.PushTypeRemote) {
			return // a VoIP-only device: VoIP pushes are for calls only
		}
		n.Type = push.TypeAlert
		label := n.Payload.FromName
		if label == "" {
			label = n.Payload.FromURI
		}
		n.Alert = &push.Alert{Title: "New message", Body: firstNonEmpty(n.Payload.Body, label)}
	default:
		n.Type = push.TypeData
	}
	tok := t.Token
	err := w.cfg.Pusher.Send(n, func(_ push.Result, err error) {
		fields := []zap.Field{proxy.CallID(n.Payload.CallID), proxy.AOR(b.AOR), zap.String("event", string(push.EventMessage)),
			zap.String(proxy.FieldPNProvider, t.Provider), proxy.PNToken(tok)}
		switch {
		case err == nil:
			w.log.Info("push sent", fields...)
		case push.IsPermanent(err):
			w.log.Info("push token pruned", append(fields, zap.Error(err))...)
			w.pruneToken(*b, tok, t.Provider, push.ReasonOf(err))
		default:
			w.log.Info("push failed", append(fields, zap.Error(err))...)
		}
	})
	if err != nil {
		w.log.Info("push failed", proxy.AOR(b.AOR), zap.Error(err))
	}
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// preview is the start of a text message body for a push.
func preview(m *sip.Request) string {
	if h := m.ContentType(); h == nil || !strings.HasPrefix(strings.ToLower(strings.TrimSpace(h.Value())), "text/plain") {
		return ""
	}
	body := strings.TrimSpace(string(m.Body()))
	if len(body) > previewMax {
		cut := previewMax
		for cut > 0 && (body[cut]&0xC0) == 0x80 {
			cut-- // not inside a UTF-8 sequence
		}
		body = body[:cut] + "…"
	}
	return body
}

// pruneToken removes a dead token from a binding, unless a fresh
// REGISTER replaced it meanwhile (compare-and-clear), off the SIP path.
func (w *Wake) pruneToken(b store.Binding, tok, provider, reason string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cleared, err := w.cfg.Store.ClearPush(ctx, b.AOR, b.Instance, tok)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			w.log.Warn("push token not pruned", proxy.AOR(b.AOR), zap.Error(err))
			return
		}
		if cleared {
			if pc, ok := w.cfg.Pusher.(pruneCounter); ok {
				pc.Pruned(provider, reason)
			}
		}
	}()
}

// acknowledge records that instance has message id.
func (w *Wake) acknowledge(id, instance string, stored time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := w.cfg.Store.Acknowledge(ctx, id, instance); err != nil && !errors.Is(err, store.ErrNotFound) {
		w.log.Warn("message delivery not recorded", zap.Error(err))
		return
	}
	w.metrics.deliveries.WithLabelValues(resultDelivered).Inc()
	if !stored.IsZero() {
		w.metrics.deliveryDelay.Observe(time.Since(stored).Seconds())
	}
}

// deliverer sends stored messages to devices as they register, one
// round per device at a time, with backoff while a registered device
// does not answer.
type deliverer struct {
	mu      sync.Mutex
	running map[string]bool        // device key → a round is running
	again   map[string]bool        // device key → run another round after
	retries map[string]*retryState // device key → backoff
}

type retryState struct {
	n     int
	timer *time.Timer
}

func deviceKey(aor, instance string) string { return aor + "\x00" + instance }

// Why a delivery round starts.
const (
	kickRegistered = iota // the device registered: backoff reset
	kickRetry             // its backoff timer fired
	kickScan              // the periodic pick-up found messages for it
)

// kick starts a delivery round to (aor, instance) unless one runs or, for
// the periodic scan, the device is backing off.
func (w *Wake) kick(aor, instance string, why int) {
	d := &w.dl
	k := deviceKey(aor, instance)
	d.mu.Lock()
	if r := d.retries[k]; r != nil {
		switch why {
		case kickRegistered:
			r.timer.Stop()
			delete(d.retries, k)
		case kickScan:
			d.mu.Unlock()
			return
		}
	}
	if d.running[k] {
		d.again[k] = true
		d.mu.Unlock()
		return
	}
	d.running[k] = true
	d.mu.Unlock()
	late := why == kickRegistered && w.cfg.MessageLateDelivery
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			ok := w.deliverRound(aor, instance)
			if late {
				// After its own messages went out (the bookkeeping
				// reads every message of the AOR): messages still
				// waiting for its other devices become its too.
				late = false
				if ok && w.addLate(aor, instance) {
					continue
				}
			}
			d.mu.Lock()
			if d.again[k] {
				delete(d.again, k)
				d.mu.Unlock()
				continue
			}
			delete(d.running, k)
			if !ok {
				r := d.retries[k]
				if r == nil {
					r = &retryState{}
					d.retries[k] = r
				}
				wait := retryFirst << min(r.n, 10)
				if wait > retryMax {
					wait = retryMax
				}
				r.n++
				r.timer = time.AfterFunc(wait, func() { w.kick(aor, instance, kickRetry) })
			} else if r := d.retries[k]; r != nil {
				delete(d.retries, k)
			}
			d.mu.Unlock()
			return
		}
	}()
}

// deliverRound sends a device every message pending for it, in arrival
// order, over its current flow, under the device's delivery lease. It
// reports false when a message could not be delivered (retry later).
func (w *Wake) deliverRound(aor, instance string) bool {
	select {
	case <-w.stopCh:
		return true
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	msgs, err := w.cfg.Store.MessagesFor(ctx, aor, instance, deliverPageSize)
	if err != nil {
		w.log.Warn("stored messages not read", proxy.AOR(aor), zap.Error(err))
		return false
	}
	if len(msgs) == 0 {
		return true
	}
	b := w.liveBinding(ctx, aor, instance)
	if b == nil {
		return true // not registered: delivered when it registers
	}
	if r := w.cfg.Router; r != nil && r.OwnedElsewhere(*b) {
		return true // the node holding its connection delivers
	}
	if !w.cfg.Server.FlowAlive(b.Transport, b.Source) {
		return true // asleep (its connection is gone): when it registers
	}
	key := "msg-delivery\x00" + deviceKey(aor, instance)
	ok, err := w.cfg.Store.Lease(ctx, key, w.cfg.NodeID, deliverLease)
	if err != nil || !ok {
		// Another node delivers (or died holding the lease): look again
		// after a backoff rather than only at the next scan.
		return false
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = w.cfg.Store.ReleaseLease(rctx, key, w.cfg.NodeID)
		rcancel()
	}()
	t, err := registrar.TargetFor(*b)
	if err != nil {
		return true
	}
	// Page by page: the first message goes out without every waiting one
	// being read; each page holds what is still pending after the last.
	seen := map[string]bool{}
	for {
		if !w.deliverPage(ctx, aor, instance, t, msgs, seen) {
			return false
		}
		if len(msgs) < deliverPageSize {
			return true
		}
		if ok, err := w.cfg.Store.Lease(ctx, key, w.cfg.NodeID, deliverLease); err != nil || !ok {
			return false
		}
		if msgs, err = w.cfg.Store.MessagesFor(ctx, aor, instance, deliverPageSize); err != nil {
			return false
		}
		if len(msgs) == 0 || seen[msgs[0].ID] {
			return true // nothing new (an acknowledgement did not stick: next round)
		}
	}
}

// deliverPageSize is how many stored messages a delivery round reads at
// once.
const deliverPageSize = 10

// deliverPage sends one page of messages to a device, in order; it
// reports false when one could not be delivered (retry later).
func (w *Wake) deliverPage(ctx context.Context, aor, instance string, t proxy.Target, msgs []store.StoredMessage, seen map[string]bool) bool {
	for _, m := range msgs {
		seen[m.ID] = true
		if time.Now().After(m.Expires) {
			continue // the sweeper reports it
		}
		msg, err := sip.ParseMessage(m.Request)
		req, isReq := msg.(*sip.Request)
		if err != nil || !isReq {
			w.log.Warn("stored message unusable", proxy.AOR(aor), zap.Error(err))
			_, _ = w.cfg.Store.Acknowledge(ctx, m.ID, instance)
			continue
		}
		dctx, dcancel := context.WithTimeout(ctx, deliverTimeout)
		res, err := w.cfg.Server.Send(dctx, req, t)
		dcancel()
		fields := []zap.Field{proxy.CallID(req.CallID().Value()), proxy.AOR(aor), zap.String(proxy.FieldInstance, maskInstance(instance))}
		switch {
		case err == nil && res.StatusCode < 300:
			w.acknowledge(m.ID, instance, m.Received)
			w.log.Info("message delivered", append(fields, zap.Float64(proxy.FieldDuration, time.Since(m.Received).Seconds()))...)
		case err == nil && definitive(res.StatusCode):
			if _, aerr := w.cfg.Store.Acknowledge(ctx, m.ID, instance); aerr == nil {
				w.metrics.deliveries.WithLabelValues(resultRefused).Inc()
			}
			w.log.Info("message refused", append(fields, proxy.Status(res.StatusCode))...)
		default:
			_ = w.cfg.Store.CountAttempt(ctx, m.ID)
			w.metrics.deliveries.WithLabelValues(resultFailed).Inc()
			if err != nil {
				fields = append(fields, zap.Error(err))
			} else {
				fields = append(fields, proxy.Status(res.StatusCode))
			}
			w.log.Info("message delivery failed", fields...)
			return false
		}
	}
	return true
}

// liveBinding finds the live binding of one device.
func (w *Wake) liveBinding(ctx context.Context, aor, instance string) *store.Binding {
	bs, err := w.cfg.Store.Bindings(ctx, aor)
	if err != nil {
		return nil
	}
	for i := range bs {
		if bs[i].Instance == instance {
			return &bs[i]
		}
	}
	return nil
}

// messagesOnRegister starts deliveries to a device whose registration
// the PBX accepted (on any node); with late delivery on, messages still
// waiting for the AOR's other devices then become its too.
func (w *Wake) messagesOnRegister(aor, instance string) {
	w.kick(aor, instance, kickRegistered)
}

// addLate makes instance a target of the AOR's messages that still wait
// for another device; it reports whether it added any.
func (w *Wake) addLate(aor, instance string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := w.cfg.Store.ListMessages(ctx, store.MessageFilter{AOR: aor})
	if err != nil {
		return false
	}
	added := false
	for _, m := range msgs {
		if !contains(m.Pending, instance) && !contains(m.Delivered, instance) {
			added = w.cfg.Store.AddPending(ctx, m.ID, instance) == nil || added
		}
	}
	return added
}

// messagesResync runs a pick-up scan at once when the store's event
// subscription was interrupted (a Redis restart or failover): a device
// that registered meanwhile, its event lost, gets its stored messages now
// rather than at the next periodic scan.
func (w *Wake) messagesResync(ctx context.Context) {
	w.log.Info("store events resumed: picking up stored messages")
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.sweepMessages(ctx)
	}()
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// messageHousekeeping sweeps expired messages, counts the pending ones,
// and picks up deliveries to registered devices (after a restart, or a
// node that went away).
func (w *Wake) messageHousekeeping(ctx context.Context) {
	t := time.NewTicker(messageScan)
	defer t.Stop()
	w.repushRecent(ctx)
	for {
		w.sweepMessages(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// repushWindow: messages stored this shortly before a node started may
// have been answered 202 by a node that died before their push went out.
const repushWindow = 2 * time.Minute

// repushRecent pushes, once at start, the sleeping devices of messages
// stored just before this node started (its push may have been lost with
// the node that stored it; a repeated push collapses with the first).
func (w *Wake) repushRecent(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	live, err := w.cfg.Store.ListMessages(lctx, store.MessageFilter{})
	if err != nil {
		return
	}
	latest := map[string]store.StoredMessage{} // device → newest message
	for _, m := range live {
		if m.Received.Before(w.started.Add(-repushWindow)) || m.Received.After(w.started) {
			continue
		}
		for _, inst := range m.Pending {
			latest[deviceKey(m.AOR, inst)] = m
		}
	}
	for k, m := range latest {
		_, inst, _ := strings.Cut(k, "\x00")
		b := w.liveBinding(lctx, m.AOR, inst)
		if b == nil || b.Push == nil || (w.cfg.Server != nil && w.cfg.Server.FlowAlive(b.Transport, b.Source)) {
			continue
		}
		msg, err := sip.ParseMessage(m.Request)
		if req, ok := msg.(*sip.Request); err == nil && ok {
			w.pushMessage(b, req, m.Sender)
		}
	}
}

func (w *Wake) sweepMessages(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	expired, err := w.cfg.Store.ListMessages(lctx, store.MessageFilter{Expired: true})
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("stored messages not listed", zap.Error(err))
		}
		return
	}
	for _, m := range expired {
		if err := w.cfg.Store.DeleteMessage(lctx, m.ID); err != nil {
			continue // another node swept it
		}
		w.metrics.deliveries.WithLabelValues(resultExpired).Add(float64(len(m.Pending)))
		w.log.Warn("message expired", zap.String("message_id", m.ID), proxy.AOR(m.AOR),
			zap.Int("undelivered", len(m.Pending)), zap.Float64(proxy.FieldDuration, time.Since(m.Received).Seconds()))
	}
	live, err := w.cfg.Store.ListMessages(lctx, store.MessageFilter{})
	if err != nil {
		return
	}
	w.metrics.messagesPending.Set(float64(len(live)))
	seen := map[string]bool{}
	for _, m := range live {
		for _, inst := range m.Pending {
			k := deviceKey(m.AOR, inst)
			if !seen[k] {
				seen[k] = true
				w.kick(m.AOR, inst, kickScan)
			}
		}
	}
}
