package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Listen is one SIP listener.
type Listen struct {
	// Network is udp, tcp or tls.
	Network string
	// Addr is the "host:port" to bind; port 0 picks a free one.
	Addr string
}

// Config configures a Server. The zero value of optional fields is usable.
type Config struct {
	// NodeID names this node in logs and flows.
	NodeID string
	// Listen lists the listeners; at least one.
	Listen []Listen
	// Advertise is the "host[:port]" written in Via, Record-Route, Path and
	// contacts instead of the bound address (NAT, Kubernetes).
	Advertise string
	// TLS is the server configuration for tls listeners.
	TLS *tls.Config
	// ClientTLS is used when sipwake opens TLS connections (upstream).
	ClientTLS *tls.Config
	// TrustedSources may send requests towards devices (the PBX). The
	// upstream's address, when Upstream names one, is always trusted.
	TrustedSources []netip.Prefix
	// Upstream is the PBX URI, e.g. "sip:pbx.example.com:5060;transport=udp";
	// empty in standalone mode.
	Upstream string
	// UpstreamProbe is how often the PBX is sent an OPTIONS, so that
	// sipwake_upstream_up tells whether it answers even when no traffic
	// flows; 0 sends none.
	UpstreamProbe time.Duration
	// UpstreamDomains are the SIP domains the PBX serves: out-of-dialog
	// requests from devices are forwarded only to these. Empty means the
	// upstream URI's host.
	UpstreamDomains []string
	// MaxMessageBytes drops larger messages (0 = 65535).
	MaxMessageBytes int
	// FlowKey signs flow tokens; random when empty. Nodes sharing dialogs
	// must share it.
	FlowKey []byte
	// UDPBufferBytes sizes the UDP sockets' kernel buffers (default 4 MiB,
	// capped by net.core.rmem_max / wmem_max).
	UDPBufferBytes int
	// RetryAfter is sent with 503 while draining (default 30s).
	RetryAfter time.Duration
	// Logger is the module logger (named "proxy" by the caller).
	Logger *zap.Logger
	// Registerer receives the proxy's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Tap, when set, sees every SIP message received and sent (trace,
	// HEP export); see Tap. It is started before and stopped after the
	// Server by its owner.
	Tap *Tap
}

// listener is a bound listener with its advertised identity.
type listener struct {
	network string // UDP, TCP, TLS (upper case, as sipgo reports)
	bound   netip.AddrPort
	advHost string
	advPort int
	closer  func() error
	pc      net.PacketConn // the UDP socket, for stateless writes
	path    string         // the Path header value for this listener, see PathValue
}

// setSipgoDefaultLogger guards sipgo's process-wide default logger, which
// it reads from many goroutines: it is set once.
var setSipgoDefaultLogger sync.Once

// Server is the SIP engine: listeners, transactions, chain and forwarder.
type Server struct {
	cfg     Config
	log     *zap.Logger
	txl     *sip.TransactionLayer
	tpl     *sip.TransportLayer
	metrics *metrics
	flows   flowTokens

	upstream     *sip.Uri
	upstreamDest string
	upstreamTp   string
	domains      map[string]struct{}

	branches sync.Map // branch key -> chan *sip.Response, see tapResponse
	invites  sync.Map // server key of each INVITE transaction over UDP, see lightAck
	acking   sync.Map // Call-ID -> chan closed once its ACK was sent on, see ackOrder
	light    lightTable
	resolver udpResolver
	// idle holds the workers waiting for a request; workerQuit, closed
	// by Stop, ends them.
	idle       idleWorkers
	workerQuit chan struct{}
	quitOnce   sync.Once
	timerF     atomic.Int64 // light client transactions' timeout (Timer F), ns
	handler    Handler
	modules    []Module
	ready      []Readier
	mu         sync.Mutex
	lns        []*listener
	ownHosts   map[string]struct{}

	started  atomic.Bool
	draining atomic.Bool
	// probeStop ends the upstream probe, janitorStop the light
	// transactions' janitor.
	probeStop   context.CancelFunc
	janitorStop context.CancelFunc
	inflight    atomic.Int64 // transactions being handled (a WaitGroup may not Add while waited on)
	dialogs     dialogs      // calls in progress, for the drain
	received    atomic.Uint64
	wg          sync.WaitGroup
}

// New constructs a Server without side effects; Use adds the modules and
// Start opens the sockets.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 65535
	}
	if cfg.UDPBufferBytes <= 0 {
		cfg.UDPBufferBytes = 4 << 20
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 30 * time.Second
	}
	if len(cfg.Listen) == 0 {
		return nil, errors.New("proxy: no listener configured")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, ownHosts: map[string]struct{}{},
		workerQuit: make(chan struct{})}
	s.timerF.Store(int64(sip.Timer_F))
	s.flows.key = cfg.FlowKey
	if len(s.flows.key) == 0 {
		s.flows.key = make([]byte, 32)
		if _, err := rand.Read(s.flows.key); err != nil {
			return nil, fmt.Errorf("proxy: flow key: %w", err)
		}
	}
	if cfg.Upstream != "" {
		var u sip.Uri
		if err := sip.ParseUri(cfg.Upstream, &u); err != nil {
			return nil, fmt.Errorf("proxy: upstream uri: %w", err)
		}
		s.upstream = &u
		up := URITarget(&u)
		s.upstreamDest, s.upstreamTp = up.Dest, up.Transport
		// The PBX named by address is trusted without being listed.
		if a, err := netip.ParseAddr(strings.Trim(u.Host, "[]")); err == nil {
			s.cfg.TrustedSources = append(append([]netip.Prefix(nil), s.cfg.TrustedSources...), netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	s.domains = map[string]struct{}{}
	for _, d := range cfg.UpstreamDomains {
		s.domains[strings.ToLower(d)] = struct{}{}
	}
	if len(s.domains) == 0 && s.upstream != nil {
		s.domains[strings.ToLower(s.upstream.Host)] = struct{}{}
	}
	s.metrics = newMetrics(cfg.Registerer)
	s.handler = HandlerFunc(s.serveFinal)
	return s, nil
}

// Use sets the chain's modules, outermost first, in front of the
// forwarder. Call it once, before Start.
func (s *Server) Use(modules ...Module) {
	s.modules = modules
	s.ready = nil
	mws := make([]Middleware, 0, len(modules))
	for _, m := range modules {
		if r, ok := m.(Readier); ok {
			s.ready = append(s.ready, r)
		}
		mws = append(mws, m.Wrap)
	}
	s.handler = Chain(HandlerFunc(s.serveFinal), mws...)
}

// Start binds every listener and starts serving; it returns once all are
// bound (or the first error, after closing what was opened).
func (s *Server) Start(ctx context.Context) (err error) {
	slogger := newSlogBridge(s.log.Named("sipgo"))
	// sipgo's process-wide default logger is used only where no logger is
	// passed (TCP reference-count debug lines); it must not belong to one
	// server, which may be gone while another runs, so it discards.
	setSipgoDefaultLogger.Do(func() { sip.SetDefaultLogger(slog.New(slog.DiscardHandler)) })
	// The layers are built here rather than by sipgo.NewUA so that the
	// response tap is the transport's first handler: sipgo hands every
	// message to the transaction layer on a goroutine of its own, so a
	// 200 can overtake the 180 sent just before it. The tap sees
	// responses in the order they were read, and forwarded branches relay
	// them in that order.
	s.tpl = sip.NewTransportLayer(net.DefaultResolver, sip.NewParser(), s.cfg.ClientTLS,
		sip.WithTransportLayerLogger(slogger),
		sip.WithTransportLayerReadFilter(s.readFilter),
	)
	s.tpl.OnMessage(s.tapResponse)
	s.txl = sip.NewTransactionLayer(s.tpl,
		sip.WithTransactionLayerLogger(slogger),
		sip.WithTransactionLayerUnhandledResponseHandler(s.strayResponse),
		sip.WithTransactionLayerTerminateOnConnClose(),
	)
	s.txl.OnRequest(s.onRequest)
	defer func() {
		if err != nil {
			_ = s.Stop(context.Background())
		}
	}()
	for _, l := range s.cfg.Listen {
		if err := s.listen(l); err != nil {
			return err
		}
	}
	for _, m := range s.modules {
		if st, ok := m.(Starter); ok {
			if err := st.Start(ctx); err != nil {
				return fmt.Errorf("proxy: start %s: %w", m.Name(), err)
			}
		}
	}
	s.janitorStop = s.background(s.janitor)
	if s.upstream != nil && s.cfg.UpstreamProbe > 0 {
		s.probeStop = s.background(s.probeUpstream)
	}
	s.started.Store(true)
	return nil
}

// background runs f on a goroutine Stop waits for; the returned function
// ends f's context.
func (s *Server) background(f func(context.Context)) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f(ctx)
	}()
	return cancel
}

// probeUpstream sends the PBX an OPTIONS at once and then every
// UpstreamProbe; any final response means it is up.
func (s *Server) probeUpstream(ctx context.Context) {
	t, _ := s.UpstreamTarget()
	for {
		req := sip.NewRequest(sip.OPTIONS, *s.upstream.Clone())
		from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "sipwake", Host: s.upstream.Host}, Params: sip.NewParams()}
		from.Params.Add("tag", randomToken())
		req.AppendHeader(from)
		req.AppendHeader(&sip.ToHeader{Address: *s.upstream.Clone(), Params: sip.NewParams()})
		cid := sip.CallIDHeader("probe-" + randomToken())
		req.AppendHeader(&cid)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
		req.SetBody(nil)
		pctx, cancel := context.WithTimeout(ctx, min(s.cfg.UpstreamProbe, 10*time.Second))
		_, err := s.Send(pctx, req, t)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.upstreamState(t, err == nil)
		if err != nil {
			if ce := s.log.Check(zap.DebugLevel, "upstream probe failed"); ce != nil {
				ce.Write(zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.UpstreamProbe):
		}
	}
}

func (s *Server) listen(l Listen) error {
	network := strings.ToLower(l.Network)
	var ln *listener
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", l.Addr)
		if err != nil {
			return fmt.Errorf("proxy: listen udp %s: %w", l.Addr, err)
		}
		if uc, ok := pc.(*net.UDPConn); ok {
			// Bursts of requests overflow the kernel's default receive
			// buffer (about 208 KiB) long before the CPU is busy; the
			// kernel caps this at net.core.rmem_max.
			_ = uc.SetReadBuffer(s.cfg.UDPBufferBytes)
			_ = uc.SetWriteBuffer(s.cfg.UDPBufferBytes)
			if got, ok := udpRecvBuffer(uc); ok && got < s.cfg.UDPBufferBytes {
				// Silent otherwise: a burst then overflows the socket, and
				// only the kernel's UDP counters show the drops.
				s.log.Warn("udp receive buffer capped by net.core.rmem_max",
					zap.String("addr", pc.LocalAddr().String()),
					zap.Int("asked_bytes", s.cfg.UDPBufferBytes), zap.Int("granted_bytes", got))
			}
			pc = newDirectUDP(uc)
		}
		if s.cfg.Tap != nil {
			pc = &tapPacketConn{PacketConn: pc, tap: s.cfg.Tap, local: pc.LocalAddr().String()}
		}
		ln = &listener{network: "UDP", closer: pc.Close, pc: pc}
		ln.bound = mustAddrPort(pc.LocalAddr())
		// One reader: it parses and hands each message on, so that
		// responses reach their transaction in the order they came (a
		// 180 before the 200 that follows it).
		s.serve(func() error { return s.tpl.ServeUDP(pc) })
	case "tcp", "tls":
		var nl net.Listener
		var err error
		if network == "tls" {
			if s.cfg.TLS == nil {
				return fmt.Errorf("proxy: listen tls %s: no certificate configured", l.Addr)
			}
			nl, err = tls.Listen("tcp", l.Addr, s.cfg.TLS)
		} else {
			nl, err = net.Listen("tcp", l.Addr)
		}
		if err != nil {
			return fmt.Errorf("proxy: listen %s %s: %w", network, l.Addr, err)
		}
		if s.cfg.Tap != nil {
			nl = &tapListener{Listener: nl, tap: s.cfg.Tap, transport: strings.ToUpper(network)}
		}
		ln = &listener{network: strings.ToUpper(network), closer: nl.Close}
		ln.bound = mustAddrPort(nl.Addr())
		if network == "tls" {
			s.serve(func() error { return s.tpl.ServeTLS(nl) })
		} else {
			s.serve(func() error { return s.tpl.ServeTCP(nl) })
		}
	default:
		return fmt.Errorf("proxy: listen %s: unsupported network", l.Network)
	}
	ln.advHost, ln.advPort = s.advertised(ln.bound)
	pu := rrURI(ln, "")
	ln.path = "<" + pu.String() + ">"
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.ownHosts[strings.ToLower(ln.advHost)] = struct{}{}
	if !ln.bound.Addr().IsUnspecified() {
		s.ownHosts[ln.bound.Addr().String()] = struct{}{}
	}
	s.mu.Unlock()
	s.log.Info("listening", zap.String("transport", ln.network), zap.String("addr", ln.bound.String()),
		zap.String("advertise", net.JoinHostPort(ln.advHost, strconv.Itoa(ln.advPort))))
	return nil
}

func (s *Server) serve(f func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := f(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("listener stopped", zap.Error(err))
		}
	}()
}

func mustAddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr: // every message read over UDP: no string round trip
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// advertised returns the host and port written in headers for a listener
// bound at b.
func (s *Server) advertised(b netip.AddrPort) (string, int) {
	host, port := "", int(b.Port())
	if s.cfg.Advertise != "" {
		h, p, err := net.SplitHostPort(s.cfg.Advertise)
		if err != nil {
			host = strings.Trim(s.cfg.Advertise, "[]")
		} else {
			host = h
			if n, err := strconv.Atoi(p); err == nil && n > 0 {
				port = n
			}
		}
	}
	if host == "" {
		if b.Addr().IsUnspecified() {
			host = outboundIP()
		} else {
			host = b.Addr().String()
		}
	}
	return host, port
}

// outboundIP guesses the address other hosts reach us on, when bound to
// the unspecified address and no advertise address is configured.
func outboundIP() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// Addr returns the bound address of the first listener of the network
// (udp, tcp, tls), or "".
func (s *Server) Addr(network string) string {
	if l := s.listenerFor(network); l != nil {
		return l.bound.String()
	}
	return ""
}

func (s *Server) listenerFor(network string) *listener {
	network = strings.ToUpper(network)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lns {
		if l.network == network {
			return l
		}
	}
	return nil
}

// NodeID returns the node's id.
func (s *Server) NodeID() string { return s.cfg.NodeID }

// Upstream returns the PBX URI, or nil in standalone mode.
func (s *Server) Upstream() *sip.Uri { return s.upstream }

// UpstreamTarget returns the forwarding target for the PBX.
func (s *Server) UpstreamTarget() (Target, bool) {
	if s.upstream == nil {
		return Target{}, false
	}
	return Target{Dest: s.upstreamDest, Transport: s.upstreamTp}, true
}

// ContactURI returns a URI at sipwake's advertised address for the given
// transport, with user as user part (Contact masquerading, Path).
func (s *Server) ContactURI(transport, user string) (sip.Uri, error) {
	l := s.listenerFor(transport)
	if l == nil {
		l = s.listenerFor("UDP")
	}
	if l == nil {
		return sip.Uri{}, fmt.Errorf("proxy: no %s listener", transport)
	}
	u := sip.Uri{Scheme: "sip", User: user, Host: l.advHost, Port: l.advPort, UriParams: sip.NewParams()}
	if l.network != "UDP" {
		u.UriParams.Add("transport", strings.ToLower(l.network))
	}
	return u, nil
}

// IsOwnURI reports whether u points at this proxy: host and port of one
// of its listeners, of the URI's transport when it names one (its
// transport parameter, or TLS for sips), of any transport otherwise.
// Ports of different transports are independent: a device's contact
// "sip:dev@host:5070;transport=tcp" is not ours because our UDP listener
// happens to be on 5070.
func (s *Server) IsOwnURI(u *sip.Uri) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	host := strings.ToLower(strings.Trim(u.Host, "[]"))
	if _, ok := s.ownHosts[host]; !ok {
		return false
	}
	want := ""
	if v, ok := u.UriParams.Get("transport"); ok {
		want = strings.ToUpper(v)
	}
	if u.IsEncrypted() && (want == "" || want == "TCP") {
		want = "TLS"
	}
	for _, l := range s.lns {
		if want != "" && l.network != want {
			continue
		}
		port := u.Port
		if port == 0 {
			port = sip.DefaultPort(l.network)
		}
		if port == l.advPort || port == int(l.bound.Port()) {
			return true
		}
	}
	return false
}

// Ready reports whether the proxy serves new requests.
func (s *Server) Ready() error {
	if !s.started.Load() {
		return errors.New("starting")
	}
	if s.draining.Load() {
		return errors.New("draining")
	}
	for _, r := range s.ready {
		if err := r.Ready(); err != nil {
			return err
		}
	}
	return nil
}

// Drain stops taking new out-of-dialog requests (503 + Retry-After, OPTIONS
// 503) and waits until the transactions in flight have finished and the
// calls in progress have ended (Dialogs), or ctx ends. In-dialog requests
// keep flowing meanwhile.
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	if err := s.waitIdle(ctx); err != nil {
		return err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for s.Dialogs() > 0 || s.inflight.Load() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// waitIdle waits until no transaction is being handled.
func (s *Server) waitIdle(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.inflight.Load() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Requests counts the requests received since start; with InFlight it
// tells whether the proxy is idle.
func (s *Server) Requests() uint64 { return s.received.Load() }

// InFlight is the number of transactions being handled now.
func (s *Server) InFlight() int64 { return s.inflight.Load() }

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// Stop closes the listeners, transactions and modules; safe after a partial
// Start.
func (s *Server) Stop(ctx context.Context) error {
	var errs []error
	if s.probeStop != nil {
		s.probeStop()
	}
	if s.janitorStop != nil {
		s.janitorStop()
	}
	s.quitOnce.Do(func() { close(s.workerQuit) })
	for i := len(s.modules) - 1; i >= 0; i-- {
		if st, ok := s.modules[i].(Stopper); ok {
			if err := st.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("proxy: stop %s: %w", s.modules[i].Name(), err))
			}
		}
	}
	s.mu.Lock()
	lns := s.lns
	s.lns = nil
	s.mu.Unlock()
	for _, l := range lns {
		_ = l.closer()
	}
	if s.txl != nil {
		s.txl.Close()
	}
	if s.tpl != nil {
		_ = s.tpl.Close()
	}
	// Closing the transaction layer ended every transaction; wait for
	// the listeners and for the handlers still unwinding.
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	if err := s.waitIdle(ctx); err != nil {
		errs = append(errs, err)
	}
	s.started.Store(false)
	return errors.Join(errs...)
}

// readFilter enforces sip.max_message_bytes. For UDP an oversized datagram
// is dropped (sipgo stops a UDP reader on a filter error, so it returns an
// empty slice); for TCP/TLS the connection is closed. What passes is
// handed to the tap (every read of every connection comes through here),
// then UDP datagrams for light transactions are taken (see light.go).
func (s *Server) readFilter(p sip.TransportReadProps, data []byte) ([]byte, error) {
	if len(data) <= s.cfg.MaxMessageBytes {
		if s.cfg.Tap.on() {
			s.cfg.Tap.capture(DirIn, p.Transport, p.LocalAddr.String(), p.RemoteAddr.String(), data)
		}
		if strings.EqualFold(p.Transport, "UDP") && s.lightRead(p, data) {
			return nil, nil
		}
		return data, nil
	}
	s.metrics.dropped.WithLabelValues("too_large").Inc()
	s.log.Warn("message dropped", zap.String("reason", "too large"), zap.Int("bytes", len(data)),
		zap.String("src", p.RemoteAddr.String()), zap.String("transport", p.Transport))
	if strings.EqualFold(p.Transport, "UDP") {
		return nil, nil
	}
	return nil, errMessageTooLarge
}

var errMessageTooLarge = errors.New("proxy: message larger than sip.max_message_bytes")

// onRequest is the transaction layer's entry point: one goroutine per new
// server transaction.
func (s *Server) onRequest(req *sip.Request, tx *sip.ServerTx) {
	// Counted here, not when a worker picks it up, so that Drain never
	// finds the proxy idle while a request waits for a worker.
	s.inflight.Add(1)
	s.received.Add(1)
	if req.IsInvite() && req.Transport() == "UDP" {
		// Known until it ends, so that the ACK for a failure reaches it
		// rather than a light path (lightAck).
		key := tx.Key()
		s.invites.Store(key, struct{}{})
		if !tx.OnTerminate(func(string, error) { s.invites.Delete(key) }) {
			s.invites.Delete(key)
		}
	}
	s.run(job{req: req, tx: tx})
}

// serveTx runs the chain for a request on a sipgo server transaction
// (counted in flight by onRequest).
func (s *Server) serveTx(req *sip.Request, tx *sip.ServerTx) {
	r := &Request{
		Msg:       req,
		Tx:        tx,
		Received:  time.Now(),
		Transport: strings.ToUpper(req.Transport()),
		Source:    req.Source(),
		srv:       s,
	}
	s.metrics.request(req.Method, dirIn)
	if req.IsInvite() {
		// The chain rewrites an INVITE (Via received and rport, Route,
		// Request-URI) on its own copy: sipgo reads the transaction's
		// request on goroutines of its own while the chain runs, to answer
		// a CANCEL that matched it with 487 (RFC 3261 §9.2). A non-INVITE
		// transaction's request is not read once the chain has it.
		r.Msg = req.Clone()
		// 100 Trying at once (RFC 3261 §16.2): it stops the caller's
		// retransmissions, and sipgo's own 200 ms Trying timer.
		r.Respond(100, "Trying")
	}
	r.Trusted = s.trusted(r.Source)
	// The context ends with the transaction (sipgo's own helper cancels
	// at once when registration succeeds, so it is not used).
	ctx, cancel := context.WithCancel(context.Background())
	if !tx.OnTerminate(func(string, error) { cancel() }) {
		cancel()
	}
	r.finish = func() {
		defer s.inflight.Add(-1)
		defer cancel()
		if req.IsAck() {
			tx.Terminate()
			return
		}
		if !r.answered.Load() {
			// A handler that returned without a final answer leaves the
			// caller in silence: never let that happen.
			r.Respond(500, "Server Internal Error")
		}
		tx.TerminateGracefully()
		if !sip.IsReliable(r.Transport) && (!req.IsInvite() || !r.failed.Load()) {
			// sipgo keeps a completed non-INVITE server transaction over
			// UDP for Timer J, and an INVITE one that sent a 2xx for
			// Timer L (RFC 6026), both 64*T1 = 32 s, holding the request
			// and its answers: at 1,500 REGISTER/s that was 800 MB. They
			// go after T4 (5 s) instead, as in Kamailio's tm (wt_timer):
			// a request retransmitted later than that, after 5 s of
			// losses, is relayed again and answered by the next hop's
			// own state (an INVITE stops being retransmitted at our 100
			// Trying). An INVITE that failed waits for its ACK as before.
			time.AfterFunc(sip.T4, tx.Terminate)
		}
	}
	s.dispatch(ctx, r)
	if r.detached.Load() {
		return // its owner finishes it
	}
	r.finish()
}

// dispatch runs the built-in checks, route preprocessing, then the chain.
func (s *Server) dispatch(ctx context.Context, r *Request) {
	defer func() {
		if p := recover(); p != nil {
			r.Log().Error("handler panic", zap.Any("panic", p), zap.Stack("stack"))
			if !r.answered.Load() && !r.Msg.IsAck() {
				r.Respond(500, "Server Internal Error")
			}
		}
	}()
	s.fixVia(r)
	if !s.preprocessRoute(r) {
		return
	}
	s.handler.ServeSIP(ctx, r)
}

// trusted reports whether src ("ip:port") is in sip.trusted_sources.
func (s *Server) trusted(src string) bool {
	if len(s.cfg.TrustedSources) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(src)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range s.cfg.TrustedSources {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// fixVia records where the request really came from in its top Via
// (RFC 3261 §18.2.1 received, RFC 3581 rport), so that responses routed
// back through this Via reach the sender behind NAT.
func (s *Server) fixVia(r *Request) {
	via := r.Msg.Via()
	if via == nil {
		return
	}
	host, port, err := net.SplitHostPort(r.Source)
	if err != nil {
		return
	}
	if rp, ok := via.Params.Get("rport"); ok && rp == "" {
		via.Params.Add("rport", port)
		via.Params.Add("received", host)
		return
	}
	if strings.Trim(via.Host, "[]") != host {
		via.Params.Add("received", host)
	}
}
