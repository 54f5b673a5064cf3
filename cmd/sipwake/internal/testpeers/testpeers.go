package testpeers

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Loopback is the only address the peers listen on and send to.
const Loopback = "127.0.0.1"

// debianPackage names the Debian package that ships each peer binary.
var debianPackage = map[string]string{
	"kamailio":        "kamailio",
	"kamcmd":          "kamailio",
	"sipp":            "sip-tester",
	"baresip":         "baresip",
	"linphone-daemon": "linphone-cli",
	"linphonec":       "linphone-cli",
	"redis-server":    "redis-server",
	"redis-cli":       "redis-tools",
	"openssl":         "openssl",
	"nc":              "netcat-openbsd",
}

// PeersRequired reports whether a missing peer binary fails the test
// instead of skipping it: when the environment variable CI is non-empty or
// SIPWAKE_REQUIRE_PEERS=1.
func PeersRequired() bool {
	return os.Getenv("CI") != "" || os.Getenv("SIPWAKE_REQUIRE_PEERS") == "1"
}

// Require checks that every named binary is on PATH. When one is missing the
// test is skipped with the Debian package to install, or fails when
// PeersRequired reports true (CI must fail, never skip).
func Require(t testing.TB, bins ...string) {
	t.Helper()
	var missing, pkgs []string
	for _, b := range bins {
		if _, err := binPath(b); err == nil {
			continue
		}
		missing = append(missing, b)
		pkg := debianPackage[b]
		if pkg == "" {
			pkg = b
		}
		pkgs = append(pkgs, pkg)
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("test peer(s) %s not found on PATH or in /usr/sbin; install with: apt-get install %s",
		strings.Join(missing, ", "), strings.Join(pkgs, " "))
	if PeersRequired() {
		t.Fatalf("%s (CI or SIPWAKE_REQUIRE_PEERS=1 is set: missing peers fail the test)", msg)
	}
	t.Skip(msg)
}

// sbinDirs are searched after PATH: Debian installs kamailio and kamcmd in
// /usr/sbin, which is not on an ordinary user's PATH.
var sbinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/sbin"}

// binPath finds a peer binary on PATH or in the sbin directories.
func binPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, bin)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in %s", bin, strings.Join(sbinDirs, ", "))
}

var (
	portsMu sync.Mutex
	// portsGiven remembers the ports handed out by this process so that two
	// peers started one after the other never get the same one before either
	// has bound it.
	portsGiven = map[int]bool{}
)

// FreePort returns a port on 127.0.0.1 that is free right now. network is
// "udp", "tcp" or "udp+tcp" (free for both, as SIP listeners usually need).
// The port is found by binding port 0 and is never handed out twice by this
// process; another process may still take it before the peer binds it, so
// starters retry with a new port when a bind fails.
func FreePort(t testing.TB, network string) int {
	t.Helper()
	return FreePortOn(t, Loopback, network)
}

// FreePortOn is FreePort for another loopback address, such as 127.0.0.2.
func FreePortOn(t testing.TB, ip, network string) int {
	t.Helper()
	p, err := freePort(ip, network, 1)
	if err != nil {
		t.Fatalf("testpeers: free %s port: %v", network, err)
	}
	return p
}

// FreePortRange returns the first of n consecutive ports that are free for
// both UDP and TCP (baresip, for example, opens TLS on its SIP port + 1).
func FreePortRange(t testing.TB, n int) int {
	t.Helper()
	p, err := freePort(Loopback, "udp+tcp", n)
	if err != nil {
		t.Fatalf("testpeers: free port range of %d: %v", n, err)
	}
	return p
}

func freePort(ip, network string, n int) (int, error) {
	needUDP := network == "udp" || network == "udp+tcp"
	needTCP := network == "tcp" || network == "udp+tcp"
	if !needUDP && !needTCP {
		return 0, fmt.Errorf("unknown network %q", network)
	}
	first := "tcp"
	if needUDP {
		first = "udp"
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	var lastErr error
	for range 100 {
		base, err := probe(ip, first, 0)
		if err != nil {
			lastErr = err
			continue
		}
		ok := base+n-1 <= 65535
		for i := 0; ok && i < n; i++ {
			p := base + i
			switch {
			case portsGiven[p]:
				ok, lastErr = false, fmt.Errorf("port %d already handed out", p)
			case needUDP && (i > 0 || first != "udp"):
				_, lastErr = probe(ip, "udp", p)
				ok = lastErr == nil
			}
			if ok && needTCP && (i > 0 || first != "tcp") {
				_, lastErr = probe(ip, "tcp", p)
				ok = lastErr == nil
			}
		}
		if !ok {
			continue
		}
		for i := range n {
			portsGiven[base+i] = true
		}
		return base, nil
	}
	return 0, fmt.Errorf("no free port after 100 attempts: %w", lastErr)
}

// probe binds ip:port on network ("udp" or "tcp") and returns the bound
// port.
func probe(ip, network string, port int) (int, error) {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return 0, err
		}
		p := c.LocalAddr().(*net.UDPAddr).Port
		return p, c.Close()
	case "tcp":
		l, err := net.Listen("tcp4", addr)
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		return p, l.Close()
	default:
		return 0, fmt.Errorf("unknown network %q", network)
	}
}

// hostPort formats 127.0.0.1:port.
func hostPort(port int) string { return net.JoinHostPort(Loopback, strconv.Itoa(port)) }

// loopbackAddr checks that addr is "host:port" with an IPv4 loopback host:
// the peers send to nothing else.
func loopbackAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if _, err := strconv.Atoi(port); err != nil {
		return fmt.Errorf("address %q: bad port", addr)
	}
	if a := net.ParseIP(host); a == nil || a.To4() == nil || !a.IsLoopback() {
		return fmt.Errorf("address %q: test peers only talk to IPv4 loopback addresses", addr)
	}
	return nil
}

// checkLoopback fails the test unless ip is an IPv4 loopback address: the
// peers never listen on or send to anything else.
func checkLoopback(t testing.TB, ip string) {
	t.Helper()
	if a := net.ParseIP(ip); a == nil || a.To4() == nil || !a.IsLoopback() {
		t.Fatalf("testpeers: %q is not an IPv4 loopback address", ip)
	}
}

// process is one peer child process, started in its own process group so
// that Stop reaches the workers it forks (Kamailio) too.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	stopMu  sync.Mutex
}

// startProcess starts bin with args in dir; stdout and stderr go to logPath
// (stderr to errPath when not empty). The caller registers the stop.
func startProcess(name, dir, logPath, errPath string, env []string, bin string, args ...string) (*process, error) {
	path, err := binPath(bin)
	if err != nil {
		return nil, err
	}
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	errOut := out
	if errPath != "" {
		if errOut, err = os.Create(errPath); err != nil {
			out.Close()
			return nil, err
		}
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdin = nil
	cmd.Stdout = out
	cmd.Stderr = errOut
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = sysProcAttr(name)
	if err := cmd.Start(); err != nil {
		out.Close()
		if errOut != out {
			errOut.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		out.Close()
		if errOut != out {
			errOut.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// PID returns the process id.
func (p *process) PID() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode returns the exit status once the process ended (-1 when killed by
// a signal or still running).
func (p *process) exitCode() int {
	if !p.exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// wait waits for the process to end or ctx to be done.
func (p *process) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop sends SIGTERM to the process group, SIGKILL after grace, and reaps
// the process. It is safe to call more than once.
func (p *process) stop(grace time.Duration) {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	pid := p.cmd.Process.Pid
	if !p.exited() {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// The leader may be gone while forked workers of its group linger.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// signal sends sig to the process itself (not its group).
func (p *process) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// tailFile returns the last n lines of a file ("" when unreadable).
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// poll calls fn every interval until it returns true or the timeout passes.
func poll(timeout, interval time.Duration, fn func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if fn() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// listening reports whether something listens on ip:port (TCP) or has
// bound it (UDP), read from /proc/net without touching the port.
func listening(ip, network string, port int) bool {
	file := "/proc/net/udp"
	state := "07" // UNCONN
	if network == "tcp" {
		file, state = "/proc/net/tcp", "0A" // LISTEN
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	a := net.ParseIP(ip).To4()
	if a == nil {
		return false
	}
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], port)
	any := fmt.Sprintf("00000000:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if (f[1] == want || f[1] == any) && f[3] == state {
			return true
		}
	}
	return false
}

// shortDir makes a directory with a short path for unix sockets (their path
// is limited to 107 bytes, and t.TempDir paths grow with the test name).
func shortDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("testpeers: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// writeFile writes a file in dir and fails the test on error.
func writeFile(t testing.TB, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatalf("testpeers: %v", err)
	}
	return p
}

// deadlineFrom returns the time left before ctx's deadline, capped at max
// (max when ctx has no deadline).
func deadlineFrom(ctx context.Context, max time.Duration) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if left := time.Until(d); left < max {
			return left
		}
	}
	return max
}
