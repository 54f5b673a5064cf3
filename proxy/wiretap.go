package proxy

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Where the tap sees the wire. sipgo has no per-server hook on what it
// writes (its SIPDebug tracer is process-wide, and costs two address
// formats per read and write even when nothing listens), so:
//
//   - every read, on any connection, goes through the transport layer's
//     read filter (Server.readFilter), which sees the bytes as read, the
//     transport (TLS included) and both addresses;
//   - every write on a socket the Server opened goes through a wrapper:
//     the UDP listener sockets (all UDP sipwake sends leaves from them)
//     and the TCP and TLS connections its listeners accept;
//   - a write on a connection sipgo opened itself (TCP or TLS towards the
//     PBX or another node) is captured where sipwake hands the message to
//     sipgo, from the transaction's connection (captureOnConn), as sipgo
//     serialises it. What sipgo sends on such a connection on its own —
//     the ACK of a non-2xx final response, its answers to a CANCEL — is
//     not seen.
//
// With no Tap configured nothing is wrapped; with a Tap whose output is
// off, each read and write costs one check.

// tapPacketConn is a UDP listener socket whose writes the tap sees.
type tapPacketConn struct {
	net.PacketConn
	tap   *Tap
	local string
}

// WriteToUDPAddrPort is WriteTo without a net.UDPAddr (see sendUDP).
func (c *tapPacketConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	w, ok := c.PacketConn.(udpWriter)
	if !ok {
		return c.WriteTo(b, net.UDPAddrFromAddrPort(to))
	}
	n, err := w.WriteToUDPAddrPort(b, to)
	if n > 0 && c.tap.on() {
		c.tap.capture(DirOut, "UDP", c.local, to.String(), b[:n])
	}
	return n, err
}

func (c *tapPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := c.PacketConn.WriteTo(b, addr)
	if n > 0 && c.tap.on() {
		c.tap.capture(DirOut, "UDP", c.local, addr.String(), b[:n])
	}
	return n, err
}

// tapListener wraps the connections a TCP or TLS listener accepts.
type tapListener struct {
	net.Listener
	tap       *Tap
	transport string
}

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, tap: l.tap, transport: l.transport,
		local: c.LocalAddr().String(), remote: c.RemoteAddr().String()}, nil
}

// tapConn is an accepted connection whose writes the tap sees (sipgo
// writes one whole message per Write).
type tapConn struct {
	net.Conn
	tap           *Tap
	transport     string
	local, remote string
}

func (c *tapConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 && c.tap.on() {
		c.tap.capture(DirOut, c.transport, c.local, c.remote, b[:n])
	}
	return n, err
}

// captureOnConn captures m, handed to sipgo at t0, when the connection it
// went out on is not one of the wrapped sockets.
func (s *Server) captureOnConn(c sip.Connection, m sip.Message, t0 time.Time) {
	tap := s.cfg.Tap
	if c == nil || !tap.on() {
		return
	}
	var local, remote string
	switch c := c.(type) {
	case *sip.TCPConnection:
		if _, ours := c.Conn.(*tapConn); ours {
			return
		}
		local, remote = c.LocalAddr().String(), c.RemoteAddr().String()
	case *sip.UDPConnection:
		if _, ours := c.PacketConn.(*tapPacketConn); ours {
			return
		}
		local, remote = c.LocalAddr().String(), m.Destination()
	default:
		return
	}
	if t0.IsZero() {
		t0 = time.Now()
	}
	tap.captureAt(t0, DirOut, strings.ToUpper(m.Transport()), local, remote, []byte(m.String()))
}

// tapTime is the time a message is handed to sipgo, taken only while the
// tap's output is on.
func (s *Server) tapTime() time.Time {
	if s.cfg.Tap.on() {
		return time.Now()
	}
	return time.Time{}
}

// txConn is the connection a transaction writes on, if sipgo tells.
func txConn(tx any) sip.Connection {
	switch tx := tx.(type) {
	case *sip.ClientTx:
		return tx.Connection()
	case *sip.ServerTx:
		return tx.Connection()
	}
	return nil
}

// writeMsg sends m outside a transaction (sip.TransportLayer.WriteMsg)
// where the tap sees it.
func (s *Server) writeMsg(m sip.Message) error {
	if res, ok := m.(*sip.Response); ok && strings.EqualFold(res.Transport(), "UDP") {
		return s.writeUDP(res)
	}
	t0 := s.tapTime()
	if err := s.tpl.WriteMsg(m); err != nil {
		return err
	}
	if s.cfg.Tap.on() {
		if tp := strings.ToUpper(m.Transport()); tp == "TCP" || tp == "TLS" {
			if c, err := s.tpl.GetConnection(tp, m.Destination()); err == nil && c != nil {
				s.captureOnConn(c, m, t0)
				_, _ = c.TryClose() // drop the reference the lookup took
			}
		}
	}
	return nil
}

// writeUDP sends m on the UDP listener's socket. sipgo's transport finds
// the socket for a response only by the address a request came from, and
// learns none of those the light transactions read first.
func (s *Server) writeUDP(m sip.Message) error {
	l := s.listenerFor("UDP")
	if l == nil || l.pc == nil {
		return errors.New("proxy: no UDP listener")
	}
	to, err := s.udpAddr(m.Destination())
	if err != nil {
		return err
	}
	return sendUDP(l.pc, encode(m), to)
}
