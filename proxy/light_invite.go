package proxy

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// lightInviteTx is an INVITE server transaction over UDP (RFC 3261
// §17.2.1, with RFC 6026's Accepted state):
//   - a retransmitted INVITE gets the last provisional response again, or
//     the failure; after a 2xx it is absorbed;
//   - a 2xx passed down again (a retransmission from downstream) goes out;
//   - a failure is resent on Timer G, from T1 doubling up to T2, until its
//     ACK comes or Timer H (64*T1) passes;
//   - a CANCEL that matches it is answered 200 on a transaction of its own,
//     and the INVITE 487 if no final response went out yet; then the
//     OnCancel hooks run (§9.2).
//
// Like the other light transactions it is kept T4 after its final
// response, or up to Timer H while a failure waits for its ACK.
type lightInviteTx struct {
	srv    *Server
	key    string
	pc     net.PacketConn
	source string
	// origin holds what a 487 is built from (Via, From, To, Call-ID,
	// CSeq), copied: the chain edits the request it runs on.
	origin *sip.Request

	mu       sync.Mutex
	last     []byte // the last response sent
	lastTo   netip.AddrPort
	final    int // status of the final response, 0 before
	finalAt  time.Time
	acked    bool
	interval time.Duration
	timerG   *time.Timer
	cancel   *sip.Request // the CANCEL that came, if one did
	onCancel []sip.FnTxCancel

	txEnd
}

var _ sip.ServerTransaction = (*lightInviteTx)(nil)

var (
	invitePrefix = []byte("INVITE ")
	cancelPrefix = []byte("CANCEL ")
)

// lightInvite starts a light INVITE server transaction, or answers a
// retransmission of the INVITE from its state.
func (s *Server) lightInvite(p sip.TransportReadProps, data []byte, key string) bool {
	req, key, pc, ok := s.lightParse(p, data, key)
	if !ok {
		return false
	}
	tx := &lightInviteTx{srv: s, key: key, pc: pc, source: req.Source(), origin: skeleton(req), txEnd: newTxEnd()}
	if prev, loaded := s.light.servers.LoadOrStore(key, tx); loaded {
		if inv, ok := prev.(*lightInviteTx); ok {
			inv.retransmitted()
		}
		return true
	}
	s.inflight.Add(1)
	s.received.Add(1)
	s.run(job{req: req, light: tx, after: s.ackOrder(req)})
	return true
}

// skeleton copies the headers of req that a response is built from.
func skeleton(req *sip.Request) *sip.Request {
	c := sip.NewRequest(req.Method, req.Recipient)
	c.SipVersion = req.SipVersion
	for _, h := range HeadersNamed(req, "Via") {
		c.AppendHeader(sip.HeaderClone(h))
	}
	for _, h := range []sip.Header{req.From(), req.To(), req.CallID(), req.CSeq()} {
		if h != nil {
			c.AppendHeader(sip.HeaderClone(h))
		}
	}
	c.SetTransport(req.Transport())
	c.SetSource(req.Source())
	return c
}

// lightCancel takes a CANCEL over UDP that matches a light INVITE server
// transaction; any other goes to sipgo, which answers 481 when nothing
// matches.
func (s *Server) lightCancel(p sip.TransportReadProps, data []byte, key string) bool {
	req, key, pc, ok := s.lightParse(p, data, key)
	if !ok {
		return false
	}
	// The INVITE's key: the same but for the method (§9.2).
	cs := req.CSeq()
	cs.MethodName = sip.INVITE
	ikey, err := sip.ServerTxKeyMake(req)
	cs.MethodName = sip.CANCEL
	if err != nil {
		return false
	}
	v, ok := s.light.servers.Load(ikey)
	if !ok {
		return false
	}
	inv, ok := v.(*lightInviteTx)
	if !ok {
		return false
	}
	tx, fresh := s.lightServer(req, key, pc)
	if !fresh {
		return true
	}
	s.received.Add(1)
	s.metrics.request(sip.CANCEL, dirIn)
	s.metrics.response(sip.CANCEL, 200, dirOut)
	_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	tx.Terminate()
	inv.cancelled(req)
	return true
}

// cancelled ends a pending INVITE with 487 and runs the OnCancel hooks. A
// CANCEL after the final response changes nothing.
func (t *lightInviteTx) cancelled(c *sip.Request) {
	t.mu.Lock()
	if t.final != 0 || t.cancel != nil {
		t.mu.Unlock()
		return
	}
	t.cancel = c
	t.mu.Unlock()
	res := sip.NewResponseFromRequest(t.origin, 487, "Request Terminated", nil)
	if t.Respond(res) == nil {
		t.srv.metrics.response(sip.INVITE, 487, dirOut)
	}
	t.mu.Lock()
	hooks := t.onCancel
	t.onCancel = nil
	t.mu.Unlock()
	for _, f := range hooks {
		f(c)
	}
}

// OnCancel registers f for a CANCEL of the INVITE. One that already came
// runs f at once, on a goroutine of its own: the caller may hold locks f
// takes.
func (t *lightInviteTx) OnCancel(f sip.FnTxCancel) bool {
	t.mu.Lock()
	c := t.cancel
	if c == nil {
		t.onCancel = append(t.onCancel, f)
	}
	t.mu.Unlock()
	if c != nil {
		go f(c)
	}
	return true
}

func (t *lightInviteTx) Respond(res *sip.Response) error {
	to, b, err := wire(res, t.source)
	if err != nil {
		return err
	}
	t.mu.Lock()
	switch {
	case t.final >= 200 && t.final < 300 && res.IsSuccess():
		// Accepted: a 2xx passed down again goes out (RFC 6026 §8.7).
		t.mu.Unlock()
		return sendUDP(t.pc, b, to)
	case t.final != 0:
		t.mu.Unlock()
		return errAnswered
	}
	t.last, t.lastTo = b, to
	final := res.StatusCode >= 200
	if final {
		t.final, t.finalAt = res.StatusCode, time.Now()
		if res.StatusCode >= 300 {
			t.interval = sip.T1
			t.timerG = time.AfterFunc(t.interval, t.fireG)
		}
	}
	t.mu.Unlock()
	if final {
		t.srv.light.expire(lightExpiry{invite: t})
	}
	return sendUDP(t.pc, b, to)
}

// fireG is Timer G: the failure again, until its ACK or Timer H.
func (t *lightInviteTx) fireG() {
	t.mu.Lock()
	if t.acked || time.Since(t.finalAt) >= sip.Timer_H {
		t.mu.Unlock()
		return
	}
	t.interval = min(2*t.interval, sip.T2)
	t.timerG.Reset(t.interval)
	b, to := t.last, t.lastTo
	t.mu.Unlock()
	_ = sendUDP(t.pc, b, to)
}

// retransmitted answers a retransmission of the INVITE: the last
// provisional response or the failure again; nothing while none went out
// yet, or after a 2xx (RFC 6026 §8.4).
func (t *lightInviteTx) retransmitted() {
	t.mu.Lock()
	b, to := t.last, t.lastTo
	accepted := t.final >= 200 && t.final < 300
	t.mu.Unlock()
	if b != nil && !accepted {
		_ = sendUDP(t.pc, b, to)
	}
}

// acked takes the ACK for a failure; it reports false when the INVITE was
// accepted, whose ACK is a request of its own, for the chain.
func (t *lightInviteTx) ack() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.final >= 200 && t.final < 300 {
		return false
	}
	if t.final >= 300 && !t.acked {
		t.acked = true
		t.timerG.Stop()
	}
	return true // an ACK before any final response is absorbed too
}

// keep reports whether a failure still waits for its ACK.
func (t *lightInviteTx) keep(now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.final >= 300 && !t.acked && now.Sub(t.finalAt) < sip.Timer_H
}

func (t *lightInviteTx) Acks() <-chan *sip.Request { return nil }
func (t *lightInviteTx) Terminate()                { t.end(t.key, nil) }
