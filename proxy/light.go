package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Light transactions carry what arrives over UDP: REGISTER above all,
// what a push gateway mostly does since every app refreshes its
// registration on every wake, and the INVITE, CANCEL, ACK and BYE of
// every call. A transaction's state over UDP is small: on the server side
// the last answer, resent when the request comes again (and a failure to
// an INVITE on Timer G until its ACK); on the client side the request,
// resent until an answer comes (Timers E and F, or A and B). sipgo's
// transaction layer runs every message on a goroutine of its own through
// a state machine with several timers and keeps the parsed request and
// answer; for REGISTER that machinery cost more CPU than the relaying
// itself. The read filter hands such a request, and the answers to the
// requests sent for it, to the light transactions below and in
// light_invite.go instead; the handler chain runs unchanged on them.
//
// A completed light transaction is kept for T4 (5 s), as the sipgo
// transactions of this proxy are (see onRequest): a request retransmitted
// later than that is handled again and the next hop answers it from its
// own state.

var (
	responsePrefix = []byte("SIP/2.0 ")
	ackPrefix      = []byte("ACK ")
)

// lightMethod reports whether data starts a request that a light
// transaction takes: a method token other than INVITE, ACK and CANCEL,
// then a space. Anything odd is left to sipgo and its error answers.
func lightMethod(data []byte) bool {
	i := bytes.IndexByte(data[:min(len(data), 24)], ' ')
	if i <= 0 {
		return false
	}
	for _, c := range data[:i] {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	switch string(data[:i]) {
	case "INVITE", "ACK", "CANCEL":
		return false
	}
	return true
}

// lightTable holds the light transactions of a Server.
type lightTable struct {
	servers sync.Map // server key (RFC 3261 §17.2.3) -> *lightServerTx
	clients sync.Map // branch of our Via -> *lightClientTx

	mu    sync.Mutex
	queue []lightExpiry // in expiry order: every entry waits the same T4
	head  int           // queue[:head] is done
}

type lightExpiry struct {
	at     time.Time
	server *lightServerTx
	invite *lightInviteTx
	client *lightClientTx
}

// expire removes a completed transaction from its table after T4.
func (lt *lightTable) expire(e lightExpiry) {
	e.at = time.Now().Add(sip.T4)
	lt.mu.Lock()
	lt.queue = append(lt.queue, e)
	lt.mu.Unlock()
}

// sweep removes the transactions whose time is up.
func (lt *lightTable) sweep(now time.Time) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	for lt.head < len(lt.queue) && !lt.queue[lt.head].at.After(now) {
		e := lt.queue[lt.head]
		lt.queue[lt.head] = lightExpiry{}
		lt.head++
		if e.server != nil {
			lt.servers.CompareAndDelete(e.server.key, e.server)
		}
		switch {
		case e.invite == nil:
		case e.invite.keep(now):
			// A failure waiting for its ACK: another T4.
			lt.queue = append(lt.queue, lightExpiry{at: now.Add(sip.T4), invite: e.invite})
		default:
			lt.servers.CompareAndDelete(e.invite.key, e.invite)
		}
		switch {
		case e.client == nil:
		case e.client.keep(now):
			// Its CANCEL is out: wait for the 487, another T4.
			lt.queue = append(lt.queue, lightExpiry{at: now.Add(sip.T4), client: e.client})
		default:
			lt.clients.CompareAndDelete(e.client.branch, e.client)
		}
	}
	// Drained after a peak: let the collector have the large array (at
	// 5,000 REGISTER/s it holds over 100,000 entries, several MiB).
	if lt.head == len(lt.queue) && cap(lt.queue) > 4096 {
		lt.queue, lt.head = nil, 0
		return
	}
	// Reuse the front once it is most of the slice.
	if lt.head > 1024 && 2*lt.head > len(lt.queue) {
		n := copy(lt.queue, lt.queue[lt.head:])
		clear(lt.queue[n:])
		lt.queue, lt.head = lt.queue[:n], 0
	}
}

// pending counts the transactions kept (tests).
func (lt *lightTable) pending() (servers, clients int) {
	lt.servers.Range(func(any, any) bool { servers++; return true })
	lt.clients.Range(func(any, any) bool { clients++; return true })
	return
}

// janitor sweeps the light transactions until ctx ends.
func (s *Server) janitor(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.light.sweep(now)
		}
	}
}

// lightRead takes a UDP datagram for a light transaction; it reports
// false for anything else, which sipgo then handles as before.
func (s *Server) lightRead(p sip.TransportReadProps, data []byte) bool {
	if bytes.HasPrefix(data, responsePrefix) {
		return s.lightResponse(p, data)
	}
	// The key read from the raw request (rawServerKey) finds its
	// retransmissions, and serves the parsed request too.
	key, _ := rawServerKey(data)
	if key != "" && s.lightRetransmission(key) {
		return true
	}
	if lightMethod(data) {
		return s.lightRequest(p, data, key)
	}
	switch {
	case bytes.HasPrefix(data, ackPrefix):
		return s.lightAck(p, data)
	case bytes.HasPrefix(data, invitePrefix):
		return s.lightInvite(p, data, key)
	case bytes.HasPrefix(data, cancelPrefix):
		return s.lightCancel(p, data, key)
	}
	return false
}

// lightRetransmission answers a retransmitted request from the state of
// its light server transaction, found by the key read from the raw
// message (rawServerKey), without parsing it. Clients retransmit most
// when answers are slow, under load; each one parsed cost as much as a
// new request. Anything the quick read does not match takes the normal
// path, which matches it again after parsing.
func (s *Server) lightRetransmission(key string) bool {
	v, ok := s.light.servers.Load(key)
	if !ok {
		return false
	}
	switch t := v.(type) {
	case *lightServerTx:
		t.retransmitted()
	case *lightInviteTx:
		t.retransmitted()
	default:
		return false
	}
	return true
}

// lightRequest starts a light server transaction for the request, or
// answers a retransmission of one from its state.
func (s *Server) lightRequest(p sip.TransportReadProps, data []byte, key string) bool {
	req, key, pc, ok := s.lightParse(p, data, key)
	if !ok {
		return false
	}
	tx, fresh := s.lightServer(req, key, pc)
	if !fresh {
		return true
	}
	// Counted from here, not when a worker picks it up, so that Drain
	// never finds the proxy idle while a request waits for a worker.
	s.inflight.Add(1)
	s.received.Add(1)
	s.run(job{req: req, light: tx, after: s.ackOrder(req)})
	return true
}

// lightServer stores a light server transaction for req under key; when
// one is there already, req is a retransmission, answered from its state,
// and fresh is false.
func (s *Server) lightServer(req *sip.Request, key string, pc net.PacketConn) (tx *lightServerTx, fresh bool) {
	tx = &lightServerTx{srv: s, key: key, pc: pc, source: req.Source(), txEnd: newTxEnd()}
	if prev, loaded := s.light.servers.LoadOrStore(key, tx); loaded {
		if c, ok := prev.(*lightServerTx); ok {
			c.retransmitted()
		}
		return nil, false
	}
	return tx, true
}

// lightAck runs the chain for an ACK that belongs to no transaction: the
// ACK for a 2xx, a request of its own (RFC 3261 §17.1.1.3), which the
// chain forwards along the route set and nobody answers. An ACK for a
// failure matches the INVITE's server transaction (its key, §17.2.3), and
// ends it: sipgo's, or a light one.
func (s *Server) lightAck(p sip.TransportReadProps, data []byte) bool {
	req, key, pc, ok := s.lightParse(p, data, "")
	if !ok {
		return false
	}
	if _, pending := s.invites.Load(key); pending {
		return false
	}
	if v, ok := s.light.servers.Load(key); ok {
		if inv, ok := v.(*lightInviteTx); ok && inv.ack() {
			return true
		}
	}
	// Never stored: an ACK is not retransmitted on its own, and gets no
	// answer to resend.
	tx := &lightServerTx{srv: s, key: key, pc: pc, source: req.Source(), txEnd: newTxEnd()}
	s.inflight.Add(1)
	s.received.Add(1)
	// A caller that hangs up at once sends the BYE right behind the ACK;
	// on workers of their own the BYE would often overtake it, and many
	// a UA answers a BYE before the ACK with 481. What comes next in the
	// dialog waits for the ACK to be sent on (ackOrder).
	done := make(chan struct{})
	cid := req.CallID().Value()
	s.acking.Store(cid, done)
	s.run(job{req: req, light: tx, acked: done, callID: cid})
	return true
}

// ackWait is how long a request waits for an ACK read before it in the
// same dialog to be sent on: an ACK takes microseconds, but a machine short
// of CPU delayed some by over 100 ms under load (make bench-sipp). The
// request's own retransmissions meanwhile are absorbed by its transaction.
const ackWait = time.Second

// ackOrder is the ACK of req's dialog still being sent on, if any.
func (s *Server) ackOrder(req *sip.Request) chan struct{} {
	if v, ok := s.acking.Load(req.CallID().Value()); ok {
		return v.(chan struct{})
	}
	return nil
}

// lightParse parses a request read on a UDP listener, with its server
// transaction key: raw, when rawServerKey read one from the bytes (the
// same, FuzzRawServerKey holds), else made from the parsed request. A
// request the transaction layer would reject (no Via, CSeq...) is left to
// it, and so its error answer.
func (s *Server) lightParse(p sip.TransportReadProps, data []byte, raw string) (*sip.Request, string, net.PacketConn, bool) {
	l := s.udpListenerAt(p.LocalAddr)
	if l == nil || l.pc == nil {
		return nil, "", nil, false
	}
	m, err := sip.ParseMessage(data)
	if err != nil {
		return nil, "", nil, false
	}
	req, ok := m.(*sip.Request)
	if !ok || req.Via() == nil || req.CallID() == nil || req.From() == nil || req.To() == nil ||
		req.CSeq() == nil || req.CSeq().MethodName != req.Method {
		return nil, "", nil, false
	}
	key := raw
	if key == "" {
		if key, err = sip.ServerTxKeyMake(req); err != nil {
			return nil, "", nil, false
		}
	}
	req.SetTransport("UDP")
	req.SetSource(p.RemoteAddr.String())
	return req, key, l.pc, true
}

// job is a request waiting for a worker: on a light transaction, or on
// one of sipgo's.
type job struct {
	req   *sip.Request
	light sip.ServerTransaction // *lightServerTx or *lightInviteTx
	tx    *sip.ServerTx
	// after: an ACK read before, in the same dialog, to be sent on first.
	after chan struct{}
	// acked is closed when this ACK was sent on (callID its dialog's).
	acked  chan struct{}
	callID string
}

// workerIdle is how long a worker waits for another request.
const workerIdle = 10 * time.Second

// idleWorkers is a stack of the workers waiting for a request: the next
// request goes to the one that finished last. Workers that live from one
// request to the next keep the stack the handler chain grew: a goroutine
// per request spent 8 to 10% of the CPU copying stacks (sipgo starts one
// for every message it reads). Taken in turn instead (a channel serves
// its waiting receivers first come, first served), every worker of a
// peak stayed in use, idle at each collection, which shrank its stack for
// the next request to grow again; last in, first out keeps the few busy
// ones warm and lets the rest time out.
type idleWorkers struct {
	mu    sync.Mutex
	stack []*idleWorker
}

// idleWorker is a worker's mailbox: one request at a time (buffered, so
// that a hand-off never blocks).
type idleWorker struct{ jobs chan job }

func (w *idleWorkers) push(iw *idleWorker) {
	w.mu.Lock()
	w.stack = append(w.stack, iw)
	w.mu.Unlock()
}

// pop takes the worker idle the shortest time, if any.
func (w *idleWorkers) pop() *idleWorker {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(w.stack)
	if n == 0 {
		return nil
	}
	iw := w.stack[n-1]
	w.stack[n-1] = nil
	w.stack = w.stack[:n-1]
	return iw
}

// remove takes iw off the stack; false when pop took it first (a request
// is then on its way to it).
func (w *idleWorkers) remove(iw *idleWorker) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, x := range w.stack {
		if x == iw {
			copy(w.stack[i:], w.stack[i+1:])
			w.stack[len(w.stack)-1] = nil
			w.stack = w.stack[:len(w.stack)-1]
			return true
		}
	}
	return false
}

// len is how many workers wait.
func (w *idleWorkers) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.stack)
}

// run hands the request to the worker idle the shortest time, or starts
// one.
func (s *Server) run(j job) {
	if iw := s.idle.pop(); iw != nil {
		iw.jobs <- j
		return
	}
	go s.worker(j)
}

func (s *Server) worker(j job) {
	me := &idleWorker{jobs: make(chan job, 1)}
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		if j.after != nil {
			select {
			case <-j.after:
			default:
				wait := time.NewTimer(ackWait)
				select {
				case <-j.after:
				case <-wait.C:
				}
				wait.Stop()
			}
		}
		if j.light != nil {
			s.serveLight(j.req, j.light)
		} else {
			s.serveTx(j.req, j.tx)
		}
		if j.acked != nil {
			close(j.acked)
			s.acking.CompareAndDelete(j.callID, j.acked)
		}
		j = job{} // hold nothing while idle
		idle.Reset(workerIdle)
		s.idle.push(me)
		select {
		case j = <-me.jobs:
			continue
		case <-idle.C:
		case <-s.workerQuit:
		}
		if !s.idle.remove(me) {
			// Taken at the same moment: serve that request first.
			j = <-me.jobs
			continue
		}
		return
	}
}

// serveLight runs the chain for a request on a light transaction (counted
// in flight when it was read).
func (s *Server) serveLight(req *sip.Request, tx sip.ServerTransaction) {
	r := &Request{Msg: req, Tx: tx, Received: time.Now(), Transport: "UDP", Source: req.Source(), srv: s, light: true}
	s.metrics.request(req.Method, dirIn)
	if req.IsInvite() {
		// 100 Trying at once (RFC 3261 §16.2): it stops the caller's
		// retransmissions.
		r.Respond(100, "Trying")
	}
	r.Trusted = s.trusted(r.Source)
	ctx, cancel := context.WithCancel(context.Background())
	r.finish = func() {
		defer s.inflight.Add(-1)
		defer cancel()
		if !r.answered.Load() && !req.IsAck() {
			r.Respond(500, "Server Internal Error")
		}
		tx.Terminate()
	}
	s.dispatch(ctx, r)
	if r.detached.Load() {
		return
	}
	r.finish()
}

// udpListenerAt is the UDP listener bound at local.
func (s *Server) udpListenerAt(local net.Addr) *listener {
	ap := mustAddrPort(local)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lns {
		if l.network == "UDP" && l.bound == ap {
			return l
		}
	}
	return nil
}

// lightServerTx is a non-INVITE server transaction over UDP (RFC 3261
// §17.2.2): responses go out on the listener's socket, towards the top
// Via; the last one is sent again when the request is retransmitted.
type lightServerTx struct {
	srv    *Server
	key    string
	pc     net.PacketConn
	source string

	mu        sync.Mutex
	last      []byte
	lastTo    netip.AddrPort
	completed bool

	txEnd
}

var _ sip.ServerTransaction = (*lightServerTx)(nil)

var (
	errAnswered = errors.New("proxy: transaction already answered")
	errNoVia    = errors.New("proxy: response without Via")
)

// wire is a response to a request from source, serialised, and where it
// goes.
func wire(res *sip.Response, source string) (netip.AddrPort, []byte, error) {
	via := res.Via()
	if via == nil {
		return netip.AddrPort{}, nil, errNoVia
	}
	to, err := viaDest(via, source)
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	return to, encode(res), nil
}

func (t *lightServerTx) Respond(res *sip.Response) error {
	to, b, err := wire(res, t.source)
	if err != nil {
		return err
	}
	final := res.StatusCode >= 200
	t.mu.Lock()
	if t.completed {
		t.mu.Unlock()
		return errAnswered
	}
	t.last, t.lastTo, t.completed = b, to, final
	t.mu.Unlock()
	if final {
		t.srv.light.expire(lightExpiry{server: t})
	}
	return sendUDP(t.pc, b, to)
}

// viaDest is where a response to a request received over UDP from source
// goes (RFC 3261 §18.2.2, RFC 3581 §4): the source address, with the
// source port when the top Via asked for rport, else the Via's port.
func viaDest(via *sip.ViaHeader, source string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(source)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port := uint16(via.Port)
	if via.Params.Has("rport") {
		port = ap.Port()
	}
	if port == 0 {
		port = 5060
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), port), nil
}

// retransmitted answers a retransmission of the request with the last
// response sent, if any (§17.2.2: none while Trying).
func (t *lightServerTx) retransmitted() {
	t.mu.Lock()
	b, to := t.last, t.lastTo
	t.mu.Unlock()
	if b != nil {
		_ = sendUDP(t.pc, b, to)
	}
}

func (t *lightServerTx) Acks() <-chan *sip.Request    { return nil }
func (t *lightServerTx) OnCancel(sip.FnTxCancel) bool { return true } // non-INVITE: no CANCEL
func (t *lightServerTx) Terminate()                   { t.end(t.key, nil) }

// lightClientTx is a client transaction over UDP.
//
// Non-INVITE (RFC 3261 §17.1.2): the request is sent again after T1,
// doubling up to T2 (every T2 once a provisional response came), until a
// final response, and fails with a timeout after 64*T1 (Timer F).
//
// INVITE (§17.1.1, RFC 6026): the request is sent again after T1,
// doubling (Timer A), until any response, and fails with a timeout after
// 64*T1 without one (Timer B). A failure is acknowledged hop by hop, and
// the ACK sent again for each retransmission of it. After a 2xx, the 2xx
// that follow (retransmissions, other forks downstream) go to the
// retransmission hook. The transaction is kept T4 after the relay lets it
// go, longer (up to Timer B) if no final response came yet: a CANCEL is
// then on its way, and the 487 must be acknowledged.
type lightClientTx struct {
	srv       *Server
	branch    string
	method    sip.RequestMethod
	pc        net.PacketConn
	to        netip.AddrPort
	data      []byte
	responses chan *sip.Response
	invite    *sip.Request // the INVITE sent, to build the ACK for a failure
	started   time.Time

	mu        sync.Mutex
	provision bool // a provisional response came: retransmit every T2
	completed bool // a final response came, or the relay stopped reading
	final     int  // the status of the final response, 0 before
	released  bool // the relay reads no more
	ack       []byte
	onRetrans sip.FnTxResponse
	interval  time.Duration
	deadline  time.Time
	timer     *time.Timer

	txEnd
}

var _ sip.ClientTransaction = (*lightClientTx)(nil)

// errNoLight: the request cannot go on a light transaction; the caller
// uses sipgo's.
var errNoLight = errors.New("proxy: no light transaction for this request")

// launchLight sends out, a request other than CANCEL over UDP, on a light
// client transaction; raw, when not nil, is out already serialised. It
// returns the same values as launch.
func (s *Server) launchLight(out *sip.Request, raw []byte) (sip.ClientTransaction, chan *sip.Response, func(), error) {
	l := s.listenerFor("UDP")
	via := out.Via()
	if l == nil || l.pc == nil || via == nil {
		return nil, nil, nil, errNoLight
	}
	branch, _ := via.Params.Get("branch")
	if branch == "" {
		return nil, nil, nil, errNoLight
	}
	to, err := s.udpAddr(out.Destination())
	if err != nil {
		return nil, nil, nil, err
	}
	if raw == nil {
		raw = encode(out)
	}
	t := &lightClientTx{
		srv: s, branch: branch, method: out.Method, pc: l.pc, to: to,
		data:      raw,
		responses: make(chan *sip.Response, 8),
		interval:  sip.T1,
		deadline:  time.Now().Add(time.Duration(s.timerF.Load())),
		started:   time.Now(),
		txEnd:     newTxEnd(),
	}
	if out.IsInvite() {
		t.invite = out
	}
	// Should a response escape the read filter's quick look at its Via
	// (an unusual spelling), sipgo parses it and the response tap still
	// queues it for the relay.
	key := branchKey(via, out.Method)
	s.branches.Store(key, t)
	s.light.clients.Store(branch, t)
	t.mu.Lock()
	t.timer = time.AfterFunc(t.interval, t.fire)
	t.mu.Unlock()
	if err := sendUDP(t.pc, t.data, t.to); err != nil {
		t.stop()
		s.branches.Delete(key)
		s.light.clients.CompareAndDelete(branch, t)
		return nil, nil, nil, err
	}
	release := func() {
		s.branches.Delete(key)
		t.stop()
		t.mu.Lock()
		t.released = true
		t.mu.Unlock()
		// Kept for T4 so that retransmitted responses are absorbed.
		s.light.expire(lightExpiry{client: t})
		t.terminate(nil)
	}
	return t, t.responses, release, nil
}

// fire is Timer E or A (retransmit) and Timer F or B (give up).
func (t *lightClientTx) fire() {
	t.mu.Lock()
	if t.completed || (t.invite != nil && t.provision) {
		t.mu.Unlock()
		return
	}
	now := time.Now()
	if !now.Before(t.deadline) {
		t.completed = true
		t.mu.Unlock()
		t.terminate(sip.ErrTransactionTimeout)
		return
	}
	switch {
	case t.invite != nil:
		t.interval *= 2 // Timer A is not capped
	case t.provision:
		t.interval = sip.T2
	default:
		t.interval = min(2*t.interval, sip.T2)
	}
	t.timer.Reset(min(t.interval, t.deadline.Sub(now)))
	t.mu.Unlock()
	if err := sendUDP(t.pc, t.data, t.to); err != nil && errors.Is(err, net.ErrClosed) {
		t.stop()
		t.terminate(sip.ErrTransactionTransport)
	}
}

// receive takes a response read for the transaction (read goroutine).
func (t *lightClientTx) receive(res *sip.Response) {
	if t.invite != nil {
		t.receiveInvite(res)
		return
	}
	t.mu.Lock()
	if t.completed {
		t.mu.Unlock()
		return // a retransmission of the final response: absorbed
	}
	if res.IsProvisional() {
		t.provision = true
	} else {
		t.completed = true
		t.timer.Stop()
	}
	t.mu.Unlock()
	t.passUp(res)
}

// receiveInvite is receive for an INVITE.
func (t *lightClientTx) receiveInvite(res *sip.Response) {
	t.mu.Lock()
	switch {
	case t.final >= 300 && !res.IsProvisional():
		ack := t.ack
		t.mu.Unlock()
		_ = sendUDP(t.pc, ack, t.to) // the failure again: so is the ACK
		return
	case t.final != 0:
		hook := t.onRetrans
		t.mu.Unlock()
		if res.IsSuccess() && hook != nil {
			hook(res)
		}
		return
	case res.IsProvisional():
		t.provision = true
		t.timer.Stop() // Proceeding: Timer C is the relay's
		if t.released {
			t.mu.Unlock()
			return
		}
	default:
		t.final = res.StatusCode
		t.completed = true
		t.timer.Stop()
		if !res.IsSuccess() {
			t.ack = encode(ackFor(t.invite, res))
			_ = sendUDP(t.pc, t.ack, t.to)
		}
		if t.released {
			t.mu.Unlock()
			return
		}
	}
	t.mu.Unlock()
	t.passUp(res)
}

// ackFor is the ACK for a failure to inv (RFC 3261 §17.1.1.3): the
// INVITE's Request-URI, top Via, Route set, From, Call-ID and CSeq number,
// and the To of the response.
func ackFor(inv *sip.Request, res *sip.Response) *sip.Request {
	ack := sip.NewRequest(sip.ACK, inv.Recipient)
	ack.SipVersion = inv.SipVersion
	ack.AppendHeader(inv.Via())
	for _, h := range HeadersNamed(inv, "Route") {
		ack.AppendHeader(h)
	}
	mf := sip.MaxForwardsHeader(70)
	ack.AppendHeader(&mf)
	if h := inv.From(); h != nil {
		ack.AppendHeader(h)
	}
	if h := res.To(); h != nil {
		ack.AppendHeader(h)
	}
	if h := inv.CallID(); h != nil {
		ack.AppendHeader(h)
	}
	if cs := inv.CSeq(); cs != nil {
		ack.AppendHeader(&sip.CSeqHeader{SeqNo: cs.SeqNo, MethodName: sip.ACK})
	}
	ack.SetBody(nil)
	return ack
}

// keep reports whether an INVITE transaction the relay let go must still
// wait for its final response, to acknowledge it.
func (t *lightClientTx) keep(now time.Time) bool {
	if t.invite == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.final == 0 && now.Sub(t.started) < sip.Timer_B
}

// absorbs reports whether every response for t is dropped unread: a
// non-INVITE transaction has its final response (what follows are its
// retransmissions, §17.1.2.2) or the relay let it go. Its branch is its
// own: a CANCEL shares only an INVITE's.
func (t *lightClientTx) absorbs() bool {
	if t.invite != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.completed
}

// passUp queues a response for the relay.
func (t *lightClientTx) passUp(res *sip.Response) {
	select {
	case t.responses <- res:
	default:
		t.srv.metrics.dropped.WithLabelValues("response_queue_full").Inc()
	}
}

// stop ends the retransmissions.
func (t *lightClientTx) stop() {
	t.mu.Lock()
	t.completed = true
	if t.timer != nil {
		t.timer.Stop()
	}
	t.mu.Unlock()
}

func (t *lightClientTx) terminate(err error)             { t.end(t.branch, err) }
func (t *lightClientTx) Terminate()                      { t.stop(); t.terminate(nil) }
func (t *lightClientTx) Responses() <-chan *sip.Response { return t.responses }

// OnRetransmission sets the hook for the 2xx responses to an INVITE that
// follow the first.
func (t *lightClientTx) OnRetransmission(f sip.FnTxResponse) bool {
	if t.invite == nil {
		return false
	}
	t.mu.Lock()
	t.onRetrans = f
	t.mu.Unlock()
	return true
}

// lightResponse hands a response to the light client transaction whose
// branch its top Via carries (matched with the CSeq method, §17.1.3).
func (s *Server) lightResponse(p sip.TransportReadProps, data []byte) bool {
	branch, ok := topViaBranch(data)
	if !ok {
		return false
	}
	v, ok := s.light.clients.Load(string(branch))
	if !ok {
		return false
	}
	t := v.(*lightClientTx)
	if t.absorbs() {
		return true
	}
	m, err := sip.ParseMessage(data)
	if err != nil {
		return false
	}
	res, ok := m.(*sip.Response)
	if !ok || res.CSeq() == nil || res.CSeq().MethodName != t.method || res.Via() == nil {
		return false
	}
	if b, _ := res.Via().Params.Get("branch"); b != t.branch {
		return false
	}
	res.SetTransport("UDP")
	res.SetSource(p.RemoteAddr.String())
	t.receive(res)
	return true
}

// topViaBranch finds the branch parameter of the first Via in a raw
// message without parsing it. It gives up (false) on anything unusual;
// the message then takes the normal path.
func topViaBranch(data []byte) ([]byte, bool) {
	via, ok := topVia(data)
	if !ok {
		return nil, false
	}
	return branchParam(via)
}

// topVia finds the first Via value in a raw message.
func topVia(data []byte) ([]byte, bool) {
	i := bytes.IndexByte(data, '\n')
	for i >= 0 && i+1 < len(data) {
		line := data[i+1:]
		end := bytes.IndexByte(line, '\n')
		if end < 0 {
			return nil, false
		}
		i += 1 + end
		line = bytes.TrimRight(line[:end], "\r")
		if len(line) == 0 {
			return nil, false // end of the headers
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name := bytes.TrimRight(line[:colon], " \t")
		if !bytes.EqualFold(name, []byte("via")) && !bytes.EqualFold(name, []byte("v")) {
			continue
		}
		val := line[colon+1:]
		if c := bytes.IndexByte(val, ','); c >= 0 {
			val = val[:c]
		}
		return val, true
	}
	return nil, false
}

// rawServerKey is the server transaction key of a raw request (RFC 3261
// §17.2.3) as sip.ServerTxKeyMake makes it from the parsed one: branch,
// sent-by host and port, method. It gives up (false) on an ACK (whose key
// names the INVITE), on a branch without the RFC 3261 cookie and on
// anything unusual.
func rawServerKey(data []byte) (string, bool) {
	sp := bytes.IndexByte(data[:min(len(data), 24)], ' ')
	if sp <= 0 || bytes.HasPrefix(data, ackPrefix) {
		return "", false
	}
	method := data[:sp]
	via, ok := topVia(data)
	if !ok {
		return "", false
	}
	branch, ok := branchParam(via)
	if !ok || len(branch) <= len(sip.RFC3261BranchMagicCookie) ||
		!bytes.HasPrefix(branch, []byte(sip.RFC3261BranchMagicCookie)) ||
		// the parser reads the parameter by its exact name
		!bytes.Contains(via, append([]byte(";branch="), branch...)) {
		return "", false
	}
	// "SIP/2.0/UDP host[:port]": the protocol, then the sent-by up to the
	// first parameter.
	via = bytes.TrimLeft(via, " \t")
	slash := bytes.LastIndexByte(via[:min(len(via), 16)], '/')
	if slash < 0 || !bytes.HasPrefix(via, []byte("SIP/2.0/")) {
		return "", false
	}
	rest := via[slash+1:]
	lws := bytes.IndexAny(rest, " \t")
	if lws <= 0 || !bytes.EqualFold(rest[:lws], []byte("UDP")) {
		return "", false
	}
	sentBy := bytes.TrimLeft(rest[lws:], " \t")
	if end := bytes.IndexByte(sentBy, ';'); end >= 0 {
		sentBy = sentBy[:end]
	}
	sentBy = bytes.TrimRight(sentBy, " \t")
	host, port := sentBy, []byte("5060")
	if c := bytes.LastIndexByte(sentBy, ':'); c >= 0 && !bytes.HasSuffix(sentBy, []byte("]")) {
		host, port = sentBy[:c], sentBy[c+1:]
		if len(port) == 0 || len(port) > 5 || port[0] == '0' {
			return "", false
		}
		for _, d := range port {
			if d < '0' || d > '9' {
				return "", false
			}
		}
	}
	if len(host) == 0 || bytes.ContainsAny(host, " \t") {
		return "", false
	}
	if host[0] == '[' {
		if host[len(host)-1] != ']' {
			return "", false
		}
		host = host[1 : len(host)-1] // sipgo keeps an IPv6 host bare
	}
	var buf [160]byte // on the stack for all but the longest keys
	key := append(buf[:0], branch...)
	key = append(key, sip.TxSeperator...)
	key = append(key, host...)
	key = append(key, sip.TxSeperator...)
	key = append(key, port...)
	key = append(key, sip.TxSeperator...)
	key = append(key, method...)
	return string(key), true
}

// branchParam reads ";branch=value" from one Via value.
func branchParam(val []byte) ([]byte, bool) {
	for {
		semi := bytes.IndexByte(val, ';')
		if semi < 0 {
			return nil, false
		}
		val = val[semi+1:]
		p := bytes.TrimLeft(val, " \t")
		if len(p) < 6 || !bytes.EqualFold(p[:6], []byte("branch")) {
			continue
		}
		p = bytes.TrimLeft(p[6:], " \t")
		if len(p) == 0 || p[0] != '=' {
			continue
		}
		p = bytes.TrimLeft(p[1:], " \t")
		n := 0
		for n < len(p) && p[n] != ';' && p[n] != ' ' && p[n] != '\t' && p[n] != ',' {
			n++
		}
		if n == 0 {
			return nil, false
		}
		return p[:n], true
	}
}

// encBufs are the buffers messages are serialised in.
var encBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// encode serialises m into a slice of its exact size: sipgo's String
// grows a builder from nothing, which for a REGISTER left twice its size
// in garbage.
func encode(m sip.Message) []byte {
	buf := encBufs.Get().(*bytes.Buffer)
	buf.Reset()
	m.StringWrite(buf)
	b := bytes.Clone(buf.Bytes())
	if buf.Cap() <= 64<<10 {
		encBufs.Put(buf)
	}
	return b
}

// udpAddr turns "host:port" into a UDP address: literal addresses at
// once, names through the resolver, cached briefly (the PBX is usually
// named, e.g. a Kubernetes service).
func (s *Server) udpAddr(dest string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(dest); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	return s.resolver.lookup(dest)
}

// udpWriter is a UDP socket that sends to a netip.AddrPort without
// allocating a net.UDPAddr for each datagram (*net.UDPConn,
// *tapPacketConn).
type udpWriter interface {
	WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error)
}

// sendUDP sends b to to on pc.
func sendUDP(pc net.PacketConn, b []byte, to netip.AddrPort) error {
	if w, ok := pc.(udpWriter); ok {
		_, err := w.WriteToUDPAddrPort(b, to)
		return err
	}
	_, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
	return err
}

// udpResolver caches name lookups of UDP destinations for a few seconds.
type udpResolver struct {
	mu    sync.Mutex
	cache map[string]resolved
}

type resolved struct {
	addr netip.AddrPort
	at   time.Time
}

const resolveTTL = 10 * time.Second

func (r *udpResolver) lookup(dest string) (netip.AddrPort, error) {
	now := time.Now()
	r.mu.Lock()
	if e, ok := r.cache[dest]; ok && now.Sub(e.at) < resolveTTL {
		r.mu.Unlock()
		return e.addr, nil
	}
	r.mu.Unlock()
	a, err := net.ResolveUDPAddr("udp", dest)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap := a.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	r.mu.Lock()
	if r.cache == nil || len(r.cache) > 1024 {
		r.cache = map[string]resolved{}
	}
	r.cache[dest] = resolved{addr: ap, at: now}
	r.mu.Unlock()
	return ap, nil
}
