package testpeers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SIPpOptions configures one SIPp run.
type SIPpOptions struct {
	// Scenario is the name of an embedded scenario ("register.xml", see
	// Scenarios) or a path to a scenario file.
	Scenario string
	// OOCScenario is the out-of-call scenario (-oocsf), named like
	// Scenario; register_wait.xml needs "ooc_answer.xml".
	OOCScenario string
	// Remote is the "host:port" requests are sent to; empty for a pure UAS.
	Remote string
	// Transport is "u1" (UDP, default) or "t1" (TCP, one connection).
	// Debian's SIPp has no TLS.
	Transport string
	// LocalPort is the local SIP port (-p); 0 picks a random free one
	// (free for UDP and TCP) and retries on a bind collision.
	LocalPort int
	// Keys are the scenario's -key NAME VALUE pairs. SIPp refuses to run
	// when a key the scenario uses is missing.
	Keys map[string]string
	// Auth holds the digest user and password (-au, -ap).
	Auth [2]string
	// Calls is the number of calls (-m, default 1).
	Calls int
	// Pause is the scenario's default pause (-d): the ringing time of the
	// UAS scenarios, the hold time of uac_call.xml, the wait before the
	// CANCEL of uac_cancel.xml.
	Pause time.Duration
	// Timeout bounds the whole run (-timeout with -timeout_error; default
	// 20s, never beyond the context's deadline): reaching it is a failure.
	Timeout time.Duration
	// Extra holds more SIPp arguments, e.g. "-r", "100", "-buff_size",
	// "4194304".
	Extra []string
}

// SIPpResult is the outcome of a finished SIPp run.
type SIPpResult struct {
	// ExitCode is SIPp's exit status: 0 = every call succeeded, 1 = at
	// least one failed, 97/99 = stopped early, 255 = fatal error or
	// timeout; -1 when it was killed.
	ExitCode int
	// Stdout and Stderr are SIPp's outputs (stdout holds the final screen).
	Stdout, Stderr string
	// Messages is the -trace_msg file: every message sent and received.
	Messages string
	// Errors is the -trace_err file (unexpected messages, timeouts).
	Errors string
	// Log is the -trace_logs file, written by the scenarios' <log> actions.
	Log string
	// LocalPort is the SIP port SIPp used.
	LocalPort int
}

// SIPp is a SIPp process started by StartSIPp.
type SIPp struct {
	// LocalPort is the local SIP port; LocalAddr is "127.0.0.1:LocalPort".
	LocalPort int
	LocalAddr string
	// Dir is the run directory (scenario copies, traces).
	Dir string

	name    string
	ctx     context.Context
	proc    *process
	stdout  string
	stderr  string
	msgFile string
	errFile string
	logFile string
}

// Scenarios lists the embedded SIPp scenarios.
func Scenarios() []string {
	entries, _ := fs.ReadDir(testdata, "testdata/sipp")
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".xml") {
			names = append(names, e.Name())
		}
	}
	return names
}

// RegisterKeys returns the keys of register.xml and register_wait.xml for
// user me at domain with Contact transport ctransport ("udp" or "tcp"),
// Expires 3600 and RFC 8599 parameters pn-provider=apns,
// pn-prid=tok-<me>, pn-param=TEAM123456.com.example.phone.voip; change
// entries as needed (expires, pn_provider, pn_prid, pn_param, cparams,
// hparams).
func RegisterKeys(me, domain, ctransport string) map[string]string {
	return map[string]string{
		"me":          me,
		"domain":      domain,
		"expires":     "3600",
		"ctransport":  ctransport,
		"pn_provider": "apns",
		"pn_prid":     "tok-" + me,
		"pn_param":    "TEAM123456.com.example.phone.voip",
		"cparams":     "",
		"hparams":     "",
	}
}

// PlainRegisterKeys returns the keys of register_plain.xml: no push
// parameters unless cparams is set.
func PlainRegisterKeys(me, domain, ctransport string) map[string]string {
	return map[string]string{
		"me":         me,
		"domain":     domain,
		"expires":    "3600",
		"ctransport": ctransport,
		"cparams":    "",
		"hparams":    "",
	}
}

// UnregisterKeys returns the keys of unregister.xml; contact is the
// Contact header value to remove (as registered) or "*".
func UnregisterKeys(me, domain, contact string) map[string]string {
	return map[string]string{"me": me, "domain": domain, "contact": contact}
}

// CallKeys returns the keys of uac_call.xml, uac_cancel.xml and (with
// text) message.xml.
func CallKeys(me, peer, domain string) map[string]string {
	return map[string]string{"me": me, "peer": peer, "domain": domain}
}

// RunSIPp runs SIPp to the end and returns its result. err is non-nil when
// SIPp could not start, exited with a non-zero status, or ctx ended first
// (SIPp is then stopped); the result is filled in every case it can be.
func RunSIPp(t testing.TB, ctx context.Context, opts SIPpOptions) (SIPpResult, error) {
	t.Helper()
	s, err := StartSIPp(t, ctx, opts)
	if err != nil {
		return SIPpResult{}, err
	}
	return s.Wait()
}

// StartSIPp starts SIPp in the background and returns once its SIP socket
// is bound (a UAS is then ready to receive). SIPp is stopped in t.Cleanup
// if still running; Wait collects the result.
func StartSIPp(t testing.TB, ctx context.Context, opts SIPpOptions) (*SIPp, error) {
	t.Helper()
	Require(t, "sipp")
	if opts.Scenario == "" {
		return nil, errors.New("sipp: no scenario")
	}
	if opts.Remote != "" {
		if err := loopbackAddr(opts.Remote); err != nil {
			return nil, fmt.Errorf("sipp: %w", err)
		}
	}
	if opts.Transport == "" {
		opts.Transport = "u1"
	}
	if opts.Transport != "u1" && opts.Transport != "t1" {
		return nil, fmt.Errorf("sipp: unsupported transport %q (u1 or t1)", opts.Transport)
	}
	if opts.Calls <= 0 {
		opts.Calls = 1
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	opts.Timeout = deadlineFrom(ctx, opts.Timeout)
	if opts.Timeout <= 0 {
		return nil, fmt.Errorf("sipp: %w", context.DeadlineExceeded)
	}
	dir := t.TempDir()
	scen, err := scenarioFile(dir, opts.Scenario)
	if err != nil {
		return nil, err
	}
	var ooc string
	if opts.OOCScenario != "" {
		if ooc, err = scenarioFile(dir, opts.OOCScenario); err != nil {
			return nil, err
		}
	}

	var lastErr error
	for attempt := range 3 {
		port := opts.LocalPort
		if port == 0 {
			port = FreePort(t, "udp+tcp")
		}
		s := &SIPp{
			LocalPort: port,
			LocalAddr: hostPort(port),
			Dir:       dir,
			name:      strings.TrimSuffix(filepath.Base(opts.Scenario), ".xml"),
			ctx:       ctx,
			stdout:    filepath.Join(dir, fmt.Sprintf("stdout-%d.txt", attempt)),
			stderr:    filepath.Join(dir, fmt.Sprintf("stderr-%d.txt", attempt)),
			msgFile:   filepath.Join(dir, fmt.Sprintf("messages-%d.log", attempt)),
			errFile:   filepath.Join(dir, fmt.Sprintf("errors-%d.log", attempt)),
			logFile:   filepath.Join(dir, fmt.Sprintf("log-%d.log", attempt)),
		}
		args := s.args(t, opts, scen, ooc)
		p, err := startProcess("sipp", dir, s.stdout, s.stderr, nil, "sipp", args...)
		if err != nil {
			return nil, err
		}
		s.proc = p
		t.Cleanup(func() { p.stop(3 * time.Second) })

		network := "udp"
		if opts.Transport == "t1" {
			network = "tcp"
		}
		poll(5*time.Second, 20*time.Millisecond, func() bool {
			return p.exited() || listening(Loopback, network, port)
		})
		if p.exited() && p.exitCode() != 0 && opts.LocalPort == 0 && bindFailed(s) {
			lastErr = fmt.Errorf("sipp: bind collision on port %d", port)
			continue
		}
		return s, nil
	}
	return nil, lastErr
}

func (s *SIPp) args(t testing.TB, opts SIPpOptions, scen, ooc string) []string {
	t.Helper()
	var args []string
	if opts.Remote != "" {
		args = append(args, opts.Remote)
	}
	media := FreePortRange(t, 3) // SIPp binds the media port and media port + 2
	args = append(args,
		"-sf", scen,
		"-t", opts.Transport,
		"-i", Loopback,
		"-p", strconv.Itoa(s.LocalPort),
		"-mi", Loopback,
		"-mp", strconv.Itoa(media),
		"-cp", strconv.Itoa(FreePort(t, "udp")),
		"-m", strconv.Itoa(opts.Calls),
		"-nostdin",
		"-timeout", fmt.Sprintf("%ds", int(math.Ceil(opts.Timeout.Seconds()))),
		"-timeout_error",
		"-trace_msg", "-message_file", s.msgFile,
		"-trace_err", "-error_file", s.errFile,
		"-trace_logs", "-log_file", s.logFile,
	)
	if ooc != "" {
		args = append(args, "-oocsf", ooc)
	}
	if opts.Auth[0] != "" {
		args = append(args, "-au", opts.Auth[0], "-ap", opts.Auth[1])
	}
	if opts.Pause > 0 {
		args = append(args, "-d", strconv.FormatInt(opts.Pause.Milliseconds(), 10))
	}
	keys := make([]string, 0, len(opts.Keys))
	for k := range opts.Keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-key", k, opts.Keys[k])
	}
	return append(args, opts.Extra...)
}

// scenarioFile returns the path of a scenario: an existing file, or an
// embedded one copied into dir.
func scenarioFile(dir, name string) (string, error) {
	if strings.ContainsRune(name, os.PathSeparator) {
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("sipp: scenario: %w", err)
		}
		return name, nil
	}
	b, err := testdata.ReadFile("testdata/sipp/" + name)
	if err != nil {
		return "", fmt.Errorf("sipp: no embedded scenario %q (have %s)", name, strings.Join(Scenarios(), ", "))
	}
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, b, 0o644)
}

func bindFailed(s *SIPp) bool {
	b, _ := os.ReadFile(s.stderr)
	o, _ := os.ReadFile(s.stdout)
	all := strings.ToLower(string(b) + string(o))
	return strings.Contains(all, "bind") || strings.Contains(all, "address already in use")
}

// Wait waits for SIPp to end (stopping it when the context given to
// StartSIPp ends first) and returns its result; err is non-nil unless SIPp
// exited with status 0.
func (s *SIPp) Wait() (SIPpResult, error) {
	waitErr := s.proc.wait(s.ctx)
	if waitErr != nil {
		s.proc.stop(3 * time.Second)
	}
	res := s.result()
	switch {
	case waitErr != nil:
		return res, fmt.Errorf("sipp %s: %w", s.name, waitErr)
	case res.ExitCode != 0:
		detail := lastLines(strings.TrimSpace(res.Errors+"\n"+res.Stderr), 12)
		return res, fmt.Errorf("sipp %s: exit status %d: %s", s.name, res.ExitCode, detail)
	}
	return res, nil
}

// Stop ends SIPp (SIGTERM, SIGKILL after 3 s) and returns what it
// produced.
func (s *SIPp) Stop() SIPpResult {
	s.proc.stop(3 * time.Second)
	return s.result()
}

// Done is closed when SIPp has exited.
func (s *SIPp) Done() <-chan struct{} { return s.proc.done }

// Messages returns the message trace written so far.
func (s *SIPp) Messages() string {
	b, _ := os.ReadFile(s.msgFile)
	return string(b)
}

// WaitMessage waits until the message trace contains substr (for example
// "SIP/2.0 200 OK" after a REGISTER, or "INVITE sip:") and fails with an
// error after timeout or when SIPp exits without it.
func (s *SIPp) WaitMessage(substr string, timeout time.Duration) error {
	found := poll(timeout, 50*time.Millisecond, func() bool {
		return strings.Contains(s.Messages(), substr) || s.proc.exited()
	})
	if found && strings.Contains(s.Messages(), substr) {
		return nil
	}
	if s.proc.exited() {
		return fmt.Errorf("sipp %s exited (status %d) before %q was seen", s.name, s.proc.exitCode(), substr)
	}
	return fmt.Errorf("sipp %s: %q not seen within %s", s.name, substr, timeout)
}

// LogContains reports whether the scenario's log (<log> actions) contains
// substr so far.
func (s *SIPp) LogContains(substr string) bool {
	b, _ := os.ReadFile(s.logFile)
	return strings.Contains(string(b), substr)
}

func (s *SIPp) result() SIPpResult {
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return string(b)
	}
	return SIPpResult{
		ExitCode:  s.proc.exitCode(),
		Stdout:    read(s.stdout),
		Stderr:    read(s.stderr),
		Messages:  read(s.msgFile),
		Errors:    read(s.errFile),
		Log:       read(s.logFile),
		LocalPort: s.LocalPort,
	}
}
