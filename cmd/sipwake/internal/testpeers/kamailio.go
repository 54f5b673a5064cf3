package testpeers

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"embed"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"
)

//go:embed testdata
var testdata embed.FS

// DefaultUsers are the PBX accounts when KamailioOptions.Users is empty.
var DefaultUsers = map[string]string{"1001": "pw1001", "1002": "pw1002", "1003": "pw1003"}

// DefaultDomain is the PBX domain and digest realm when
// KamailioOptions.Domain is empty.
const DefaultDomain = "pbx.test"

// KamailioOptions configures StartKamailio.
type KamailioOptions struct {
	// TLS adds a TLS listener with a self-signed certificate (see
	// Kamailio.CertFile) made for 127.0.0.1, localhost and Domain.
	TLS bool
	// Users maps user to plain password (default DefaultUsers). Names and
	// passwords must not contain ':', '\\' or line breaks.
	Users map[string]string
	// Domain is the SIP domain and digest realm (default DefaultDomain).
	Domain string
	// ListenIP is the loopback address Kamailio listens on (default
	// 127.0.0.1); another one such as 127.0.0.2 lets a test tell the PBX's
	// traffic from the devices' by source address.
	ListenIP string
	// NoCallerAuth turns off the 407 challenge of out-of-dialog requests
	// from local users (REGISTER is always challenged).
	NoCallerAuth bool
	// QOP is "" (challenges without qop, the default) or "auth".
	QOP string
	// Quiet drops the per-request log lines (for load).
	Quiet bool
	// Children is the number of UDP worker processes (default 2).
	Children int
	// ShmMB is the shared memory size in MB (default 64).
	ShmMB int
	// StartTimeout bounds the start (default 15s).
	StartTimeout time.Duration
	// MaxExpires is the longest registration the registrar grants
	// (registrar max_expires, in whole seconds, at least 1s); a REGISTER
	// asking for more, or for nothing, gets MaxExpires. 0 keeps 3600s.
	// min_expires (10s) is lowered to MaxExpires when that is shorter.
	MaxExpires time.Duration
	// TrustedSources are IPv4 loopback addresses whose REGISTERs are saved
	// without a digest challenge when they carry the header
	// X-Sipwake-On-Behalf (any value): the PBX trusting a gateway's own
	// refreshes by source address. The AoR is the To URI; its user must be
	// one of Users (else 404). Without the header a REGISTER from such an
	// address is challenged as usual. Empty (the default) trusts nobody.
	TrustedSources []string
}

// OnBehalfHeader is the header that, on a REGISTER from one of
// KamailioOptions.TrustedSources, makes Kamailio save it without a digest
// challenge.
const OnBehalfHeader = "X-Sipwake-On-Behalf"

// Kamailio is a running Kamailio "PBX" started by StartKamailio.
type Kamailio struct {
	// UDPAddr, TCPAddr and TLSAddr are "IP:port" (TLSAddr is empty without
	// TLS). UDP and TCP share one port.
	UDPAddr, TCPAddr, TLSAddr string
	// IP is the loopback address Kamailio listens on.
	IP string
	// Domain is the SIP domain and digest realm.
	Domain string
	// Users maps user to password; SetPassword updates it.
	Users map[string]string
	// CertFile and KeyFile are the TLS listener's certificate (self-signed,
	// usable as a CA file by clients) and key; empty without TLS.
	CertFile, KeyFile string
	// Dir is the run directory (config, db_text table, log).
	Dir string
	// LogFile is Kamailio's log (stderr).
	LogFile string
	// CtlSocket is the binrpc socket ("unix:/path") kamcmd talks to.
	CtlSocket string

	proc *process
}

// kamailioConfig is the data of testdata/kamailio/pbx.cfg.tmpl.
type kamailioConfig struct {
	IP                        string
	UDPPort, TCPPort, TLSPort int
	TLS, NoCallerAuth, Quiet  bool
	Domain                    string
	DBDir                     string
	CtlSocket                 string
	TLSConfig                 string
	Secret                    string
	Children                  int
	ChallengeFlags, AuthFlags string
	// MaxExpires, DefaultExpires and MinExpires are the registrar's
	// limits in seconds.
	MaxExpires, DefaultExpires, MinExpires int
	// TrustedSources are canonical IPv4 addresses (see
	// KamailioOptions.TrustedSources); OnBehalfHeader names the header.
	TrustedSources []string
	OnBehalfHeader string
}

// StartKamailio renders the PBX config into a temp dir, checks it with
// `kamailio -c`, starts Kamailio in the foreground (-DD -E) on random ports
// and waits until it answers OPTIONS over UDP and accepts TCP (and TLS)
// connections. It is stopped in t.Cleanup; its log is printed when the test
// failed.
func StartKamailio(t testing.TB, opts KamailioOptions) *Kamailio {
	t.Helper()
	Require(t, "kamailio", "kamcmd")
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	users := opts.Users
	if len(users) == 0 {
		users = DefaultUsers
	}
	opts.Users = make(map[string]string, len(users))
	for u, pw := range users {
		opts.Users[u] = pw
	}
	if opts.ListenIP == "" {
		opts.ListenIP = Loopback
	}
	checkLoopback(t, opts.ListenIP)
	if opts.Children <= 0 {
		opts.Children = 2
	}
	if opts.ShmMB <= 0 {
		opts.ShmMB = 64
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 15 * time.Second
	}
	challenge := "0"
	switch opts.QOP {
	case "":
	case "auth":
		challenge = "1"
	default:
		t.Fatalf("testpeers: kamailio: unsupported qop %q", opts.QOP)
	}
	maxExp, defExp, minExp := registrarExpires(t, opts.MaxExpires)
	trusted := trustedSources(t, opts.TrustedSources)

	dir := t.TempDir()
	k := &Kamailio{
		IP:        opts.ListenIP,
		Domain:    opts.Domain,
		Users:     opts.Users,
		Dir:       dir,
		LogFile:   filepath.Join(dir, "kamailio.log"),
		CtlSocket: "unix:" + filepath.Join(shortDir(t, "kam"), "ctl"),
	}
	dbDir := filepath.Join(dir, "db")
	if err := os.MkdirAll(dbDir, 0o755); err != nil {
		t.Fatalf("testpeers: %v", err)
	}
	writeFile(t, dbDir, "version", "table_name(string) table_version(int)\nhtable:2\n", 0o644)
	writeFile(t, dbDir, "users", usersTable(t, opts.Users), 0o644)
	cfg := kamailioConfig{
		IP:             opts.ListenIP,
		TLS:            opts.TLS,
		NoCallerAuth:   opts.NoCallerAuth,
		Quiet:          opts.Quiet,
		Domain:         opts.Domain,
		DBDir:          dbDir,
		CtlSocket:      k.CtlSocket,
		Secret:         randomHex(16),
		Children:       opts.Children,
		ChallengeFlags: challenge,
		AuthFlags:      "0",
		MaxExpires:     maxExp,
		DefaultExpires: defExp,
		MinExpires:     minExp,
		TrustedSources: trusted,
		OnBehalfHeader: OnBehalfHeader,
	}
	if opts.TLS {
		k.CertFile, k.KeyFile = SelfSignedCert(t, dir, opts.ListenIP, "localhost", opts.Domain)
		cfg.TLSConfig = writeFile(t, dir, "tls.cfg", fmt.Sprintf(`# TLS profiles of the sipwake test PBX
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = %s
private_key = %s

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
`, k.CertFile, k.KeyFile), 0o644)
	}
	var lastErr error
	for attempt := range 3 {
		cfg.UDPPort = FreePortOn(t, opts.ListenIP, "udp+tcp")
		cfg.TCPPort = cfg.UDPPort
		if opts.TLS {
			cfg.TLSPort = FreePortOn(t, opts.ListenIP, "tcp")
		}
		rendered, err := renderKamailioConfig(cfg)
		if err != nil {
			t.Fatalf("testpeers: render kamailio.cfg: %v", err)
		}
		cfgFile := writeFile(t, dir, "kamailio.cfg", rendered, 0o644)
		kam, err := binPath("kamailio")
		if err != nil {
			t.Fatalf("testpeers: %v", err)
		}
		if out, err := exec.Command(kam, "-c", "-f", cfgFile).CombinedOutput(); err != nil {
			t.Fatalf("testpeers: kamailio -c rejects %s: %v\n%s", cfgFile, err, lastLines(string(out), 30))
		}
		k.UDPAddr = net.JoinHostPort(opts.ListenIP, strconv.Itoa(cfg.UDPPort))
		k.TCPAddr = net.JoinHostPort(opts.ListenIP, strconv.Itoa(cfg.TCPPort))
		k.TLSAddr = ""
		if opts.TLS {
			k.TLSAddr = net.JoinHostPort(opts.ListenIP, strconv.Itoa(cfg.TLSPort))
		}
		lastErr = k.start(t, cfgFile, opts)
		if lastErr == nil {
			return k
		}
		t.Logf("testpeers: kamailio start attempt %d: %v", attempt+1, lastErr)
	}
	t.Fatalf("testpeers: kamailio did not start: %v\n--- %s (tail)\n%s", lastErr, k.LogFile, k.LogTail())
	return nil
}

// pbxTemplate is testdata/kamailio/pbx.cfg.tmpl, parsed once.
var pbxTemplate = template.Must(template.ParseFS(testdata, "testdata/kamailio/pbx.cfg.tmpl"))

// renderKamailioConfig renders the PBX config for cfg.
func renderKamailioConfig(cfg kamailioConfig) (string, error) {
	var b strings.Builder
	if err := pbxTemplate.Execute(&b, cfg); err != nil {
		return "", err
	}
	return b.String(), nil
}

// registrarExpires turns KamailioOptions.MaxExpires into the registrar's
// max_expires, default_expires and min_expires in seconds.
func registrarExpires(t testing.TB, max time.Duration) (maxExp, defExp, minExp int) {
	t.Helper()
	maxExp, defExp, minExp = 3600, 3600, 10
	if max == 0 {
		return
	}
	if max < time.Second || max%time.Second != 0 {
		t.Fatalf("testpeers: kamailio: MaxExpires %s is not a positive whole number of seconds", max)
	}
	maxExp = int(max / time.Second)
	defExp = min(defExp, maxExp)
	minExp = min(minExp, maxExp)
	return
}

// trustedSources checks KamailioOptions.TrustedSources (IPv4 loopback
// addresses) and returns them in canonical form, without duplicates.
func trustedSources(t testing.TB, addrs []string) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	for _, a := range addrs {
		checkLoopback(t, a)
		ip := net.ParseIP(a).To4().String()
		if !seen[ip] {
			seen[ip] = true
			out = append(out, ip)
		}
	}
	return out
}

func (k *Kamailio) start(t testing.TB, cfgFile string, opts KamailioOptions) error {
	t.Helper()
	args := []string{"-f", cfgFile, "-DD", "-E", "-Y", k.Dir, "-w", k.Dir,
		"-m", fmt.Sprint(opts.ShmMB), "-M", "8"}
	p, err := startProcess("kamailio", k.Dir, k.LogFile, "", nil, "kamailio", args...)
	if err != nil {
		return err
	}
	ready := poll(opts.StartTimeout, 100*time.Millisecond, func() bool {
		if p.exited() {
			return true
		}
		return k.probe(opts.TLS) == nil
	})
	if p.exited() {
		p.stop(time.Second)
		return fmt.Errorf("kamailio exited with status %d", p.exitCode())
	}
	if !ready {
		err := k.probe(opts.TLS)
		p.stop(5 * time.Second)
		return fmt.Errorf("kamailio not ready after %s: %v", opts.StartTimeout, err)
	}
	k.proc = p
	t.Cleanup(func() {
		k.Stop()
		if t.Failed() {
			t.Logf("--- kamailio log %s (tail)\n%s", k.LogFile, k.LogTail())
		}
	})
	return nil
}

// probe sends OPTIONS over UDP (expects 200) and opens a TCP (and TLS)
// connection.
func (k *Kamailio) probe(withTLS bool) error {
	if err := sipOptionsUDP(k.UDPAddr, time.Second); err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", k.TCPAddr, time.Second)
	if err != nil {
		return err
	}
	c.Close()
	if withTLS {
		d := &net.Dialer{Timeout: time.Second}
		tc, err := tls.DialWithDialer(d, "tcp", k.TLSAddr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return err
		}
		tc.Close()
	}
	return nil
}

// sipOptionsUDP sends one OPTIONS to addr over UDP and waits for a 200.
func sipOptionsUDP(addr string, timeout time.Duration) error {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	branch := "z9hG4bK" + randomHex(8)
	msg := "OPTIONS sip:" + addr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=" + branch + ";rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:probe@" + local + ">;tag=" + randomHex(4) + "\r\n" +
		"To: <sip:" + addr + ">\r\n" +
		"Call-ID: " + randomHex(12) + "@testpeers\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		"Content-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
		line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
		return fmt.Errorf("options answered %q", line)
	}
	return nil
}

// Stop stops Kamailio (SIGTERM to its process group, SIGKILL after 5 s).
// It is also called by t.Cleanup.
func (k *Kamailio) Stop() {
	if k.proc != nil {
		k.proc.stop(5 * time.Second)
	}
}

// PID returns the process id of Kamailio's main process.
func (k *Kamailio) PID() int { return k.proc.PID() }

// LogTail returns the last 80 lines of Kamailio's log.
func (k *Kamailio) LogTail() string { return tailFile(k.LogFile, 80) }

// RPC runs kamcmd against this instance's control socket, e.g.
// RPC(t, "ul.dump") or RPC(t, "ul.rm", "location", "s:1001") (kamcmd turns
// numeric-looking arguments into integers: prefix strings with "s:").
// It fails the test when kamcmd fails.
func (k *Kamailio) RPC(t testing.TB, cmd ...string) string {
	t.Helper()
	out, err := k.rpc(cmd...)
	if err != nil {
		t.Fatalf("testpeers: kamcmd %s: %v\n%s", strings.Join(cmd, " "), err, out)
	}
	return out
}

func (k *Kamailio) rpc(cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kamcmd, err := binPath("kamcmd")
	if err != nil {
		return "", err
	}
	args := append([]string{"-s", k.CtlSocket}, cmd...)
	out, err := exec.CommandContext(ctx, kamcmd, args...).CombinedOutput()
	return string(out), err
}

// Contact is one registered contact of an AoR, as reported by ul.dump.
type Contact struct {
	// URI is the Contact URI as registered (push parameters included).
	URI string
	// Received is the source the REGISTER came from, when Kamailio stored
	// one (TCP/TLS or NAT), e.g. "sip:127.0.0.1:40912;transport=tcp".
	Received string
	// Path is the Path header value stored with the contact, if any.
	Path string
	// Socket is the local socket that received the REGISTER, e.g.
	// "udp:127.0.0.1:5060".
	Socket string
	// Expires is the number of seconds left, as reported by ul.dump.
	Expires string
	// Instance is the +sip.instance value, if any.
	Instance string
	// UserAgent is the REGISTER's User-Agent.
	UserAgent string
}

// Contacts returns the contact URIs registered for user (the AoR's user
// part), parsed from ul.dump; each entry is the URI followed by
// " received=..." and " path=..." when Kamailio stored them. Use
// ContactDetails for the structured form.
func (k *Kamailio) Contacts(t testing.TB, user string) []string {
	t.Helper()
	var out []string
	for _, c := range k.ContactDetails(t, user) {
		s := c.URI
		if c.Received != "" {
			s += " received=" + c.Received
		}
		if c.Path != "" {
			s += " path=" + c.Path
		}
		out = append(out, s)
	}
	return out
}

// ContactDetails returns the contacts registered for user, parsed from
// ul.dump.
func (k *Kamailio) ContactDetails(t testing.TB, user string) []Contact {
	t.Helper()
	return parseULDump(k.RPC(t, "ul.dump"))[user]
}

// WaitContacts waits until user has exactly n contacts (bounded by
// timeout) and returns them; it fails the test on timeout.
func (k *Kamailio) WaitContacts(t testing.TB, user string, n int, timeout time.Duration) []Contact {
	t.Helper()
	var got []Contact
	ok := poll(timeout, 100*time.Millisecond, func() bool {
		out, err := k.rpc("ul.dump")
		if err != nil {
			return false
		}
		got = parseULDump(out)[user]
		return len(got) == n
	})
	if !ok {
		t.Fatalf("testpeers: %s has %d contact(s) after %s, want %d: %+v", user, len(got), timeout, n, got)
	}
	return got
}

// RemoveContacts drops every contact of user (ul.rm location s:USER); it
// ignores "AOR not found".
func (k *Kamailio) RemoveContacts(t testing.TB, users ...string) {
	t.Helper()
	for _, u := range users {
		if out, err := k.rpc("ul.rm", "location", "s:"+u); err != nil && !strings.Contains(out, "not found") {
			t.Fatalf("testpeers: kamcmd ul.rm location s:%s: %v\n%s", u, err, out)
		}
	}
}

// SetPassword sets user's password in the running Kamailio (htable.sets
// on the table "users"; a new user is added) and in k.Users. REGISTERs with
// the old password are refused from then on. It fails the test when the RPC
// fails. It must not run concurrently with readers of k.Users.
func (k *Kamailio) SetPassword(t testing.TB, user, password string) {
	t.Helper()
	if user == "" || password == "" || strings.ContainsAny(user+password, ":\\\r\n") {
		t.Fatalf("testpeers: kamailio user %q: names and passwords must be non-empty and free of ':', '\\' and line breaks", user)
	}
	// "s:" keeps kamcmd from sending numeric-looking values as integers.
	k.RPC(t, "htable.sets", "users", "s:"+user, "s:"+password)
	out := k.RPC(t, "htable.get", "users", "s:"+user)
	set := false
	for line := range strings.SplitSeq(out, "\n") {
		set = set || strings.TrimSpace(line) == "value: "+password
	}
	if !set {
		t.Fatalf("testpeers: kamailio: htable.get users %s after htable.sets = %q, want value %q", user, out, password)
	}
	k.Users[user] = password
}

// SavedRegister is one REGISTER Kamailio saved (registration, refresh or
// removal), as logged by the PBX config.
type SavedRegister struct {
	// Unix is the time it was saved, in Unix seconds.
	Unix int64
	// AOR is the To URI, e.g. "sip:1001@pbx.test".
	AOR string
	// CallID is the REGISTER's Call-ID.
	CallID string
	// Contact is the (first) Contact header value ("*" for a removal of
	// all contacts, "" when the REGISTER had none: a fetch).
	Contact string
	// Path is the Path header value, "" when there was none.
	Path string
}

// savedRegisterMark starts the log line the PBX config writes for every
// saved REGISTER (at NOTICE level, so also with Quiet).
const savedRegisterMark = "REGISTER saved ts="

// SavedRegisters reads Kamailio's log and returns every REGISTER it saved
// so far, oldest first. Counting them per Unix second gives the REGISTER
// rate the PBX sees. The line is written just after the reply is sent:
// poll briefly when a test needs the one it just got a 200 for.
func (k *Kamailio) SavedRegisters() ([]SavedRegister, error) {
	b, err := os.ReadFile(k.LogFile)
	if err != nil {
		return nil, err
	}
	return parseSavedRegisters(string(b)), nil
}

// parseSavedRegisters parses the "REGISTER saved ts=... ci=... aor=...
// path=... contact=..." lines of a Kamailio log; other lines and a last
// line still being written (no newline yet) are skipped.
func parseSavedRegisters(log string) []SavedRegister {
	var out []SavedRegister
	if i := strings.LastIndexByte(log, '\n'); i >= 0 {
		log = log[:i]
	} else {
		log = ""
	}
	for line := range strings.SplitSeq(log, "\n") {
		i := strings.Index(line, savedRegisterMark)
		if i < 0 {
			continue
		}
		rest := line[i+len("REGISTER saved "):]
		var sr SavedRegister
		ok := true
		for _, key := range []string{"ts=", "ci=", "aor="} {
			var field string
			field, rest, _ = strings.Cut(rest, " ")
			val, found := strings.CutPrefix(field, key)
			if !found {
				ok = false
				break
			}
			switch key {
			case "ts=":
				n, err := strconv.ParseInt(val, 10, 64)
				if err != nil {
					ok = false
				}
				sr.Unix = n
			case "ci=":
				sr.CallID = val
			case "aor=":
				sr.AOR = val
			}
		}
		// path may hold ", " between several Path values; the contact is
		// last and runs to the end of the line.
		path, contact, found := strings.Cut(rest, " contact=")
		path, hasPath := strings.CutPrefix(path, "path=")
		if !ok || !found || !hasPath {
			continue
		}
		sr.Path = xlogValue(path)
		sr.Contact = xlogValue(contact)
		out = append(out, sr)
	}
	return out
}

// xlogValue maps xlog's "<null>" (an absent header) to "".
func xlogValue(s string) string {
	if s == "<null>" {
		return ""
	}
	return s
}

// parseULDump parses kamcmd's text rendering of ul.dump into contacts per
// AoR user part (the text before '@' when the AoR has a domain).
func parseULDump(out string) map[string][]Contact {
	res := map[string][]Contact{}
	var aor string
	var cur *Contact
	flush := func() {
		if cur != nil && aor != "" {
			res[aor] = append(res[aor], *cur)
		}
		cur = nil
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "AoR":
			flush()
			aor, _, _ = strings.Cut(val, "@")
		case "Address":
			flush()
			cur = &Contact{URI: val}
		}
		if cur == nil {
			continue
		}
		switch key {
		case "Received":
			if val != "[not set]" {
				cur.Received = val
			}
		case "Path":
			if val != "[not set]" {
				cur.Path = val
			}
		case "Socket":
			cur.Socket = val
		case "Expires":
			cur.Expires = val
		case "Instance":
			if val != "[not set]" {
				cur.Instance = val
			}
		case "User-Agent":
			if val != "[not set]" {
				cur.UserAgent = val
			}
		}
	}
	flush()
	for u := range res {
		sort.SliceStable(res[u], func(i, j int) bool { return res[u][i].URI < res[u][j].URI })
	}
	return res
}

// usersTable renders the db_text table the htable "users" loads.
func usersTable(t testing.TB, users map[string]string) string {
	t.Helper()
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int)\n")
	for i, u := range names {
		pw := users[u]
		if u == "" || strings.ContainsAny(u+pw, ":\\\r\n") {
			t.Fatalf("testpeers: kamailio user %q: names and passwords must be non-empty and free of ':', '\\' and line breaks", u)
		}
		fmt.Fprintf(&b, "%d:%s:0:0:%s:0\n", i+1, u, pw)
	}
	return b.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
