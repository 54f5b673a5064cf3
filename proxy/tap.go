package proxy

import (
	"bytes"
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

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Direction tells whether sipwake received or sent a captured message.
type Direction uint8

// Directions of a captured message.
const (
	// DirIn is a message sipwake received.
	DirIn Direction = iota + 1
	// DirOut is a message sipwake sent.
	DirOut
)

// String returns "in" or "out".
func (d Direction) String() string {
	if d == DirOut {
		return dirOut
	}
	return dirIn
}

// Packet is one SIP message as it crossed the wire, captured by a Tap.
type Packet struct {
	// Time is when the message was read or written.
	Time time.Time
	// Direction is DirIn (received) or DirOut (sent).
	Direction Direction
	// Transport is UDP, TCP, TLS, WS or WSS.
	Transport string
	// Local is sipwake's address, Remote the peer's.
	Local, Remote netip.AddrPort
	// Data is the whole message as on the wire. It holds secrets: use
	// Masked for anything a person may read.
	Data []byte
	// CallID is the message's Call-ID ("" when it has none).
	CallID string

	masked []byte
}

// Src is the sender's address.
func (p *Packet) Src() netip.AddrPort {
	if p.Direction == DirOut {
		return p.Local
	}
	return p.Remote
}

// Dst is the receiver's address.
func (p *Packet) Dst() netip.AddrPort {
	if p.Direction == DirOut {
		return p.Remote
	}
	return p.Local
}

// Masked returns MaskMessage(p.Data), computed once.
func (p *Packet) Masked() []byte {
	if p.masked == nil {
		p.masked = MaskMessage(p.Data)
	}
	return p.masked
}

// PacketSink receives every message a Tap captured (HEP export). Capture
// is called on the tap's goroutine, one packet at a time; p and its
// slices are valid only during the call. It must not block: a sink that
// sends over the network queues and drops on its own.
type PacketSink interface {
	Capture(p *Packet)
}

// TapConfig configures a Tap.
type TapConfig struct {
	// Logger is the trace logger (named "trace" by the caller): at debug
	// level every message is logged, and the messages a trace switch
	// selects are logged at info level. Nil logs nothing.
	Logger *zap.Logger
	// Sinks receive every message (HEP export).
	Sinks []PacketSink
	// QueueSize bounds the messages waiting for the tap's goroutine
	// (default 4096); more are dropped and counted.
	QueueSize int
	// Registerer receives the tap's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Trace switch limits.
const (
	// MaxTraceDuration is the longest a trace switch stays on.
	MaxTraceDuration = time.Hour
	// DefaultTraceDuration applies when none is given.
	DefaultTraceDuration = 5 * time.Minute
	// maxTraceSwitches bounds the switches on at once.
	maxTraceSwitches = 64
)

// TraceSwitch logs at info level, until it expires, the messages of one
// address of record (From, To or Request-URI) or of one Call-ID.
type TraceSwitch struct {
	// ID names the switch.
	ID string `json:"id"`
	// AOR selects the messages whose From, To or Request-URI names this
	// address of record.
	AOR string `json:"aor,omitempty"`
	// CallID selects the messages of one call.
	CallID string `json:"call_id,omitempty"`
	// Expires is when the switch turns itself off.
	Expires time.Time `json:"expires_at"`

	aorKey string // uriAOR(AOR)
}

// Errors of AddTrace.
var (
	ErrTraceSelector = errors.New("proxy: a trace needs exactly one of an aor or a call_id")
	ErrTraceDuration = errors.New("proxy: trace duration out of range")
	ErrTraceAOR      = errors.New("proxy: trace aor is not a sip: URI with a user part")
	ErrTraceFull     = errors.New("proxy: too many traces on")
)

// Tap captures the SIP messages a Server receives and sends, with the
// bytes as on the wire, and hands them to the trace logger and to its
// sinks on a goroutine of its own. The SIP side only copies the bytes
// into a bounded queue: it never waits, and what does not fit is dropped
// and counted (sipwake_sip_capture_dropped_total). While there is no sink,
// the logger is above debug level and no trace switch is on, capture
// costs one check per message.
//
// A Tap serves one Server (Config.Tap). Construct it with NewTap, Start
// it before the Server, Stop it after.
type Tap struct {
	log     *zap.Logger
	sinks   []PacketSink
	queue   chan tapEvent
	dropped prometheus.Counter

	switchMu   sync.Mutex
	switches   atomic.Pointer[[]TraceSwitch]
	switchesTo atomic.Int64 // latest expiry (Unix ns) of the switches on; 0: none

	// Streams that lost a chunk to a full queue, reassembled anew.
	lostMu  sync.Mutex
	lost    map[string]struct{}
	drops   atomic.Uint64
	started atomic.Bool
	stopped atomic.Bool

	startOnce, stopOnce sync.Once
	quit, done          chan struct{}

	localIP netip.Addr // for a listener bound to the unspecified address
}

// tapEvent is one read or write waiting for the tap's goroutine.
type tapEvent struct {
	time      time.Time
	dir       Direction
	transport string
	local     string
	remote    string
	data      []byte
}

// NewTap constructs a Tap; nothing runs until Start.
func NewTap(cfg TapConfig) *Tap {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 4096
	}
	t := &Tap{
		log:   cfg.Logger,
		sinks: append([]PacketSink(nil), cfg.Sinks...),
		queue: make(chan tapEvent, cfg.QueueSize),
		lost:  map[string]struct{}{},
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sipwake", Subsystem: "sip", Name: "capture_dropped_total",
			Help: "SIP messages neither traced nor exported because the capture queue was full.",
		}),
	}
	if t.log == nil {
		t.log = zap.NewNop()
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(t.dropped)
	}
	return t
}

// Start runs the tap's goroutine.
func (t *Tap) Start() {
	t.startOnce.Do(func() {
		if ip, err := netip.ParseAddr(outboundIP()); err == nil {
			t.localIP = ip
		}
		t.started.Store(true)
		go t.run()
	})
}

// Stop stops taking messages, hands those queued to the logger and the
// sinks, and returns when that is done or ctx ends.
func (t *Tap) Stop(ctx context.Context) error {
	t.stopOnce.Do(func() {
		t.stopped.Store(true)
		close(t.quit)
	})
	if !t.started.Load() {
		return nil
	}
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// on reports whether anything consumes captured messages now.
func (t *Tap) on() bool {
	if t == nil || !t.started.Load() || t.stopped.Load() {
		return false
	}
	if len(t.sinks) > 0 || t.log.Core().Enabled(zapcore.DebugLevel) {
		return true
	}
	if until := t.switchesTo.Load(); until != 0 {
		return time.Now().UnixNano() < until
	}
	return false
}

// capture queues one read or write; data is copied. It never blocks.
func (t *Tap) capture(dir Direction, transport, local, remote string, data []byte) {
	t.captureAt(time.Now(), dir, transport, local, remote, data)
}

// captureAt is capture of what crossed the wire at when.
func (t *Tap) captureAt(when time.Time, dir Direction, transport, local, remote string, data []byte) {
	if isKeepAlive(data) {
		return
	}
	ev := tapEvent{time: when, dir: dir, transport: transport, local: local, remote: remote,
		data: bytes.Clone(data)}
	select {
	case t.queue <- ev:
	default:
		t.dropped.Inc()
		if dir == DirIn && isStream(transport) {
			// The stream's next chunks no longer continue what was queued.
			t.lostMu.Lock()
			t.lost[streamKey(transport, local, remote)] = struct{}{}
			t.lostMu.Unlock()
		}
		t.drops.Add(1)
	}
}

// isKeepAlive reports a keep-alive (RFC 5626 CRLF) or an empty datagram.
func isKeepAlive(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' && c != 0 && c != ' ' {
			return false
		}
	}
	return true
}

func isStream(transport string) bool { return transport == "TCP" || transport == "TLS" }

func streamKey(transport, local, remote string) string {
	return transport + " " + local + " " + remote
}

// stream is a TCP or TLS connection's received bytes not yet a whole
// message.
type stream struct {
	buf  []byte
	seen time.Time
}

// maxStreamBuffer bounds a partial message (sipgo's own limit is 65535).
const maxStreamBuffer = 128 << 10

func (t *Tap) run() {
	defer close(t.done)
	streams := map[string]*stream{}
	var seenDrops uint64
	sweep := time.NewTicker(30 * time.Second)
	defer sweep.Stop()
	handle := func(ev tapEvent) {
		if d := t.drops.Load(); d != seenDrops {
			seenDrops = d
			t.lostMu.Lock()
			for k := range t.lost {
				delete(streams, k)
				delete(t.lost, k)
			}
			t.lostMu.Unlock()
		}
		if ev.dir == DirOut || !isStream(ev.transport) {
			t.message(ev, ev.data)
			return
		}
		t.reassemble(streams, ev)
	}
	for {
		select {
		case ev := <-t.queue:
			handle(ev)
		case now := <-sweep.C:
			for k, s := range streams {
				if now.Sub(s.seen) > 2*time.Minute {
					delete(streams, k)
				}
			}
			t.pruneSwitches(now)
		case <-t.quit:
			for {
				select {
				case ev := <-t.queue:
					handle(ev)
				default:
					return
				}
			}
		}
	}
}

// reassemble cuts a stream's chunks into messages (Content-Length
// framing, RFC 3261 §18.3).
func (t *Tap) reassemble(streams map[string]*stream, ev tapEvent) {
	key := streamKey(ev.transport, ev.local, ev.remote)
	s := streams[key]
	if s == nil {
		s = &stream{}
		streams[key] = s
	}
	s.seen = ev.time
	if len(s.buf) == 0 {
		s.buf = ev.data
	} else {
		s.buf = append(s.buf, ev.data...)
	}
	for {
		// Keep-alives between messages.
		i := 0
		for i < len(s.buf) && (s.buf[i] == '\r' || s.buf[i] == '\n') {
			i++
		}
		s.buf = s.buf[i:]
		if len(s.buf) == 0 {
			delete(streams, key)
			return
		}
		if !looksLikeStart(s.buf) {
			// The start of this message was lost (a dropped chunk):
			// nothing can be framed until the next chunk.
			delete(streams, key)
			return
		}
		n := frameLength(s.buf)
		if n < 0 {
			if len(s.buf) > maxStreamBuffer {
				delete(streams, key)
			}
			return
		}
		t.message(ev, s.buf[:n:n])
		s.buf = s.buf[n:]
	}
}

// frameLength returns the length of the whole message at the start of b,
// or -1 when b does not hold it all yet.
func frameLength(b []byte) int {
	m := scanMessage(b)
	if m.body == len(b) && m.blank == len(b) {
		return -1 // no blank line yet
	}
	cl := 0
	if v := m.header("content-length"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return -1
		}
		cl = n
	}
	if m.body+cl > len(b) {
		return -1
	}
	return m.body + cl
}

// message builds the Packet of one whole message and hands it on.
func (t *Tap) message(ev tapEvent, data []byte) {
	p := &Packet{Time: ev.time, Direction: ev.dir, Transport: ev.transport, Data: data,
		Local: t.addrPort(ev.local, true), Remote: t.addrPort(ev.remote, false)}
	m := scanMessage(data)
	p.CallID = m.header("call-id")
	t.trace(p, &m)
	for _, s := range t.sinks {
		s.Capture(p)
	}
}

// addrPort parses an address; a local unspecified address becomes the
// address other hosts reach this one on.
func (t *Tap) addrPort(s string, local bool) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			return netip.AddrPort{}
		}
		a, _ := netip.ParseAddr(host)
		p, _ := strconv.Atoi(port)
		ap = netip.AddrPortFrom(a, uint16(p))
	}
	a := ap.Addr().Unmap()
	if local && (!a.IsValid() || a.IsUnspecified()) && t.localIP.IsValid() {
		a = t.localIP
	}
	return netip.AddrPortFrom(a, ap.Port())
}

// trace logs the message: every one at debug level, the ones a trace
// switch selects at info level.
func (t *Tap) trace(p *Packet, m *rawMessage) {
	ce := t.log.Check(zapcore.DebugLevel, "sip message")
	var sw *TraceSwitch
	if ce == nil {
		if sw = t.matchSwitch(p, m); sw == nil {
			return
		}
		if ce = t.log.Check(zapcore.InfoLevel, "sip message"); ce == nil {
			return
		}
	}
	method, _, status := m.startLine()
	seq, cseqMethod := m.cseq()
	if method == "" {
		method = cseqMethod
	}
	fields := make([]zap.Field, 0, 10)
	fields = append(fields,
		zap.String("direction", p.Direction.String()),
		zap.String(FieldTransport, strings.ToLower(p.Transport)),
		zap.String(FieldSrc, p.Src().String()),
		zap.String(FieldDst, p.Dst().String()),
		zap.String(FieldCallID, p.CallID),
		zap.String(FieldMethod, method),
	)
	if status != 0 {
		fields = append(fields, zap.Int(FieldStatus, status))
	}
	if seq != 0 {
		fields = append(fields, zap.Uint32(FieldCSeq, seq))
	}
	if sw != nil {
		fields = append(fields, zap.String("trace", sw.ID))
	}
	fields = append(fields, zap.ByteString("raw", p.Masked()))
	ce.Write(fields...)
}

// matchSwitch returns the trace switch selecting the message, if any.
func (t *Tap) matchSwitch(p *Packet, m *rawMessage) *TraceSwitch {
	list := t.switches.Load()
	if list == nil || len(*list) == 0 {
		return nil
	}
	now := p.Time
	var aors []string
	for i := range *list {
		sw := &(*list)[i]
		if !now.Before(sw.Expires) {
			continue
		}
		if sw.CallID != "" {
			if sw.CallID == p.CallID {
				return sw
			}
			continue
		}
		if aors == nil {
			_, ruri, _ := m.startLine()
			aors = []string{uriAOR(nameAddrURI(m.header("from"))), uriAOR(nameAddrURI(m.header("to"))), uriAOR(ruri)}
		}
		for _, a := range aors {
			if a != "" && a == sw.aorKey {
				return sw
			}
		}
	}
	return nil
}

// AddTrace turns a trace switch on: sw.AOR (a sip: URI, or user@host) or
// sw.CallID, exactly one of them, for d (DefaultTraceDuration when 0, at
// most MaxTraceDuration). It returns the switch as it is on, with its ID
// and expiry.
func (t *Tap) AddTrace(sw TraceSwitch, d time.Duration) (TraceSwitch, error) {
	sw.AOR, sw.CallID = strings.TrimSpace(sw.AOR), strings.TrimSpace(sw.CallID)
	if (sw.AOR == "") == (sw.CallID == "") {
		return TraceSwitch{}, ErrTraceSelector
	}
	if d == 0 {
		d = DefaultTraceDuration
	}
	if d < 0 || d > MaxTraceDuration {
		return TraceSwitch{}, ErrTraceDuration
	}
	if sw.AOR != "" {
		a := sw.AOR
		if !strings.Contains(a, ":") || strings.Index(a, "@") < strings.Index(a, ":") {
			a = "sip:" + a
		}
		if sw.aorKey = uriAOR(a); sw.aorKey == "" {
			return TraceSwitch{}, ErrTraceAOR
		}
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	sw.ID = hex.EncodeToString(b[:])
	sw.Expires = time.Now().Add(d).UTC()

	t.switchMu.Lock()
	defer t.switchMu.Unlock()
	list := t.activeSwitches(time.Now())
	if len(list) >= maxTraceSwitches {
		return TraceSwitch{}, ErrTraceFull
	}
	list = append(list, sw)
	t.storeSwitches(list)
	return sw, nil
}

// Traces returns the trace switches on, soonest to expire first.
func (t *Tap) Traces() []TraceSwitch {
	list := t.activeSwitches(time.Now())
	out := make([]TraceSwitch, len(list))
	copy(out, list)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Expires.Before(out[j-1].Expires); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// ClearTraces turns every trace switch off, or only the one named id when
// id is not empty, and returns how many were on.
func (t *Tap) ClearTraces(id string) int {
	t.switchMu.Lock()
	defer t.switchMu.Unlock()
	list := t.activeSwitches(time.Now())
	var keep []TraceSwitch
	for _, sw := range list {
		if id != "" && sw.ID != id {
			keep = append(keep, sw)
		}
	}
	t.storeSwitches(keep)
	return len(list) - len(keep)
}

// activeSwitches returns the switches not expired at now (a fresh slice).
func (t *Tap) activeSwitches(now time.Time) []TraceSwitch {
	list := t.switches.Load()
	if list == nil {
		return nil
	}
	var out []TraceSwitch
	for _, sw := range *list {
		if now.Before(sw.Expires) {
			out = append(out, sw)
		}
	}
	return out
}

// storeSwitches publishes list; switchMu is held.
func (t *Tap) storeSwitches(list []TraceSwitch) {
	var until int64
	for _, sw := range list {
		until = max(until, sw.Expires.UnixNano())
	}
	t.switches.Store(&list)
	t.switchesTo.Store(until)
}

// pruneSwitches forgets expired switches.
func (t *Tap) pruneSwitches(now time.Time) {
	t.switchMu.Lock()
	defer t.switchMu.Unlock()
	if list := t.switches.Load(); list != nil && len(t.activeSwitches(now)) != len(*list) {
		t.storeSwitches(t.activeSwitches(now))
	}
}
