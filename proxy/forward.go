package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// ForwardOptions tells the forwarder where and how to relay a request.
type ForwardOptions struct {
	// Target is the next hop.
	Target Target
	// Prepare edits the outgoing copy after the standard proxy changes
	// (Request-URI, Max-Forwards, Via, Record-Route).
	Prepare func(out *sip.Request) error
	// OnResponse edits each response, already without our Via, before it
	// is relayed; it may return a different response. It runs in the
	// forwarding goroutine, in order.
	OnResponse func(res *sip.Response) *sip.Response
	// NoRecordRoute keeps sipwake out of the dialog's route set.
	NoRecordRoute bool
}

// Timer C (RFC 3261 §16.6 step 11): an INVITE branch that got a
// provisional response but no final one is cancelled after it.
const timerC = 3 * time.Minute

// maxUDPRequest: a request larger than this is sent over TCP when the next
// hop is not a device flow (RFC 3261 §18.1.1, path MTU unknown).
const maxUDPRequest = 1300

var raiseUDPLimit sync.Once

// forward relays r statefully to opt.Target and its responses back.
func (s *Server) forward(ctx context.Context, r *Request, opt ForwardOptions) {
	req := r.Msg
	if !r.Forwardable() {
		return
	}
	t := opt.Target
	out, tp, raw, err := s.outgoing(r, opt)
	if err != nil {
		var fe *forwardError
		if errors.As(err, &fe) {
			r.Log().Info("flow gone", zap.String(FieldDst, t.Dest), zap.String(FieldTransport, strings.ToLower(tp)))
			if !req.IsAck() {
				r.Respond(fe.code, fe.reason, sip.NewHeader("Warning", fe.warning))
			}
			return
		}
		r.Log().Warn("forward failed", zap.Error(err))
		r.Respond(500, "Server Internal Error")
		return
	}
	s.metrics.request(out.Method, dirOut)
	if req.IsAck() {
		if err := s.writeMsg(out); err != nil {
			r.Log().Info("ack not forwarded", zap.String(FieldDst, t.Dest), zap.Error(err))
		}
		return
	}
	var (
		tx        sip.ClientTransaction
		responses chan *sip.Response
		release   func()
	)
	err = errNoLight
	if tp == "UDP" && (out.IsInvite() || r.light) && out.Method != sip.CANCEL {
		tx, responses, release, err = s.launchLight(out, raw)
	}
	if errors.Is(err, errNoLight) {
		tx, responses, release, err = s.launch(out, tp)
	}
	if err != nil {
		s.upstreamState(t, false)
		r.Log().Info("forward failed", zap.String(FieldDst, t.Dest), zap.Error(err))
		r.Respond(503, "Service Unavailable", sip.NewHeader("Warning", `399 sipwake "next hop unreachable"`))
		return
	}
	defer release()
	s.relay(r, opt, out, tx, responses)
}

// Forwardable applies the checks every forwarded request passes (RFC 3261
// §16.3): Max-Forwards (483) and loop detection (482). It answers and
// returns false when the request must not be forwarded.
func (r *Request) Forwardable() bool {
	if mf := r.Msg.MaxForwards(); mf != nil && *mf == 0 {
		r.Respond(483, "Too Many Hops")
		return false
	}
	if r.srv.looped(r.Msg) {
		r.Log().Info("request refused", zap.String("reason", "loop detected"))
		r.Respond(482, "Loop Detected")
		return false
	}
	return true
}

// forwardError is a forward refused for a reason the caller should hear.
type forwardError struct {
	code    int
	reason  string
	warning string
}

func (e *forwardError) Error() string { return "proxy: " + e.reason }

// errFlowGone: the device's connection is closed and may not be reopened.
var errFlowGone = &forwardError{480, "Temporarily Unavailable", `399 sipwake "device connection closed"`}

// outgoing builds the copy of r to send to opt.Target and picks its
// transport: TCP instead of UDP for a large request to a non-device hop
// (RFC 3261 §18.1.1). A device flow that no longer exists gives
// errFlowGone.
//
// raw is out serialised when the size check needed it (else nil).
func (s *Server) outgoing(r *Request, opt ForwardOptions) (out *sip.Request, tp string, raw []byte, err error) {
	t := opt.Target
	tp = strings.ToUpper(t.Transport)
	if tp == "" {
		tp = "UDP"
	}
	out, err = s.buildForward(r, opt, tp)
	if err != nil {
		return nil, tp, nil, err
	}
	if tp == "UDP" && !t.Flow && s.listenerFor("TCP") != nil {
		if raw = encode(out); len(raw) > maxUDPRequest {
			tp, raw = "TCP", nil
			if out, err = s.buildForward(r, opt, tp); err != nil {
				return nil, tp, nil, err
			}
		}
	}
	if t.Flow && tp != "UDP" && !s.FlowAlive(tp, t.Dest) {
		return nil, tp, nil, errFlowGone
	}
	return out, tp, raw, nil
}

// FlowAlive reports whether this node holds a connection over transport
// (TCP or TLS) to dest; UDP flows always count as alive.
func (s *Server) FlowAlive(transport, dest string) bool {
	tp := strings.ToUpper(transport)
	if tp == "UDP" || tp == "" {
		return true
	}
	c, err := s.tpl.GetConnection(tp, dest)
	if err != nil {
		return false
	}
	_, _ = c.TryClose() // drop the reference the lookup took
	return true
}

// launch sends out on a new client transaction over transport tp. It
// returns the transaction, the queue the response tap fills for it, and a
// release function to call when the caller stops reading the queue.
func (s *Server) launch(out *sip.Request, tp string) (sip.ClientTransaction, chan *sip.Response, func(), error) {
	key := branchKey(out.Via(), out.Method)
	responses := make(chan *sip.Response, 32)
	s.branches.Store(key, responses)
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t0 := s.tapTime()
	tx, err := s.txl.Request(cctx, out)
	cancel()
	if err != nil {
		s.branches.Delete(key)
		return nil, nil, nil, err
	}
	s.captureOnConn(txConn(tx), out, t0)
	// The transaction's own response channel must be drained for its
	// state machine to go on (a blocked pass-up would hold its lock); the
	// responses relayed come from the tap. After the final response
	// nothing more is passed up (later 2xx go to the retransmission
	// hook), so the drain ends there instead of living as long as the
	// transaction.
	var accepted atomic.Bool // an INVITE got a 2xx
	go func() {
		for {
			select {
			case res := <-tx.Responses():
				if res != nil && !res.IsProvisional() {
					accepted.Store(res.IsSuccess())
					return
				}
			case <-tx.Done():
				return
			}
		}
	}()
	release := func() {
		s.branches.Delete(key)
		// The transaction outlives the relay: it still has to ACK a
		// non-2xx final response (handled on sipgo's goroutine, possibly
		// after the tap relayed it) and absorb retransmissions.
		select {
		case <-tx.Done():
			return
		default:
		}
		switch {
		case !out.IsInvite() && sip.IsReliable(tp):
			tx.Terminate() // no retransmission to absorb
		case !out.IsInvite():
			// sipgo keeps a completed non-INVITE client transaction for
			// Timer D (32 s); RFC 3261 §17.1.2.2 says Timer K (T4).
			time.AfterFunc(sip.T4, tx.Terminate)
		default:
			// INVITE: sipgo's timers end it (Timer M, 32 s, after a 2xx,
			// RFC 6026; Timer D after an ACKed failure). After a 2xx it
			// goes after T4 instead, as in Kamailio's tm: later 2xx
			// retransmissions are relayed without it (strayResponse).
			// The bound of Timer B is for one whose peer never answers
			// a CANCEL.
			time.AfterFunc(sip.T4, func() {
				if accepted.Load() {
					tx.Terminate()
					return
				}
				time.AfterFunc(sip.Timer_B-sip.T4, tx.Terminate)
			})
		}
	}
	return tx, responses, release, nil
}

// branchKey names a client transaction for the response tap: the branch
// and the method (a CANCEL shares its INVITE's branch).
func branchKey(via *sip.ViaHeader, method sip.RequestMethod) string {
	if via == nil {
		return ""
	}
	b, _ := via.Params.Get("branch")
	return b + "|" + string(method)
}

// tapResponse is the transport layer's first message handler: it runs in
// the reading goroutine, in arrival order, and queues each response for
// the branch that forwarded its request.
func (s *Server) tapResponse(m sip.Message) {
	res, ok := m.(*sip.Response)
	if !ok {
		return
	}
	cs := res.CSeq()
	if cs == nil {
		return
	}
	method := cs.MethodName
	if method == sip.ACK {
		return
	}
	v, ok := s.branches.Load(branchKey(res.Via(), method))
	if !ok {
		return
	}
	switch q := v.(type) {
	case *lightClientTx:
		// The read filter missed it: sipgo goes on with this response
		// (as a stray), the light transaction takes a copy of its own.
		q.receive(res.Clone())
	case chan *sip.Response:
		select {
		case q <- res:
		default:
			s.metrics.dropped.WithLabelValues("response_queue_full").Inc()
		}
	}
}

// buildForward makes the outgoing copy of r for transport tp (RFC 3261
// §16.6 steps 1-8).
func (s *Server) buildForward(r *Request, opt ForwardOptions, tp string) (*sip.Request, error) {
	req := r.Msg
	t := opt.Target
	l := s.listenerFor(tp)
	if l == nil {
		return nil, errors.New("proxy: no listener for transport " + tp)
	}
	var out *sip.Request
	if r.light && !req.IsInvite() {
		out = shallowCopy(req)
	} else {
		out = req.Clone()
	}
	if t.URI != nil {
		out.Recipient = *t.URI.Clone()
	}
	if mf := out.MaxForwards(); mf != nil {
		mf.Dec()
	} else {
		m := sip.MaxForwardsHeader(70)
		out.AppendHeader(&m)
	}
	if !opt.NoRecordRoute && !t.Relay && !r.InDialog() && recordRoutes(req.Method) {
		s.addRecordRoute(r, out, l, t, tp)
	}
	addressOut(out, l, tp, loopHash(req, viaKey(req.Via()))+"."+randomToken(), t.Dest)
	if opt.Prepare != nil {
		if err := opt.Prepare(out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// shallowCopy copies a request on a light transaction for forwarding: the
// copy shares the header values, which neither the forwarder nor the
// registrar's Prepare edit in place (they add, remove and replace
// headers), except Max-Forwards, which gets a value of its own. Nothing
// else reads the request concurrently, and the copy is serialised before
// the handler goes on.
func shallowCopy(req *sip.Request) *sip.Request {
	out := sip.NewRequest(req.Method, req.Recipient)
	out.SipVersion = req.SipVersion
	for _, h := range req.Headers() {
		if mf, ok := h.(*sip.MaxForwardsHeader); ok {
			v := *mf
			h = &v
		}
		out.AppendHeader(h)
	}
	out.SetBody(req.Body())
	return out
}

// addressOut puts our Via (branch = branchPrefix + branch, rport) on top
// of an outgoing request and addresses it to dest over transport tp from
// listener l: UDP requests leave from the listener's own address, so that
// replies come back to the socket that serves them.
func addressOut(out *sip.Request, l *listener, tp, branch, dest string) {
	params := sip.NewParams()
	params.Add("branch", branchPrefix+branch)
	params.Add("rport", "")
	out.PrependHeader(&sip.ViaHeader{
		ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: tp,
		Host: l.advHost, Port: l.advPort, Params: params,
	})
	out.SetTransport(tp)
	out.SetDestination(dest)
	out.SetSource("")
	out.Laddr = sip.Addr{}
	if tp == "UDP" {
		out.Laddr = sip.Addr{IP: net.IP(l.bound.Addr().AsSlice()), Port: int(l.bound.Port())}
	}
}

func recordRoutes(m sip.RequestMethod) bool {
	return m == sip.INVITE || m == sip.SUBSCRIBE || m == sip.REFER
}

// addRecordRoute inserts our Record-Route (RFC 3261 §16.6 step 4): one
// entry when both legs use the same listener, two when they differ
// (transport or interface). The entry facing the device carries the
// device's flow token.
func (s *Server) addRecordRoute(r *Request, out *sip.Request, lout *listener, t Target, tp string) {
	lin := s.listenerFor(r.Transport)
	if lin == nil {
		lin = lout
	}
	cid := ""
	if h := out.CallID(); h != nil {
		cid = h.Value()
	}
	var inTok, outTok string
	switch {
	case t.Device:
		outTok = s.flows.encode(Flow{Transport: tp, Remote: t.Dest}, cid)
	case !r.Trusted:
		inTok = s.flows.encode(Flow{Transport: r.Transport, Remote: r.Source}, cid)
	}
	if lin == lout {
		tok := outTok
		if tok == "" {
			tok = inTok
		}
		out.PrependHeader(&sip.RecordRouteHeader{Address: rrURI(lout, tok)})
		return
	}
	out.PrependHeader(&sip.RecordRouteHeader{Address: rrURI(lin, inTok)})
	out.PrependHeader(&sip.RecordRouteHeader{Address: rrURI(lout, outTok)})
}

func rrURI(l *listener, user string) sip.Uri {
	p := sip.NewParams()
	p.Add("transport", strings.ToLower(l.network))
	p.Add("lr", "")
	return sip.Uri{Scheme: "sip", User: user, Host: l.advHost, Port: l.advPort, UriParams: p}
}

// PathValue is the Path header value (RFC 3327), "<uri>", sipwake adds to
// a REGISTER that reached it over transport: made once per listener.
func (s *Server) PathValue(transport string) (string, error) {
	l := s.listenerFor(transport)
	if l == nil {
		return "", errors.New("proxy: no listener for transport " + transport)
	}
	return l.path, nil
}

func randomToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// relay waits for the branch's responses and relays them (RFC 3261 §16.7),
// handling CANCEL, Timer C and 2xx retransmissions.
func (s *Server) relay(r *Request, opt ForwardOptions, out *sip.Request, tx sip.ClientTransaction, responses <-chan *sip.Response) {
	isInvite := out.IsInvite()
	var (
		mu        sync.Mutex
		gotProv   bool
		cancelled bool
		sentCncl  bool
	)
	// A light transaction's responses belong to the relay alone; sipgo's
	// are shared with its transaction, so they are copied before editing.
	_, owned := tx.(*lightClientTx)
	sendCancel := func(reason sip.Header) {
		// under mu
		if sentCncl {
			return
		}
		sentCncl = true
		go s.sendCancel(out, reason)
	}
	if isInvite {
		r.Tx.OnCancel(func(c *sip.Request) {
			mu.Lock()
			defer mu.Unlock()
			cancelled = true
			r.answered.Store(true) // the transaction layer answered 487
			r.failed.Store(true)
			if gotProv {
				sendCancel(FirstHeader(c, "Reason"))
			}
		})
		tx.OnRetransmission(func(res *sip.Response) {
			if res.IsSuccess() {
				s.relay2xxRetransmission(r, opt, res)
			}
		})
	}
	var tc <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case res := <-responses:
			s.metrics.response(out.Method, res.StatusCode, dirIn)
			s.upstreamState(opt.Target, true)
			if res.StatusCode == 100 {
				continue // hop by hop
			}
			if res.IsProvisional() {
				mu.Lock()
				gotProv = true
				if cancelled {
					sendCancel(nil)
				}
				mu.Unlock()
				if isInvite {
					if timer == nil {
						timer = time.NewTimer(timerC)
						tc = timer.C
					} else {
						timer.Reset(timerC)
					}
				}
			}
			s.relayResponse(r, opt, res, owned)
			if !res.IsProvisional() {
				return
			}
		case <-tx.Done():
			err := tx.Err()
			failed := errors.Is(err, sip.ErrTransactionTimeout) || errors.Is(err, sip.ErrTransactionTransport)
			if failed {
				s.upstreamState(opt.Target, false)
			} else if s.relayQueued(r, opt, out, responses, owned) {
				// Ended normally: its final response is in the queue.
				return
			}
			if r.answered.Load() {
				return
			}
			if errors.Is(err, sip.ErrTransactionTimeout) {
				r.Respond(408, "Request Timeout")
			} else {
				r.Log().Info("forward failed", zap.String(FieldDst, opt.Target.Dest), zap.Error(err))
				r.Respond(503, "Service Unavailable", sip.NewHeader("Warning", `399 sipwake "next hop failed"`))
			}
			return
		case <-tc:
			mu.Lock()
			sendCancel(sip.NewHeader("Reason", `SIP;cause=408;text="Timer C"`))
			mu.Unlock()
			if !r.answered.Load() {
				r.Respond(408, "Request Timeout")
			}
			return
		}
	}
}

// relayQueued relays what the tap queued for a transaction that ended
// without a failure, waiting briefly for its final response. It reports
// whether a final response was relayed.
func (s *Server) relayQueued(r *Request, opt ForwardOptions, out *sip.Request, responses <-chan *sip.Response, owned bool) bool {
	wait := time.NewTimer(time.Second)
	defer wait.Stop()
	for {
		select {
		case res := <-responses:
			s.metrics.response(out.Method, res.StatusCode, dirIn)
			if res.StatusCode == 100 {
				continue
			}
			s.relayResponse(r, opt, res, owned)
			if !res.IsProvisional() {
				return true
			}
		case <-wait.C:
			return false
		}
	}
}

// relayResponse sends a downstream response upstream on the server
// transaction after removing our Via; owned tells that res may be edited
// in place.
func (s *Server) relayResponse(r *Request, opt ForwardOptions, res *sip.Response, owned bool) {
	out := upstreamResponse(r, opt, res, owned)
	if out == nil {
		return
	}
	if r.answered.Load() && !out.IsSuccess() {
		return // already answered (CANCEL, Timer C)
	}
	r.RespondWith(out)
}

// upstreamResponse is the copy of a downstream response that goes back to
// r's sender: without our Via, edited by opt.OnResponse, addressed per the
// next Via. It returns nil when there is nothing to send. A response not
// owned is copied first.
func upstreamResponse(r *Request, opt ForwardOptions, res *sip.Response, owned bool) *sip.Response {
	out := res
	if !owned {
		out = res.Clone()
	}
	out.RemoveHeader("Via")
	if out.Via() == nil {
		return nil
	}
	if opt.OnResponse != nil {
		if out = opt.OnResponse(out); out == nil {
			return nil
		}
	}
	out.SetTransport(r.Transport)
	out.SetDestination(responseDest(out.Via(), r.Source, r.Transport))
	return out
}

// relay2xxRetransmission passes a retransmitted 2xx upstream (RFC 6026):
// through the server transaction while it lives, else straight to the
// transport.
func (s *Server) relay2xxRetransmission(r *Request, opt ForwardOptions, res *sip.Response) {
	out := upstreamResponse(r, opt, res, false)
	if out == nil {
		return
	}
	s.metrics.response(r.Msg.Method, out.StatusCode, dirOut)
	t0 := s.tapTime()
	if !r.failed.Load() && r.Tx.Respond(out) == nil {
		s.captureOnConn(txConn(r.Tx), out, t0)
		return
	}
	_ = s.writeMsg(out)
}

// responseDest is where a response goes (RFC 3261 §18.2.2, RFC 3581 §4):
// the source of the request for reliable transports and when rport was
// used, else the received address and the Via port.
func responseDest(via *sip.ViaHeader, source, transport string) string {
	if sip.IsReliable(transport) {
		return source
	}
	host := via.Host
	port := via.Port
	if rcv, ok := via.Params.Get("received"); ok && rcv != "" {
		host = rcv
	}
	if rp, ok := via.Params.Get("rport"); ok && rp != "" {
		if n, err := strconv.Atoi(rp); err == nil {
			port = n
		}
	}
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
}

// sendCancel cancels a forwarded INVITE (RFC 3261 §9.1, §16.10).
func (s *Server) sendCancel(inv *sip.Request, reason sip.Header) {
	c := sip.NewRequest(sip.CANCEL, inv.Recipient)
	c.SipVersion = inv.SipVersion
	c.AppendHeader(inv.Via().Clone())
	for _, h := range HeadersNamed(inv, "Route") {
		c.AppendHeader(sip.HeaderClone(h))
	}
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	for _, name := range []string{"From", "To", "Call-ID"} {
		if h := FirstHeader(inv, name); h != nil {
			c.AppendHeader(sip.HeaderClone(h))
		}
	}
	if cs := inv.CSeq(); cs != nil {
		c.AppendHeader(&sip.CSeqHeader{SeqNo: cs.SeqNo, MethodName: sip.CANCEL})
	}
	if reason != nil {
		c.AppendHeader(sip.NewHeader("Reason", reason.Value()))
	}
	c.SetTransport(inv.Transport())
	c.SetDestination(inv.Destination())
	c.Laddr = inv.Laddr
	s.metrics.request(sip.CANCEL, dirOut)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t0 := s.tapTime()
	tx, err := s.txl.Request(ctx, c)
	if err != nil {
		s.log.Info("cancel not sent", CallID(inv.CallID().Value()), zap.Error(err))
		return
	}
	s.captureOnConn(txConn(tx), c, t0)
	defer tx.Terminate()
	select {
	case res := <-tx.Responses():
		s.metrics.response(sip.CANCEL, res.StatusCode, dirIn)
	case <-tx.Done():
	}
}

// upstreamState records whether the last exchange with the PBX worked.
func (s *Server) upstreamState(t Target, up bool) {
	if s.upstream == nil || t.Dest != s.upstreamDest {
		return
	}
	if up {
		s.metrics.upstream.Set(1)
	} else {
		s.metrics.upstream.Set(0)
	}
}

// strayResponse handles responses that match no client transaction: a 2xx
// to an INVITE whose transaction is gone (retransmission, RFC 6026) is
// forwarded statelessly along its Via; anything else is dropped.
func (s *Server) strayResponse(res *sip.Response) {
	via := res.Via()
	if via == nil {
		return
	}
	u := sip.Uri{Host: via.Host, Port: via.Port}
	b, _ := via.Params.Get("branch")
	if !strings.HasPrefix(b, branchPrefix) || !s.IsOwnURI(&u) {
		s.metrics.dropped.WithLabelValues("stray_response").Inc()
		return
	}
	if !res.IsSuccess() || res.CSeq() == nil || res.CSeq().MethodName != sip.INVITE {
		return
	}
	out := res.Clone()
	out.RemoveHeader("Via")
	next := out.Via()
	if next == nil {
		return
	}
	tp := strings.ToUpper(next.Transport)
	dest := responseDest(next, "", "UDP")
	if sip.IsReliable(tp) {
		// The connection is found by the address the request came from,
		// which received/rport recorded.
		rcv, _ := next.Params.Get("received")
		rp, _ := next.Params.Get("rport")
		if rcv != "" && rp != "" {
			dest = net.JoinHostPort(rcv, rp)
		}
	}
	if ap, err := netip.ParseAddrPort(dest); err != nil || !ap.Addr().IsValid() {
		return
	}
	out.SetTransport(tp)
	out.SetDestination(dest)
	if err := s.writeMsg(out); err != nil {
		s.log.Debug("stray 2xx not relayed", zap.Error(err))
	}
}

// AnswerStateless sends a final response to req outside any transaction,
// to where the request's top Via says (RFC 3261 §18.2.2): how a node
// answers a call that another node held and can no longer answer. req is
// the request as it was received from source over transport.
func (s *Server) AnswerStateless(req *sip.Request, source, transport string, code int, reason string, hdrs ...sip.Header) error {
	via := req.Via()
	if via == nil {
		return errors.New("proxy: request without Via")
	}
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	tp := strings.ToUpper(transport)
	res.SetTransport(tp)
	res.SetDestination(responseDest(via, source, tp))
	s.metrics.response(req.Method, code, dirOut)
	return (&statelessTx{srv: s}).Respond(res)
}
