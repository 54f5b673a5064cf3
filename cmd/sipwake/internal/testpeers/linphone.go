package testpeers

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"
)

// LinphoneOptions configures StartLinphone.
type LinphoneOptions struct {
	// User and Password are the SIP account (default 1003 / the password
	// of DefaultUsers); Domain is the AoR domain and realm (default
	// DefaultDomain).
	User, Password, Domain string
	// Proxy is the "host:port" every request goes to (the PBX or sipwake).
	Proxy string
	// Transport is "udp" (default), "tcp" or "tls".
	Transport string
	// PushParams is liblinphone's contact_uri_parameters: parameters
	// appended to the Contact URI, e.g.
	// "pn-provider=apns;pn-prid=TOKEN;pn-param=TEAM.org.example.voip"
	// (RFC 8599) or legacy "pn-type=apple;pn-tok=TOKEN;app-id=BUNDLE".
	PushParams string
	// ContactParams is contact_parameters: Contact header parameters.
	ContactParams string
	// TLSCA is a PEM file to trust (root_ca); with it the server
	// certificate is verified, without it not.
	TLSCA string
	// AutoAnswer answers incoming calls at once (--auto-answer).
	AutoAnswer bool
	// Expires is the registration expiry in seconds (default 600).
	Expires int
	// StartTimeout bounds the start (default 15s).
	StartTimeout time.Duration
}

// Linphone is a running linphone-daemon started by StartLinphone.
type Linphone struct {
	// User is the SIP user; AOR is "sip:user@domain".
	User, AOR string
	// SIPAddr is the daemon's SIP address for its transport
	// ("127.0.0.1:port").
	SIPAddr string
	// Socket is the daemon's command socket.
	Socket string
	// Dir is the run directory (HOME), LogFile liblinphone's log, and
	// StdoutFile the daemon's stdout (events written while no client is
	// connected).
	Dir, LogFile, StdoutFile string

	proc  *process
	cmdMu sync.Mutex
	conn  net.Conn
	rd    *bufio.Reader

	evMu    sync.Mutex
	events  []LinphoneEvent
	next    int
	changed chan struct{}
	stop    chan struct{}
	wg      sync.WaitGroup
}

// LinphoneEvent is one daemon event, e.g. Type "call-state-changed" with
// Fields["Event"] = "LinphoneCallStreamsRunning", or "message-received".
type LinphoneEvent struct {
	Type   string
	Fields map[string]string
}

// linphoneConfig is the data of testdata/linphone/linphonerc.tmpl.
type linphoneConfig struct {
	UDPPort, TCPPort, TLSPort, RTPPort, VideoRTPPort int
	RootCA                                           string
	Verify                                           bool
	DataDir                                          string
	Proxy, Transport, User, Password, Domain, Realm  string
	Expires                                          int
	ContactURIParams, ContactParams                  string
}

// StartLinphone renders our linphonerc into a temp dir, starts
// linphone-daemon with its own HOME and XDG data dir on random loopback
// ports, and connects to its command socket. It does not wait for the
// registration: use WaitRegistered. The daemon is stopped in t.Cleanup.
func StartLinphone(t testing.TB, opts LinphoneOptions) *Linphone {
	t.Helper()
	Require(t, "linphone-daemon")
	if opts.User == "" {
		opts.User = "1003"
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
	if opts.Expires <= 0 {
		opts.Expires = 600
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 15 * time.Second
	}
	if err := loopbackAddr(opts.Proxy); err != nil {
		t.Fatalf("testpeers: linphone: proxy: %v", err)
	}
	if strings.ContainsAny(opts.User+opts.Password+opts.Domain+opts.Proxy+opts.PushParams+opts.ContactParams, "\r\n") {
		t.Fatalf("testpeers: linphone: options must not contain line breaks")
	}
	dir := t.TempDir()
	// liblinphone keeps its databases under $XDG_DATA_HOME/linphone; when
	// that directory is missing the core never declares the network up,
	// opens no listening point, and the REGISTER fails with "No listening
	// point matching ...".
	dataDir := filepath.Join(dir, "data", "linphone")
	for _, d := range []string{dataDir, filepath.Join(dir, ".local", "share", "linphone")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("testpeers: %v", err)
		}
	}
	cfg := linphoneConfig{
		RootCA: opts.TLSCA, Verify: opts.TLSCA != "", DataDir: dataDir,
		Proxy: opts.Proxy, Transport: opts.Transport, User: opts.User, Password: opts.Password,
		Domain: opts.Domain, Realm: opts.Domain, Expires: opts.Expires,
		ContactURIParams: opts.PushParams, ContactParams: opts.ContactParams,
	}
	tmpl := template.Must(template.ParseFS(testdata, "testdata/linphone/linphonerc.tmpl"))

	var lastErr error
	for attempt := range 3 {
		var port int
		switch opts.Transport {
		case "udp":
			port = FreePort(t, "udp")
			cfg.UDPPort, cfg.TCPPort, cfg.TLSPort = port, 0, 0
		case "tcp":
			port = FreePort(t, "tcp")
			cfg.UDPPort, cfg.TCPPort, cfg.TLSPort = 0, port, 0
		case "tls":
			port = FreePort(t, "tcp")
			cfg.UDPPort, cfg.TCPPort, cfg.TLSPort = 0, 0, port
		default:
			t.Fatalf("testpeers: linphone: unsupported transport %q", opts.Transport)
		}
		cfg.RTPPort = FreePortRange(t, 2)
		cfg.VideoRTPPort = FreePortRange(t, 2)
		var b strings.Builder
		if err := tmpl.Execute(&b, cfg); err != nil {
			t.Fatalf("testpeers: render linphonerc: %v", err)
		}
		rc := writeFile(t, dir, fmt.Sprintf("linphonerc-%d", attempt), b.String(), 0o600)
		// --pipe NAME always creates /tmp/NAME
		pipe := "sipwake-lpd-" + randomHex(6)
		l := &Linphone{
			User:       opts.User,
			AOR:        "sip:" + opts.User + "@" + opts.Domain,
			SIPAddr:    hostPort(port),
			Socket:     filepath.Join("/tmp", pipe),
			Dir:        dir,
			LogFile:    filepath.Join(dir, fmt.Sprintf("daemon-%d.log", attempt)),
			StdoutFile: filepath.Join(dir, fmt.Sprintf("stdout-%d.log", attempt)),
			changed:    make(chan struct{}),
			stop:       make(chan struct{}),
		}
		args := []string{"--config", rc, "--pipe", pipe, "--log", l.LogFile}
		if opts.AutoAnswer {
			args = append(args, "--auto-answer")
		}
		env := []string{"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"),
			"XDG_CONFIG_HOME=" + filepath.Join(dir, ".config")}
		p, err := startProcess("linphone-daemon", dir, l.StdoutFile, "", env, "linphone-daemon", args...)
		if err != nil {
			t.Fatalf("testpeers: %v", err)
		}
		l.proc = p
		if lastErr = l.connect(opts.StartTimeout); lastErr == nil {
			l.wg.Add(1)
			go l.pollEvents()
			t.Cleanup(func() {
				l.Stop()
				if t.Failed() {
					t.Logf("--- linphone %s stdout %s\n%s\n--- log (tail)\n%s", l.User, l.StdoutFile, tailFile(l.StdoutFile, 30), l.LogTail())
				}
			})
			return l
		}
		p.stop(3 * time.Second)
		os.Remove(l.Socket)
		t.Logf("testpeers: linphone start attempt %d: %v\n%s", attempt+1, lastErr, tailFile(l.StdoutFile, 20))
	}
	t.Fatalf("testpeers: linphone-daemon did not start: %v", lastErr)
	return nil
}

// connect opens the one persistent connection to the command socket.
// (The daemon serves one client at a time; while a client is connected it
// queues events for pop-event instead of printing them.)
func (l *Linphone) connect(timeout time.Duration) error {
	poll(timeout, 50*time.Millisecond, func() bool {
		if l.proc.exited() {
			return true
		}
		c, err := net.DialTimeout("unix", l.Socket, 500*time.Millisecond)
		if err != nil {
			return false
		}
		l.conn, l.rd = c, bufio.NewReader(c)
		return true
	})
	if l.conn == nil {
		if l.proc.exited() {
			return fmt.Errorf("linphone-daemon exited with status %d", l.proc.exitCode())
		}
		return fmt.Errorf("linphone-daemon socket %s not reachable after %s", l.Socket, timeout)
	}
	if _, err := l.Command("version"); err != nil {
		l.conn.Close()
		l.conn = nil
		return err
	}
	return nil
}

// Command sends one daemon command (see linphone-daemon
// --dump-commands-help) and returns the response body after "Status: Ok".
// A "Status: Error" response is returned as an error with its reason.
func (l *Linphone) Command(cmd string) (string, error) {
	l.cmdMu.Lock()
	defer l.cmdMu.Unlock()
	if l.conn == nil {
		return "", fmt.Errorf("linphone %s: not connected", l.User)
	}
	_ = l.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(l.conn, "%s\n", cmd); err != nil {
		return "", fmt.Errorf("linphone %s: %s: %w", l.User, cmd, err)
	}
	// Each response is written at once and starts with "Status: "; there
	// is no terminator, so read what arrives until a short pause.
	buf := make([]byte, 64*1024)
	n, err := l.rd.Read(buf)
	if err != nil {
		return "", fmt.Errorf("linphone %s: %s: %w", l.User, cmd, err)
	}
	resp := string(buf[:n])
	for {
		_ = l.conn.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		n, err := l.rd.Read(buf)
		if n > 0 {
			resp += string(buf[:n])
		}
		if err != nil || n == 0 {
			break
		}
	}
	_ = l.conn.SetDeadline(time.Time{})
	status, body, _ := strings.Cut(resp, "\n")
	switch strings.TrimSpace(status) {
	case "Status: Ok":
		return strings.TrimLeft(body, "\n"), nil
	case "Status: Error":
		return "", fmt.Errorf("linphone %s: %s: %s", l.User, cmd, strings.TrimSpace(strings.TrimPrefix(body, "Reason:")))
	default:
		return "", fmt.Errorf("linphone %s: %s: unexpected response %q", l.User, cmd, resp)
	}
}

// pollEvents drains the daemon's event queue every 100 ms.
func (l *Linphone) pollEvents() {
	defer l.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		for range 50 {
			body, err := l.Command("pop-event")
			if err != nil {
				break
			}
			ev, ok := parseLinphoneEvent(body)
			if !ok {
				break
			}
			l.evMu.Lock()
			l.events = append(l.events, ev)
			close(l.changed)
			l.changed = make(chan struct{})
			l.evMu.Unlock()
		}
	}
}

// parseLinphoneEvent parses a pop-event body:
// "Size: N\nEvent-type: T\n\nKey: value\n...".
func parseLinphoneEvent(body string) (LinphoneEvent, bool) {
	ev := LinphoneEvent{Fields: map[string]string{}}
	for _, line := range strings.Split(body, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "Size":
		case "Event-type":
			ev.Type = v
		default:
			if _, dup := ev.Fields[k]; !dup {
				ev.Fields[k] = v
			}
		}
	}
	return ev, ev.Type != ""
}

// Events returns the events popped so far, followed by nothing else; the
// daemon's stdout (StdoutFile) holds events from moments no client was
// connected.
func (l *Linphone) Events() []LinphoneEvent {
	l.evMu.Lock()
	defer l.evMu.Unlock()
	return append([]LinphoneEvent(nil), l.events...)
}

// WaitEvent waits for the next event (not returned by an earlier WaitEvent)
// whose Type or Fields["Event"] equals name, e.g. "LinphoneCallConnected",
// "LinphoneCallEnd" or "message-received", bounded by timeout.
func (l *Linphone) WaitEvent(name string, timeout time.Duration) (LinphoneEvent, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.evMu.Lock()
		for i := l.next; i < len(l.events); i++ {
			if e := l.events[i]; e.Type == name || e.Fields["Event"] == name {
				l.next = i + 1
				l.evMu.Unlock()
				return e, nil
			}
		}
		changed := l.changed
		l.evMu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			var seen []string
			for _, e := range l.Events() {
				seen = append(seen, e.Type+"/"+e.Fields["Event"])
			}
			return LinphoneEvent{}, fmt.Errorf("linphone %s: no %s event within %s (events: %s)", l.User, name, timeout, strings.Join(seen, ","))
		}
	}
}

// RegistrationState returns the state of the account's registration, e.g.
// "LinphoneRegistrationOk".
func (l *Linphone) RegistrationState() (string, error) {
	body, err := l.Command("register-status ALL")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "State:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("linphone %s: no registration state in %q", l.User, body)
}

// WaitRegistered waits until the registration state is
// LinphoneRegistrationOk; LinphoneRegistrationFailed ends the wait with an
// error.
func (l *Linphone) WaitRegistered(timeout time.Duration) error {
	var state string
	var err error
	ok := poll(timeout, 100*time.Millisecond, func() bool {
		state, err = l.RegistrationState()
		return state == "LinphoneRegistrationOk" || state == "LinphoneRegistrationFailed"
	})
	if ok && state == "LinphoneRegistrationOk" {
		return nil
	}
	return fmt.Errorf("linphone %s: not registered within %s: state %q (%v)", l.User, timeout, state, err)
}

// Call places a call to uri (e.g. "sip:1001@pbx.test") and returns the
// daemon's call id.
func (l *Linphone) Call(uri string) (string, error) {
	body, err := l.Command("call " + uri)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "Id:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", nil
}

// CallStatus returns the state of the current call (e.g.
// "LinphoneCallStreamsRunning"); an error when there is none.
func (l *Linphone) CallStatus() (string, error) {
	body, err := l.Command("call-status")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "State:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("linphone %s: no call state in %q", l.User, body)
}

// Answer answers the incoming call with the daemon's call id.
func (l *Linphone) Answer(id string) error {
	_, err := l.Command("answer " + id)
	return err
}

// Terminate ends the current call.
func (l *Linphone) Terminate() error {
	_, err := l.Command("terminate")
	return err
}

// Message sends a SIP MESSAGE with text to uri.
func (l *Linphone) Message(uri, text string) error {
	_, err := l.Command("message " + uri + " " + text)
	return err
}

// LogTail returns the last 60 lines of liblinphone's log.
func (l *Linphone) LogTail() string { return tailFile(l.LogFile, 60) }

// PID returns the daemon's process id.
func (l *Linphone) PID() int { return l.proc.PID() }

// Stop ends the daemon: "quit" over the socket, then SIGTERM to its
// process group and SIGKILL after 3 s; removes the socket. It is also
// called by t.Cleanup.
func (l *Linphone) Stop() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	if !l.proc.exited() && l.conn != nil {
		l.cmdMu.Lock()
		_ = l.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = fmt.Fprintf(l.conn, "quit\n")
		l.cmdMu.Unlock()
		select {
		case <-l.proc.done:
		case <-time.After(3 * time.Second):
		}
	}
	l.proc.stop(3 * time.Second)
	if l.conn != nil {
		l.conn.Close()
	}
	os.Remove(l.Socket)
}
