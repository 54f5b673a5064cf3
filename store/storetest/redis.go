package storetest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Limits for StartRedis.
const (
	redisStartTimeout = 10 * time.Second
	redisStopTimeout  = 5 * time.Second
	redisStartTries   = 5
)

// RequirePeers reports whether tests must fail, rather than skip, when a
// real peer such as redis-server is not installed: when the environment
// variable CI is set, or SIPWAKE_REQUIRE_PEERS=1.
func RequirePeers() bool {
	return os.Getenv("CI") != "" || os.Getenv("SIPWAKE_REQUIRE_PEERS") == "1"
}

// StartRedis starts a throw-away redis-server (the binary from PATH) bound
// to 127.0.0.1 on a free port, without persistence, in a temporary
// directory, and returns its "127.0.0.1:port" address once it answers
// PING. The server is stopped (SIGTERM, then SIGKILL after a deadline) when
// the test ends. extra arguments are appended to the command line, e.g.
// "--cluster-enabled", "yes".
//
// Without redis-server in PATH the test is skipped, or fails when
// RequirePeers says peers are mandatory.
func StartRedis(t testing.TB, extra ...string) (addr string) {
	t.Helper()
	return StartRedisServer(t, extra...).Addr
}

// RedisServer is a redis-server started by StartRedisServer. A test can
// kill it (SIGKILL) and start it again with the same command line: the
// same port and data directory, so that with persistence on (extra
// "--appendonly", "yes") it comes back with what it had written.
type RedisServer struct {
	// Addr is "127.0.0.1:port"; Dir is the temporary directory passed as
	// --dir (extra arguments may name another one).
	Addr, Dir string

	bin  string
	args []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	out     *syncBuffer
	stopped bool // the test ended: no restart
}

// StartRedisServer is StartRedis returning the server, for tests that kill
// and restart it.
func StartRedisServer(t testing.TB, extra ...string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if RequirePeers() {
			t.Fatalf("redis-server not found in PATH (required because CI or SIPWAKE_REQUIRE_PEERS=1 is set): install the Debian package redis-server")
		}
		t.Skip("redis-server not found in PATH: install the Debian package redis-server (apt-get install redis-server) to run this test")
	}
	dir := t.TempDir()
	var lastErr error
	for range redisStartTries {
		port, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		r := &RedisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, bin: bin}
		r.args = append([]string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--protected-mode", "yes",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
			"--daemonize", "no",
			"--logfile", "",
		}, extra...)
		err = r.start()
		if err == nil {
			t.Cleanup(func() {
				r.mu.Lock()
				r.stopped = true
				r.mu.Unlock()
				r.stop()
			})
			return r
		}
		if errors.Is(err, errRedisHung) {
			t.Fatal(err)
		}
		lastErr = err // most likely the port was taken meanwhile: retry
	}
	t.Fatalf("redis-server did not start after %d tries: %v", redisStartTries, lastErr)
	return nil
}

var errRedisHung = errors.New("redis-server did not answer")

// start runs the server's command line once and waits until it answers
// PING with its own process id. It returns an error when the server
// exited (the port was taken) or errRedisHung.
func (r *RedisServer) start() error {
	cmd := exec.Command(r.bin, r.args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	r.mu.Lock()
	r.cmd, r.exited, r.out = cmd, exited, out
	r.mu.Unlock()
	deadline := time.Now().Add(redisStartTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited: %s", r.Addr, tail(out.String()))
		default:
		}
		pid, err := RedisPID(r.Addr)
		if err == nil && pid == cmd.Process.Pid {
			return nil
		}
		if err == nil {
			// Another redis answers on this port: ours will fail to bind.
			r.stop()
			return fmt.Errorf("port %s answered by another redis-server (pid %d)", r.Addr, pid)
		}
		if time.Now().After(deadline) {
			r.stop()
			return fmt.Errorf("%w on %s within %s: %v; output: %s", errRedisHung, r.Addr, redisStartTimeout, err, tail(out.String()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the running process, if any: SIGTERM, then SIGKILL after a
// deadline.
func (r *RedisServer) stop() {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(redisStopTimeout):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// PID is the process id of the server now running (0 when none runs).
func (r *RedisServer) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0
	}
	select {
	case <-r.exited:
		return 0
	default:
		return r.cmd.Process.Pid
	}
}

// Kill sends SIGKILL to the server (by its process id) and waits until
// the process has exited: nothing it had not written to disk survives.
func (r *RedisServer) Kill(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill redis-server %d: %v", cmd.Process.Pid, err)
	}
	select {
	case <-exited:
	case <-time.After(redisStopTimeout):
		t.Fatalf("redis-server %d did not exit after SIGKILL", cmd.Process.Pid)
	}
}

// Restart starts the server again with the same command line (port, data
// directory, persistence) after Kill, and returns once it answers PING.
// The test fails when it cannot (the port was taken meanwhile, or the
// server does not come up).
func (r *RedisServer) Restart(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	stopped, exited := r.stopped, r.exited
	r.mu.Unlock()
	if stopped {
		t.Fatalf("redis-server %s: restart after the test ended", r.Addr)
	}
	select {
	case <-exited:
	default:
		t.Fatalf("redis-server %s: restart while it runs (Kill it first)", r.Addr)
	}
	if err := r.start(); err != nil {
		t.Fatalf("restart redis-server on %s: %v", r.Addr, err)
	}
}

// Output is what the running (or last) server process printed.
func (r *RedisServer) Output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.out == nil {
		return ""
	}
	return r.out.String()
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RedisPID sends PING and INFO server over plain RESP to the redis-server
// at addr and returns its process id.
func RedisPID(addr string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(c)
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return 0, err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return 0, fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	if _, err := c.Write([]byte("INFO server\r\n")); err != nil {
		return 0, err
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, "$") {
		return 0, fmt.Errorf("INFO answered %q", strings.TrimSpace(line))
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("INFO answered %q", strings.TrimSpace(line))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO server has no process_id")
}

// tail returns the end of a process's output for error messages.
func tail(s string) string {
	const max = 2000
	s = strings.TrimSpace(s)
	if len(s) > max {
		s = "…" + s[len(s)-max:]
	}
	return s
}

// syncBuffer is a bytes.Buffer safe for a process writing while a test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
