package proxytest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// UA is a raw SIP endpoint for tests: it sends the bytes it is given and
// parses what it receives, so tests control every header.
type UA struct {
	t       testing.TB
	network string
	udp     *net.UDPConn
	tcp     net.Conn
	parser  *sip.Parser
	msgs    chan sip.Message
	closed  chan struct{}
	once    sync.Once
	ln      net.Listener
	mu      sync.Mutex
	later   []sip.Message // put back by Defer, read first
}

// NewUDP binds a UA on ip:0 over UDP ("127.0.0.1" when ip is empty).
func NewUDP(t testing.TB, ip string) *UA {
	t.Helper()
	if ip == "" {
		ip = "127.0.0.1"
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatalf("proxytest: listen udp: %v", err)
	}
	u := newUA(t, "udp")
	u.udp = c
	go u.readUDP()
	t.Cleanup(u.Close)
	return u
}

// DialTCP connects a UA over TCP to addr from ip (any port).
func DialTCP(t testing.TB, ip, addr string) *UA {
	t.Helper()
	if ip == "" {
		ip = "127.0.0.1"
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("proxytest: dial tcp %s: %v", addr, err)
	}
	u := newUA(t, "tcp")
	u.tcp = c
	go u.readConn(c)
	t.Cleanup(u.Close)
	return u
}

func newUA(t testing.TB, network string) *UA {
	return &UA{t: t, network: network, parser: sip.NewParser(),
		msgs: make(chan sip.Message, 64), closed: make(chan struct{})}
}

// Addr is the UA's local "ip:port".
func (u *UA) Addr() string {
	if u.udp != nil {
		return u.udp.LocalAddr().String()
	}
	if u.ln != nil {
		return u.ln.Addr().String()
	}
	return u.conn().LocalAddr().String()
}

func (u *UA) conn() net.Conn {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.tcp
}

// Host and Port split Addr.
func (u *UA) Host() string { h, _, _ := net.SplitHostPort(u.Addr()); return h }

// Port is the UA's local port.
func (u *UA) Port() int {
	_, p, _ := net.SplitHostPort(u.Addr())
	n, _ := strconv.Atoi(p)
	return n
}

// Close releases the socket.
func (u *UA) Close() {
	u.once.Do(func() {
		close(u.closed)
		if u.udp != nil {
			_ = u.udp.Close()
		}
		if c := u.conn(); c != nil {
			_ = c.Close()
		}
		if u.ln != nil {
			_ = u.ln.Close()
		}
	})
}

// Send writes msg (CRLF line ends are added where "\n" stands alone) to
// addr (ignored on TCP).
func (u *UA) Send(addr, msg string) {
	u.t.Helper()
	u.SendRaw(addr, []byte(CRLF(msg)))
}

// SendRaw writes exact bytes.
func (u *UA) SendRaw(addr string, b []byte) {
	u.t.Helper()
	var err error
	if u.udp != nil {
		var ua *net.UDPAddr
		ua, err = net.ResolveUDPAddr("udp", addr)
		if err == nil {
			_, err = u.udp.WriteToUDP(b, ua)
		}
	} else if c := u.conn(); c != nil {
		_, err = c.Write(b)
	} else {
		err = errors.New("no connection")
	}
	if err != nil {
		u.t.Fatalf("proxytest: send: %v", err)
	}
}

// CRLF turns lone "\n" into "\r\n" and fixes Content-Length to the body.
func CRLF(msg string) string {
	msg = strings.ReplaceAll(msg, "\r\n", "\n")
	head, body, found := strings.Cut(msg, "\n\n")
	if !found {
		head, body = strings.TrimRight(msg, "\n"), ""
	}
	lines := strings.Split(head, "\n")
	out := make([]string, 0, len(lines)+1)
	for _, l := range lines {
		if strings.HasPrefix(strings.ToLower(l), "content-length:") {
			continue
		}
		out = append(out, l)
	}
	out = append(out, "Content-Length: "+strconv.Itoa(len(body)))
	return strings.Join(out, "\r\n") + "\r\n\r\n" + body
}

// Defer puts m back: the next Recv returns it (deferred messages come
// back in the order they were deferred). A test waiting for one message
// uses it to keep others that arrived first, such as an INVITE that
// overtook the 200 to the REGISTER that woke the device.
func (u *UA) Defer(m sip.Message) {
	u.mu.Lock()
	u.later = append(u.later, m)
	u.mu.Unlock()
}

// Recv waits up to d for the next message.
func (u *UA) Recv(d time.Duration) (sip.Message, error) {
	u.mu.Lock()
	if len(u.later) > 0 {
		m := u.later[0]
		u.later = u.later[1:]
		u.mu.Unlock()
		return m, nil
	}
	u.mu.Unlock()
	select {
	case m := <-u.msgs:
		return m, nil
	case <-time.After(d):
		return nil, errors.New("proxytest: nothing received")
	}
}

// Expect waits for the next message and fails the test on timeout.
func (u *UA) Expect(d time.Duration) sip.Message {
	u.t.Helper()
	m, err := u.Recv(d)
	if err != nil {
		u.t.Fatalf("proxytest %s: %v", u.Addr(), err)
	}
	return m
}

// ExpectResponse waits for a response, skipping 100 Trying, and fails the
// test unless its status is code.
func (u *UA) ExpectResponse(d time.Duration, code int) *sip.Response {
	u.t.Helper()
	deadline := time.Now().Add(d)
	for {
		m, err := u.Recv(time.Until(deadline))
		if err != nil {
			u.t.Fatalf("proxytest %s: waiting for %d: %v", u.Addr(), code, err)
		}
		res, ok := m.(*sip.Response)
		if !ok {
			continue
		}
		if res.StatusCode == 100 && code != 100 {
			continue
		}
		if res.StatusCode != code {
			u.t.Fatalf("proxytest %s: got %d %s, want %d", u.Addr(), res.StatusCode, res.Reason, code)
		}
		return res
	}
}

// ExpectRequest waits for a request of the given method (skipping
// responses) and fails the test otherwise.
func (u *UA) ExpectRequest(d time.Duration, method sip.RequestMethod) *sip.Request {
	u.t.Helper()
	deadline := time.Now().Add(d)
	for {
		m, err := u.Recv(time.Until(deadline))
		if err != nil {
			u.t.Fatalf("proxytest %s: waiting for %s: %v", u.Addr(), method, err)
		}
		if req, ok := m.(*sip.Request); ok {
			if req.Method != method {
				u.t.Fatalf("proxytest %s: got %s, want %s", u.Addr(), req.Method, method)
			}
			return req
		}
	}
}

// Quiet fails the test if a message (other than 100 Trying) arrives
// within d.
func (u *UA) Quiet(d time.Duration) {
	u.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		m, err := u.Recv(time.Until(deadline))
		if err != nil {
			return
		}
		if res, ok := m.(*sip.Response); ok && res.StatusCode == 100 {
			continue
		}
		u.t.Fatalf("proxytest %s: unexpected message: %s", u.Addr(), firstLine(m))
	}
}

// Reply answers req with code and reason, adding extra header lines
// ("Name: value") and a To tag for non-100 codes; it mirrors Via, From,
// To, Call-ID, CSeq and Record-Route.
func (u *UA) Reply(addr string, req *sip.Request, code int, reason string, extra ...string) {
	u.t.Helper()
	u.SendRaw(addr, []byte(ResponseText(req, code, reason, "totag-"+strconv.Itoa(u.Port()), extra...)))
}

// ResponseText renders a response to req.
func ResponseText(req *sip.Request, code int, reason, toTag string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, h := range req.GetHeaders("Via") {
		b.WriteString("Via: " + h.Value() + "\r\n")
	}
	for _, h := range req.GetHeaders("Record-Route") {
		b.WriteString("Record-Route: " + h.Value() + "\r\n")
	}
	b.WriteString("From: " + req.From().Value() + "\r\n")
	to := req.To().Value()
	if code > 100 && !req.To().Params.Has("tag") && toTag != "" {
		to += ";tag=" + toTag
	}
	b.WriteString("To: " + to + "\r\n")
	b.WriteString("Call-ID: " + req.CallID().Value() + "\r\n")
	b.WriteString("CSeq: " + req.CSeq().Value() + "\r\n")
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

func (u *UA) readUDP() {
	buf := make([]byte, 65535)
	for {
		n, _, err := u.udp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		data := append([]byte(nil), buf[:n]...)
		if len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		u.deliver(data)
	}
}

func (u *UA) readConn(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		head, err := readHead(br)
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(head)) == 0 {
			continue // keep-alive
		}
		n := contentLength(head)
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		u.deliver(append(head, body...))
	}
}

func readHead(br *bufio.Reader) ([]byte, error) {
	var head []byte
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		head = append(head, line...)
		if len(bytes.TrimSpace(head)) == 0 {
			return head, nil // CRLF keep-alive (pong)
		}
		if bytes.Equal(line, []byte("\r\n")) {
			return head, nil
		}
	}
}

func contentLength(head []byte) int {
	for _, l := range strings.Split(string(head), "\r\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if k == "content-length" || k == "l" {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

func (u *UA) deliver(data []byte) {
	m, err := u.parser.ParseSIP(data)
	if err != nil {
		return
	}
	select {
	case u.msgs <- m:
	case <-u.closed:
	}
}

func firstLine(m sip.Message) string {
	s, _, _ := strings.Cut(m.String(), "\r\n")
	return s
}

// Network is "udp" or "tcp".
func (u *UA) Network() string { return u.network }

// ListenTCP accepts TCP connections on addr ("ip:port"; port 0 picks one)
// and delivers what they carry; Send and Reply write on the last accepted
// connection.
func ListenTCP(t testing.TB, addr string) *UA {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("proxytest: listen tcp %s: %v", addr, err)
	}
	u := newUA(t, "tcp")
	u.ln = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.tcp = c
			u.mu.Unlock()
			go u.readConn(c)
		}
	}()
	t.Cleanup(u.Close)
	return u
}
