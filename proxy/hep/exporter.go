package hep

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
)

// Config configures an Exporter.
type Config struct {
	// Address is the capture server, "udp://host:port" or "tcp://host:port".
	Address string
	// Agent identifies this node in every packet.
	Agent Agent
	// Unmasked sends messages as on the wire, secrets included, instead of
	// proxy.MaskMessage's copy.
	Unmasked bool
	// QueueSize bounds the packets waiting to be sent (default 4096); more
	// are dropped and counted.
	QueueSize int
	// Logger is the exporter's logger (named "hep" by the caller).
	Logger *zap.Logger
	// Registerer receives the exporter's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Reconnection and write limits.
const (
	dialTimeout  = 3 * time.Second
	writeTimeout = 3 * time.Second
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 10 * time.Second
)

// Exporter sends every message a proxy.Tap captured to a HEPv3 capture
// server (Homer, heplify-server): one datagram per message over UDP, or
// the packets back to back over one TCP connection, opened again with
// backoff when it fails. It never blocks the tap: a packet that does not
// fit the queue is dropped, and every packet is counted once in
// sipwake_hep_packets_total as sent, dropped or error.
type Exporter struct {
	network, addr string
	agent         Agent
	unmasked      bool
	log           *zap.Logger

	queue   chan []byte
	packets *prometheus.CounterVec
	sent    prometheus.Counter
	dropped prometheus.Counter
	errs    prometheus.Counter

	buf      []byte // encoding scratch, used by Capture only (the tap's goroutine)
	started  atomic.Bool
	stopping atomic.Bool

	startOnce, stopOnce, abortOnce sync.Once
	quit, abort, done              chan struct{}

	connMu  sync.Mutex
	conn    net.Conn // the sender's; connMu guards it against Stop closing it
	backoff time.Duration
	down    bool // the last connection attempt failed (logged once)
}

var _ proxy.PacketSink = (*Exporter)(nil)

// ParseAddress splits "udp://host:port" or "tcp://host:port".
func ParseAddress(s string) (network, addr string, err error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "udp" && u.Scheme != "tcp") || u.Host == "" || u.Opaque != "" {
		return "", "", fmt.Errorf("hep: address %q is not udp://host:port or tcp://host:port", s)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("hep: address %q must be scheme://host:port with nothing after the port", s)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return "", "", fmt.Errorf("hep: address %q has no host:port", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("hep: port %q in %q is not 1..65535", port, s)
	}
	return u.Scheme, u.Host, nil
}

// New constructs an Exporter; nothing is opened until Start.
func New(cfg Config) (*Exporter, error) {
	network, addr, err := ParseAddress(cfg.Address)
	if err != nil {
		return nil, err
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	e := &Exporter{
		network: network, addr: addr, agent: cfg.Agent, unmasked: cfg.Unmasked, log: cfg.Logger,
		queue: make(chan []byte, cfg.QueueSize),
		quit:  make(chan struct{}), abort: make(chan struct{}), done: make(chan struct{}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "hep", Name: "packets_total",
			Help: "SIP messages exported as HEP packets: sent, dropped (queue full or stopping) or error (not encodable, write failed).",
		}, []string{"result"}),
		backoff: minBackoff,
	}
	e.sent = e.packets.WithLabelValues("sent")
	e.dropped = e.packets.WithLabelValues("dropped")
	e.errs = e.packets.WithLabelValues("error")
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(e.packets); err != nil {
			return nil, fmt.Errorf("hep: metrics: %w", err)
		}
	}
	return e, nil
}

// Start runs the sender. The capture server need not be up: the first
// connection is opened with the first packet.
func (e *Exporter) Start() {
	e.startOnce.Do(func() {
		e.started.Store(true)
		e.log.Info("hep export", zap.String("address", e.network+"://"+e.addr),
			zap.Uint32("capture_id", e.agent.CaptureID), zap.String("node_name", e.agent.NodeName), zap.Bool("masked", !e.unmasked))
		go e.run()
	})
}

// Capture encodes p and queues it; it never blocks.
func (e *Exporter) Capture(p *proxy.Packet) {
	if e.stopping.Load() {
		e.dropped.Inc()
		return
	}
	payload := p.Data
	if !e.unmasked {
		payload = p.Masked()
	}
	var err error
	e.buf, err = Append(e.buf[:0], &Message{Time: p.Time, Src: p.Src(), Dst: p.Dst(), Transport: p.Transport,
		CorrelationID: p.CallID, Payload: payload}, &e.agent)
	if err != nil {
		e.errs.Inc()
		return
	}
	pkt := make([]byte, len(e.buf))
	copy(pkt, e.buf)
	select {
	case e.queue <- pkt:
	default:
		e.dropped.Inc()
	}
}

// Stop sends what is queued, until ctx ends (what is left then is
// dropped), and closes the connection.
func (e *Exporter) Stop(ctx context.Context) error {
	e.stopOnce.Do(func() {
		e.stopping.Store(true)
		close(e.quit)
	})
	if !e.started.Load() {
		return nil
	}
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		e.abortOnce.Do(func() { close(e.abort) })
		e.setConn(nil) // unblocks a write to a stuck server
		<-e.done
		return ctx.Err()
	}
}

func (e *Exporter) run() {
	defer close(e.done)
	defer func() {
		e.setConn(nil)
		for {
			select {
			case <-e.queue:
				e.dropped.Inc()
			default:
				return
			}
		}
	}()
	for {
		select {
		case pkt := <-e.queue:
			e.deliver(pkt)
		case <-e.quit:
			for {
				select {
				case pkt := <-e.queue:
					if !e.deliver(pkt) {
						return
					}
				default:
					return
				}
			}
		}
	}
}

// deliver sends one packet, connecting first when needed; it waits out
// the backoff between connection attempts. It returns false when Stop
// gave up waiting.
func (e *Exporter) deliver(pkt []byte) bool {
	for e.getConn() == nil {
		if err := e.connect(); err != nil {
			if !e.down {
				e.log.Warn("hep export down", zap.String("address", e.network+"://"+e.addr), zap.Error(err))
				e.down = true
			}
			t := time.NewTimer(e.backoff)
			e.backoff = min(2*e.backoff, maxBackoff)
			select {
			case <-t.C:
			case <-e.abort:
				t.Stop()
				e.dropped.Inc()
				return false
			}
			continue
		}
		if e.down {
			e.log.Info("hep export up", zap.String("address", e.network+"://"+e.addr))
			e.down = false
		}
	}
	c := e.getConn()
	if c == nil {
		e.dropped.Inc() // Stop closed it
		return false
	}
	if e.network == "tcp" {
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	}
	if _, err := c.Write(pkt); err != nil {
		e.errs.Inc()
		if e.network == "tcp" {
			// A part of the packet may have gone: the stream is out of
			// step; start a new one.
			e.log.Warn("hep export write failed", zap.Error(err))
			e.setConn(nil)
		}
		return true
	}
	e.backoff = minBackoff
	e.sent.Inc()
	return true
}

// connect opens the connection (a connected UDP socket, or TCP).
func (e *Exporter) connect() error {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	go func() {
		select {
		case <-e.abort:
			cancel()
		case <-ctx.Done():
		}
	}()
	c, err := (&net.Dialer{}).DialContext(ctx, e.network, e.addr)
	if err != nil {
		return err
	}
	if e.network == "tcp" {
		// A capture server sends nothing back: reading notices when it
		// closes the connection.
		go drain(c)
	}
	select {
	case <-e.abort:
		_ = c.Close()
		return errors.New("hep: stopping")
	default:
	}
	e.setConn(c)
	return nil
}

func (e *Exporter) getConn() net.Conn {
	e.connMu.Lock()
	defer e.connMu.Unlock()
	return e.conn
}

// setConn replaces the connection, closing the one it had.
func (e *Exporter) setConn(c net.Conn) {
	e.connMu.Lock()
	old := e.conn
	e.conn = c
	e.connMu.Unlock()
	if old != nil {
		_ = old.Close()
	}
}

// drain reads and discards what a TCP capture server sends, so that a
// closed connection is noticed.
func drain(c net.Conn) {
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				_ = c.Close()
			}
			return
		}
	}
}
