package testpeers

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"
)

// BaresipOptions configures StartBaresip.
type BaresipOptions struct {
	// User and Password are the SIP account (default 1001 / the password
	// of DefaultUsers); Domain is the AoR domain (default DefaultDomain).
	User, Password, Domain string
	// Proxy is the "host:port" every request goes to (the PBX or sipwake).
	Proxy string
	// Transport is "udp" (default), "tcp" or "tls".
	Transport string
	// TLSCA is a PEM file baresip trusts for TLS (sip_cafile), such as
	// Kamailio.CertFile or a cert from SelfSignedCert.
	TLSCA string
	// Insecure documents that the TLS peer is not verified. baresip 1.0
	// has no switch for it: without TLSCA it does not check the server
	// certificate, with TLSCA it loads it as a trusted CA.
	Insecure bool
	// AutoAnswer answers incoming calls at once (answermode=auto);
	// otherwise use Accept.
	AutoAnswer bool
	// AccountParams is appended to the account line, e.g.
	// `;regq="1.0;pn-provider=apns;pn-prid=TOKEN"` (baresip 1.0 cannot put
	// RFC 8599 parameters into the Contact URI: regq is copied raw after
	// it, as Contact header parameters).
	AccountParams string
	// RegInterval is the registration interval in seconds (default 600).
	RegInterval int
	// StartTimeout bounds the start (default 10s).
	StartTimeout time.Duration
}

// Baresip is a running baresip softphone started by StartBaresip.
type Baresip struct {
	// User is the SIP user; AOR is "sip:user@domain".
	User, AOR string
	// SIPAddr is baresip's own SIP address ("127.0.0.1:port", UDP and TCP;
	// TLS listens on port + 1); CtrlAddr and ConsAddr are its control
	// interfaces (ctrl_tcp JSON and cons text commands).
	SIPAddr, CtrlAddr, ConsAddr string
	// Dir is the config directory; LogFile holds baresip's output.
	Dir, LogFile string

	proc *process
	conn net.Conn

	mu      sync.Mutex
	events  []BaresipEvent
	next    int // WaitEvent cursor into events
	pending map[string]chan baresipResponse
	changed chan struct{}
	readErr error
	seq     int
}

// BaresipEvent is one ctrl_tcp event, e.g. Type "REGISTER_OK",
// "CALL_INCOMING", "CALL_RINGING", "CALL_ESTABLISHED", "CALL_CLOSED".
type BaresipEvent struct {
	Type       string
	Class      string
	AccountAOR string
	Direction  string
	PeerURI    string
	ID         string
	Param      string
	// Raw is the decoded JSON object.
	Raw map[string]any
}

type baresipResponse struct {
	ok   bool
	data string
}

// baresipConfig is the data of the baresip templates.
type baresipConfig struct {
	IP, Tag, CAFile, ModulePath                 string
	SIPPort, ConsPort, CtrlPort, RTPMin, RTPMax int
	User, Password, Domain, Proxy, Transport    string
	AnswerMode, Extra                           string
	RegInt                                      int
}

// StartBaresip renders our baresip config and account into a temp dir,
// starts baresip on random loopback ports and connects to its ctrl_tcp
// interface. It does not wait for the registration: use WaitRegistered.
// baresip is stopped in t.Cleanup.
func StartBaresip(t testing.TB, opts BaresipOptions) *Baresip {
	t.Helper()
	Require(t, "baresip")
	if opts.User == "" {
		opts.User = "1001"
	}
	if opts.Password == "" {
		opts.Password = DefaultUsers[opts.User]
	}
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	if opts.Transport == "" {
		opts.Transport = "udp"
	}
	if opts.RegInterval <= 0 {
		opts.RegInterval = 600
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 10 * time.Second
	}
	switch opts.Transport {
	case "udp", "tcp", "tls":
	default:
		t.Fatalf("testpeers: baresip: unsupported transport %q", opts.Transport)
	}
	if err := loopbackAddr(opts.Proxy); err != nil {
		t.Fatalf("testpeers: baresip: proxy: %v", err)
	}
	if strings.ContainsAny(opts.User+opts.Password+opts.Domain+opts.Proxy, "\";<>\r\n ") {
		t.Fatalf("testpeers: baresip: user, password, domain and proxy must not contain quotes, ';', '<', '>' or spaces")
	}
	modules := "/usr/lib/baresip/modules"
	for _, d := range []string{"/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules"} {
		if _, err := os.Stat(filepath.Join(d, "ctrl_tcp.so")); err == nil {
			modules = d
			break
		}
	}
	answer := "manual"
	if opts.AutoAnswer {
		answer = "auto"
	}
	dir := t.TempDir()
	cfg := baresipConfig{
		IP: Loopback, Tag: opts.User + randomHex(2), CAFile: opts.TLSCA, ModulePath: modules,
		User: opts.User, Password: opts.Password, Domain: opts.Domain, Proxy: opts.Proxy,
		Transport: opts.Transport, AnswerMode: answer, Extra: opts.AccountParams,
		RegInt: opts.RegInterval,
	}
	tmpl := template.Must(template.ParseFS(testdata, "testdata/baresip/*.tmpl"))

	var lastErr error
	for attempt := range 3 {
		cfg.SIPPort = FreePortRange(t, 2) // TLS on SIP port + 1
		cfg.ConsPort = FreePort(t, "udp+tcp")
		cfg.CtrlPort = FreePort(t, "tcp")
		cfg.RTPMin = FreePortRange(t, 8)
		cfg.RTPMax = cfg.RTPMin + 7
		for _, name := range []string{"config", "accounts"} {
			var b strings.Builder
			if err := tmpl.ExecuteTemplate(&b, name+".tmpl", cfg); err != nil {
				t.Fatalf("testpeers: render baresip %s: %v", name, err)
			}
			writeFile(t, dir, name, b.String(), 0o600)
		}
		b := &Baresip{
			User:     opts.User,
			AOR:      "sip:" + opts.User + "@" + opts.Domain,
			SIPAddr:  hostPort(cfg.SIPPort),
			CtrlAddr: hostPort(cfg.CtrlPort),
			ConsAddr: hostPort(cfg.ConsPort),
			Dir:      dir,
			LogFile:  filepath.Join(dir, fmt.Sprintf("baresip-%d.log", attempt)),
			pending:  map[string]chan baresipResponse{},
			changed:  make(chan struct{}),
		}
		p, err := startProcess("baresip", dir, b.LogFile, "", []string{"HOME=" + dir}, "baresip", "-f", dir)
		if err != nil {
			t.Fatalf("testpeers: %v", err)
		}
		b.proc = p
		if lastErr = b.connect(opts.StartTimeout); lastErr == nil {
			t.Cleanup(func() {
				b.Stop()
				if t.Failed() {
					t.Logf("--- baresip %s log %s (tail)\n%s", b.User, b.LogFile, b.LogTail())
				}
			})
			return b
		}
		p.stop(3 * time.Second)
		t.Logf("testpeers: baresip start attempt %d: %v\n%s", attempt+1, lastErr, tailFile(b.LogFile, 20))
	}
	t.Fatalf("testpeers: baresip did not start: %v", lastErr)
	return nil
}

// connect dials ctrl_tcp until it answers (or baresip exits) and starts
// the reader.
func (b *Baresip) connect(timeout time.Duration) error {
	var conn net.Conn
	poll(timeout, 50*time.Millisecond, func() bool {
		if b.proc.exited() {
			return true
		}
		c, err := net.DialTimeout("tcp", b.CtrlAddr, 500*time.Millisecond)
		if err != nil {
			return false
		}
		conn = c
		return true
	})
	if conn == nil {
		if b.proc.exited() {
			return fmt.Errorf("baresip exited with status %d", b.proc.exitCode())
		}
		return fmt.Errorf("baresip ctrl_tcp %s not reachable after %s", b.CtrlAddr, timeout)
	}
	b.conn = conn
	go b.read(conn)
	return nil
}

// read parses netstrings ("LEN:JSON,") from ctrl_tcp.
func (b *Baresip) read(conn net.Conn) {
	r := bufio.NewReader(conn)
	var err error
	for {
		var n string
		if n, err = r.ReadString(':'); err != nil {
			break
		}
		size, convErr := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(n, ":")))
		if convErr != nil || size < 0 || size > 1<<20 {
			err = fmt.Errorf("bad netstring length %q", n)
			break
		}
		buf := make([]byte, size+1)
		if _, err = io.ReadFull(r, buf); err != nil {
			break
		}
		var m map[string]any
		if json.Unmarshal(buf[:size], &m) != nil {
			continue
		}
		b.dispatch(m)
	}
	b.mu.Lock()
	b.readErr = err
	b.notifyLocked()
	b.mu.Unlock()
}

func (b *Baresip) dispatch(m map[string]any) {
	str := func(k string) string {
		switch v := m[k].(type) {
		case string:
			return v
		case nil:
			return ""
		default:
			return fmt.Sprint(v)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if m["event"] == true {
		b.events = append(b.events, BaresipEvent{
			Type: str("type"), Class: str("class"), AccountAOR: str("accountaor"),
			Direction: str("direction"), PeerURI: str("peeruri"), ID: str("id"),
			Param: str("param"), Raw: m,
		})
		b.notifyLocked()
		return
	}
	if m["response"] == true {
		if ch, ok := b.pending[str("token")]; ok {
			ch <- baresipResponse{ok: m["ok"] == true, data: str("data")}
			delete(b.pending, str("token"))
		}
	}
}

func (b *Baresip) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Command sends one ctrl_tcp command (a menu command such as "dial",
// "hangup", "accept", "reginfo", "listcalls") with optional params and
// returns the response's data. It fails when baresip answers ok=false or
// does not answer within 5 s.
func (b *Baresip) Command(command, params string) (string, error) {
	b.mu.Lock()
	b.seq++
	token := "t" + strconv.Itoa(b.seq)
	ch := make(chan baresipResponse, 1)
	b.pending[token] = ch
	b.mu.Unlock()
	msg := map[string]string{"command": command, "token": token}
	if params != "" {
		msg["params"] = params
	}
	js, _ := json.Marshal(msg)
	_ = b.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(b.conn, "%d:%s,", len(js), js); err != nil {
		return "", fmt.Errorf("baresip %s: %s: %w", b.User, command, err)
	}
	select {
	case r := <-ch:
		if !r.ok {
			return r.data, fmt.Errorf("baresip %s: %s %s: failed: %s", b.User, command, params, r.data)
		}
		return r.data, nil
	case <-time.After(5 * time.Second):
		b.mu.Lock()
		delete(b.pending, token)
		b.mu.Unlock()
		return "", fmt.Errorf("baresip %s: %s: no response within 5s", b.User, command)
	}
}

// Dial calls uri (e.g. "sip:1002@pbx.test").
func (b *Baresip) Dial(uri string) error {
	_, err := b.Command("dial", uri)
	return err
}

// Accept answers the current incoming call (when AutoAnswer is off).
func (b *Baresip) Accept() error {
	_, err := b.Command("accept", "")
	return err
}

// Hangup ends the current call.
func (b *Baresip) Hangup() error {
	_, err := b.Command("hangup", "")
	return err
}

// Events returns every ctrl_tcp event received so far.
func (b *Baresip) Events() []BaresipEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]BaresipEvent(nil), b.events...)
}

// WaitEvent waits for the next event of type typ that an earlier WaitEvent
// has not returned yet (events before the cursor are skipped), bounded by
// timeout.
func (b *Baresip) WaitEvent(typ string, timeout time.Duration) (BaresipEvent, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		for i := b.next; i < len(b.events); i++ {
			if b.events[i].Type == typ {
				b.next = i + 1
				ev := b.events[i]
				b.mu.Unlock()
				return ev, nil
			}
		}
		changed, readErr := b.changed, b.readErr
		b.mu.Unlock()
		if readErr != nil {
			return BaresipEvent{}, fmt.Errorf("baresip %s: waiting for %s: ctrl_tcp closed: %v", b.User, typ, readErr)
		}
		select {
		case <-changed:
		case <-deadline.C:
			return BaresipEvent{}, fmt.Errorf("baresip %s: no %s event within %s (events: %s)", b.User, typ, timeout, b.eventTypes())
		}
	}
}

func (b *Baresip) eventTypes() string {
	var ts []string
	for _, e := range b.Events() {
		ts = append(ts, e.Type)
	}
	return strings.Join(ts, ",")
}

// WaitRegistered waits until the account is registered: a REGISTER_OK
// event, or "OK" in the reginfo output (the event may precede the ctrl_tcp
// connection). A REGISTER_FAIL event ends the wait with an error.
func (b *Baresip) WaitRegistered(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, e := range b.Events() {
			switch e.Type {
			case "REGISTER_OK":
				return nil
			case "REGISTER_FAIL":
				return fmt.Errorf("baresip %s: registration failed: %s", b.User, e.Param)
			}
		}
		if info, err := b.Command("reginfo", ""); err == nil && strings.Contains(stripANSI(info), " OK ") {
			return nil
		}
		b.mu.Lock()
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-time.After(200 * time.Millisecond):
		}
	}
	info, _ := b.Command("reginfo", "")
	return fmt.Errorf("baresip %s: not registered within %s: %s", b.User, timeout, strings.TrimSpace(stripANSI(info)))
}

// stripANSI removes terminal color sequences (ESC [ ... m) from baresip's
// menu output, replacing each with a space.
func stripANSI(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "\x1b[")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteByte(' ')
		j := strings.IndexByte(s[i:], 'm')
		if j < 0 {
			return b.String()
		}
		s = s[i+j+1:]
	}
}

// Cons sends one text command to the cons interface over UDP (e.g.
// "/listcalls") and returns the reply datagram.
func (b *Baresip) Cons(cmd string) (string, error) {
	c, err := net.Dial("udp", b.ConsAddr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64*1024)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// LogTail returns the last 60 lines of baresip's output.
func (b *Baresip) LogTail() string { return tailFile(b.LogFile, 60) }

// PID returns baresip's process id.
func (b *Baresip) PID() int { return b.proc.PID() }

// Stop ends baresip: "quit" over ctrl_tcp, then SIGTERM to its process
// group (baresip waits for its un-REGISTER) and SIGKILL after 3 s. It is
// also called by t.Cleanup.
func (b *Baresip) Stop() {
	if b.proc.exited() {
		return
	}
	if b.conn != nil {
		js := `{"command":"quit","token":"quit"}`
		_ = b.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = fmt.Fprintf(b.conn, "%d:%s,", len(js), js)
		select {
		case <-b.proc.done:
		case <-time.After(2 * time.Second):
		}
	}
	b.proc.stop(3 * time.Second)
	if b.conn != nil {
		b.conn.Close()
	}
}
