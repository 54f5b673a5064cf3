package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/push/pushtest"
	"github.com/sipwake/sipwake/registrar"
)

// cliDaemon is a daemon started through `sipwake serve -c FILE`, run by the
// cobra root command in-process, and the CLI config that reaches its admin
// API.
type cliDaemon struct {
	*wakeEnv
	serveCfg string // the file serve was started with
	cliCfg   string // admin.listen (the bound address) and admin.token_file
	secrets  []string
	// seen records, per command path, the output forms run (table, json).
	seen map[string]map[string]bool
	// stop stops the daemon as SIGTERM would and checks that serve exits 0.
	stop func(t *testing.T)
}

// startCLIDaemon starts Kamailio, the fake APNs and FCM, and sipwake
// through the CLI's serve command with a config file rendered from the
// same settings startWakeEnv uses, plus an admin token and a credentials
// key. The serve command must exit 0 when the daemon is stopped.
func startCLIDaemon(t *testing.T) *cliDaemon {
	t.Helper()
	ca := pushtest.NewCA(t)
	e := &wakeEnv{kam: startPBX(t, testpeers.KamailioOptions{}), apns: pushtest.NewAPNs(t, ca), fcm: pushtest.NewFCM(t, ca)}
	dir := t.TempDir()
	cfg := e2eConfig(t, e.kam, dir)
	cfg.Push.CAFile = ca.WriteFile(t)
	cfg.Push.APNs.KeyFile = e.apns.WriteKey(t)
	cfg.Push.APNs.KeyID, cfg.Push.APNs.TeamID = e.apns.KeyID, e.apns.TeamID
	cfg.Push.APNs.URL, cfg.Push.APNs.SandboxURL = e.apns.URL, e.apns.URL
	cfg.Push.FCM.Projects = []FCMProject{{ProjectID: fcmProject, CredentialsFile: e.fcm.WriteServiceAccount(t, fcmProject)}}
	cfg.Push.FCM.Endpoint = e.fcm.Endpoint
	cfg.Wake.InviteHoldTimeout = testHold
	const adminTok = "cli-e2e-admin-token-5f0c1d"
	cfg.Admin.TokenFile = filepath.Join(dir, "admin.token")
	if err := os.WriteFile(cfg.Admin.TokenFile, []byte(adminTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Registrar.Credentials.KeyFile = filepath.Join(dir, "credentials.key")
	if err := os.WriteFile(cfg.Registrar.Credentials.KeyFile, []byte(strings.Repeat("7e", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &cliDaemon{wakeEnv: e, seen: map[string]map[string]bool{},
		serveCfg: filepath.Join(dir, "sipwake.yaml"), secrets: []string{iosToken, iosRemoteToken, androidToken, adminTok, "pw1001", "pw1003"}}
	if err := os.WriteFile(d.serveCfg, renderConfigYAML(cfg, "# cli e2e\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// validate, on the file serve is about to read.
	code, out, errOut := d.cli(t, "validate", "-c", d.serveCfg)
	if code != exitOK || out != "config ok\n" {
		t.Fatalf("validate = %d %q %q", code, out, errOut)
	}
	code, out, _ = d.cli(t, "-o", "json", "validate", "-c", d.serveCfg)
	var vr validateResult
	if err := json.Unmarshal([]byte(out), &vr); err != nil || code != exitOK || !vr.OK || vr.Problems == nil || len(vr.Problems) != 0 {
		t.Fatalf("validate -o json = %d %q (%v)", code, out, err)
	}

	logs := &syncBuffer{}
	started := make(chan *daemon, 1)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), serveHookKey{}, func(dm *daemon) { started <- dm }))
	done := make(chan int, 1)
	var serveErr bytes.Buffer
	d.record(t, "serve")
	go func() { done <- run(ctx, []string{"serve", "-c", d.serveCfg}, noEnv, logs, &serveErr) }()
	sw := &running{cfg: cfg, logs: logs, cancel: cancel}
	select {
	case dm := <-started:
		sw.daemon = dm
	case code := <-done:
		cancel()
		t.Fatalf("sipwake serve exited %d: %s\n%s", code, serveErr.String(), logs.String())
	case <-time.After(15 * time.Second):
		cancel()
		t.Fatalf("sipwake serve did not start in time\n%s", logs.String())
	}
	sw.UDP, sw.TCP, sw.TLS = sw.srv.Addr("udp"), sw.srv.Addr("tcp"), sw.srv.Addr("tls")
	e.sw = sw
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
		if t.Failed() {
			t.Logf("sipwake log (last 60 lines):\n%s", tail(logs.String(), 60))
		}
	})
	d.stop = func(t *testing.T) {
		stopped = true
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("sipwake serve exited %d after the stop: %s", code, serveErr.String())
			}
		case <-time.After(20 * time.Second):
			t.Errorf("sipwake serve did not exit after the stop")
		}
	}
	d.cliCfg = writeFile(t, "cli.yaml", "admin: {listen: \""+sw.admin.Addr().String()+"\", token_file: \""+cfg.Admin.TokenFile+"\"}\n")
	return d
}

// Stop stops the daemon as SIGTERM would; serve must then exit 0.
func (d *cliDaemon) Stop(t *testing.T) { d.stop(t) }

// cliCommandPath names the command args run, as cobra resolves it.
func cliCommandPath(args []string) string {
	cmd, _, err := newRootCmd(noEnv, io.Discard, io.Discard).Find(args)
	if err != nil || cmd == nil {
		return ""
	}
	return strings.TrimPrefix(cmd.CommandPath(), "sipwake ")
}

func (d *cliDaemon) record(t *testing.T, path string, args ...string) {
	form := "table"
	for i, a := range args {
		if (a == "-o" || a == "--output") && i+1 < len(args) {
			form = args[i+1]
		}
	}
	if d.seen[path] == nil {
		d.seen[path] = map[string]bool{}
	}
	d.seen[path][form] = true
}

// cli runs the sipwake command line in-process (as main does) and checks
// that no secret reaches its output.
func (d *cliDaemon) cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	d.record(t, cliCommandPath(args), args...)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, noEnv, &stdout, &stderr)
	assertNoneOf(t, strings.Join(args, " "), stdout.String()+stderr.String(), d.secrets...)
	return code, stdout.String(), stderr.String()
}

// admin runs a command against the daemon's admin API (-c the CLI config).
func (d *cliDaemon) admin(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return d.cli(t, append([]string{"-c", d.cliCfg}, args...)...)
}

// ok runs an admin command that must succeed with nothing on stderr.
func (d *cliDaemon) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := d.admin(t, args...)
	if code != exitOK || errOut != "" {
		t.Fatalf("sipwake %s = %d, stderr %q, stdout:\n%s", strings.Join(args, " "), code, errOut, out)
	}
	return out
}

// okJSON runs an admin command with -o json and decodes its output
// strictly into out (and also into a generic map, returned, to check
// keys the type does not name).
func (d *cliDaemon) okJSON(t *testing.T, out any, args ...string) map[string]any {
	t.Helper()
	raw := d.ok(t, append([]string{"-o", "json"}, args...)...)
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		t.Fatalf("sipwake -o json %s: %v\n%s", strings.Join(args, " "), err, raw)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("sipwake -o json %s: %v", strings.Join(args, " "), err)
	}
	return m
}

// tableRows splits a table into its header cells and its rows' cells
// (columns are separated by two or more spaces).
func tableRows(t *testing.T, out string, header ...string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || strings.Join(strings.Fields(lines[0]), " ") != strings.Join(header, " ") {
		t.Fatalf("table header %q, want %q:\n%s", lines[0], strings.Join(header, " "), out)
	}
	var rows [][]string
	for _, l := range lines[1:] {
		cells := splitCells(l)
		if len(cells) != len(header) {
			t.Fatalf("row %q has %d cells, want %d (%v):\n%s", l, len(cells), len(header), header, out)
		}
		rows = append(rows, cells)
	}
	return rows
}

// splitCells splits a tabwriter line on runs of two or more spaces.
func splitCells(l string) []string {
	var cells []string
	for _, c := range strings.Split(l, "  ") {
		if c = strings.TrimSpace(c); c != "" {
			cells = append(cells, c)
		}
	}
	return cells
}

// runnableCommands lists the commands of the CLI tree that do something
// (help, completion and groups that only show their help aside), by path.
func runnableCommands() []string {
	helpOnly := reflect.ValueOf(showHelp).Pointer()
	var out []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Name() == "help" || sub.Name() == "completion" || sub.Hidden {
				continue
			}
			if sub.RunE != nil && reflect.ValueOf(sub.RunE).Pointer() != helpOnly || sub.Run != nil {
				out = append(out, strings.TrimPrefix(sub.CommandPath(), "sipwake "))
			}
			walk(sub)
		}
	}
	walk(newRootCmd(noEnv, io.Discard, io.Discard))
	sort.Strings(out)
	return out
}

// hasCommand reports whether the CLI has the command at path.
func hasCommand(path ...string) bool {
	cmd, rest, err := newRootCmd(noEnv, io.Discard, io.Discard).Find(path)
	return err == nil && len(rest) == 0 && cmd.CommandPath() == "sipwake "+strings.Join(path, " ")
}

// traceCLI runs the trace switch commands: on for an AOR and for a
// Call-ID, list, off for one and for all.
func traceCLI(t *testing.T, d *cliDaemon) {
	t.Helper()
	out := d.ok(t, "trace", "--aor", "sip:1001@pbx.test", "--for", "2m")
	m := regexp.MustCompile(`^tracing sip:1001@pbx\.test until (\S+) \(switch (\S+)\)\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("trace --aor: %q", out)
	}
	if exp, err := time.Parse(time.RFC3339, m[1]); err != nil || time.Until(exp) > 2*time.Minute+5*time.Second || time.Until(exp) < time.Minute {
		t.Errorf("trace --aor --for 2m expires %q (%v)", m[1], err)
	}
	aorSwitch := m[2]
	var on map[string]any
	d.okJSON(t, &on, "trace", "--call-id", "cli-e2e-call@example")
	if on["call_id"] != "cli-e2e-call@example" || on["id"] == "" || on["expires_at"] == nil {
		t.Errorf("trace --call-id -o json: %v", on)
	}
	rows := tableRows(t, d.ok(t, "trace", "list"), "ID", "AOR", "CALL-ID", "EXPIRES")
	if len(rows) != 2 {
		t.Errorf("trace list: %q", rows)
	}
	var list struct {
		Traces []map[string]any `json:"traces"`
	}
	d.okJSON(t, &list, "trace", "list")
	if len(list.Traces) != 2 {
		t.Errorf("trace list -o json: %v", list)
	}
	if out := d.ok(t, "trace", "off", "--id", aorSwitch); out != "turned 1 trace switch(es) off\n" {
		t.Errorf("trace off --id: %q", out)
	}
	var off struct {
		Cleared int `json:"cleared"`
	}
	if d.okJSON(t, &off, "trace", "off"); off.Cleared != 1 {
		t.Errorf("trace off -o json: %+v", off)
	}
	if out := d.ok(t, "trace", "list"); out != "no trace switches on\n" {
		t.Errorf("trace list after off: %q", out)
	}
	if code, out, errOut := d.admin(t, "trace"); code != exitConfig || out != "" || !strings.Contains(errOut, "sipwake --help") {
		t.Errorf("trace without --aor or --call-id = %d %q %q", code, out, errOut)
	}
}

// TestE2ECLI runs every command of the CLI, in table and JSON form,
// in-process through the cobra root command against a daemon it started
// itself (`sipwake serve -c FILE`) in front of Kamailio with the fake APNs
// and FCM: two sleeping phones, a stored MESSAGE, a held call, test
// pushes, accounts, the log level; then the exit statuses 0, 1 and 2.
func TestE2ECLI(t *testing.T) {
	d := startCLIDaemon(t)
	e := d.wakeEnv

	// --help lists every command group.
	code, help, _ := d.cli(t, "--help")
	if code != exitOK {
		t.Fatalf("--help = %d", code)
	}
	for _, c := range newRootCmd(noEnv, io.Discard, io.Discard).Commands() {
		if c.Name() != "help" && !c.Hidden && !strings.Contains(help, "\n  "+c.Name()+" ") {
			t.Errorf("--help does not list %q:\n%s", c.Name(), help)
		}
	}

	// An iPhone (VoIP and alert tokens) and an Android phone that asked
	// for refresh pushes (+sip.pnsreg) register, then sleep.
	e.sleepDevice(t, "1001", iosBoth)
	ua := proxytest.DialTCP(t, "", e.sw.TCP)
	cseq := 0
	if res := rawRegister(t, ua, e.sw.TCP, "1003", "pw1003", androidParms+"|;+sip.pnsreg", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("1003: register: %d %s", res.StatusCode, res.Reason)
	}
	ua.Close()

	// bindings list: table, filters, JSON.
	rows := tableRows(t, d.ok(t, "bindings", "list"), "AOR", "INSTANCE", "TRANSPORT", "SOURCE", "NODE", "PUSH", "EXPIRES", "USER-AGENT")
	if len(rows) != 2 || rows[0][0] != "sip:1001@pbx.test" || rows[1][0] != "sip:1003@pbx.test" ||
		!strings.HasPrefix(rows[0][5], "apns ") || !strings.HasPrefix(rows[1][5], "fcm ") || rows[0][2] != "tcp" || rows[0][4] != "e2e" {
		t.Errorf("bindings list rows: %q", rows)
	}
	if _, err := time.Parse(time.RFC3339, rows[0][6]); err != nil {
		t.Errorf("bindings list EXPIRES %q: %v", rows[0][6], err)
	}
	if rows := tableRows(t, d.ok(t, "bindings", "list", "--aor", "sip:1003@pbx.test"), "AOR", "INSTANCE", "TRANSPORT", "SOURCE", "NODE", "PUSH", "EXPIRES", "USER-AGENT"); len(rows) != 1 || rows[0][0] != "sip:1003@pbx.test" {
		t.Errorf("bindings list --aor: %q", rows)
	}
	if rows := tableRows(t, d.ok(t, "bindings", "list", "--provider", "apns"), "AOR", "INSTANCE", "TRANSPORT", "SOURCE", "NODE", "PUSH", "EXPIRES", "USER-AGENT"); len(rows) != 1 || rows[0][0] != "sip:1001@pbx.test" {
		t.Errorf("bindings list --provider apns: %q", rows)
	}
	var bl adminBindings
	raw := d.okJSON(t, &bl, "bindings", "list")
	if len(bl.Bindings) != 2 {
		t.Fatalf("bindings list -o json: %d bindings", len(bl.Bindings))
	}
	for _, b := range raw["bindings"].([]any) {
		bm := b.(map[string]any)
		for _, k := range []string{"aor", "instance", "contact", "transport", "source", "node", "expires_at", "user_agent", "push"} {
			if _, ok := bm[k]; !ok {
				t.Errorf("bindings list -o json: a binding lacks %q: %v", k, bm)
			}
		}
		p := bm["push"].(map[string]any)
		for _, k := range []string{"provider", "token", "types"} {
			if _, ok := p[k]; !ok {
				t.Errorf("bindings list -o json: push lacks %q: %v", k, p)
			}
		}
	}
	var fcmOnly adminBindings
	d.okJSON(t, &fcmOnly, "bindings", "list", "--aor", "1003@pbx.test", "--provider", "fcm")
	if len(fcmOnly.Bindings) != 1 || fcmOnly.Bindings[0].Push == nil || fcmOnly.Bindings[0].Push.Provider != "fcm" ||
		fcmOnly.Bindings[0].Push.Param != fcmProject {
		t.Errorf("bindings list --aor --provider -o json: %+v", fcmOnly)
	}
	iosInstance, androidInstance := bl.Bindings[0].Instance, bl.Bindings[1].Instance

	// bindings show.
	show := d.ok(t, "bindings", "show", "sip:1001@pbx.test")
	for _, want := range []string{"aor:", "instance:", "contact:", "transport:", "source:", "node:", "expires:", "user agent:", "push:"} {
		if !strings.Contains(show, "\n"+want) && !strings.HasPrefix(show, want) {
			t.Errorf("bindings show lacks %q:\n%s", want, show)
		}
	}
	if !strings.Contains(show, "push:") || !strings.Contains(show, "apns token "+push.Mask(iosToken)) && !strings.Contains(show, "apns token "+push.Mask(iosRemoteToken)) {
		t.Errorf("bindings show push line:\n%s", show)
	}
	var one adminBindings
	d.okJSON(t, &one, "bindings", "show", "1001@pbx.test")
	if len(one.Bindings) != 1 || one.Bindings[0].AOR != "sip:1001@pbx.test" || one.Bindings[0].Instance != iosInstance {
		t.Errorf("bindings show -o json: %+v", one)
	}

	// push test, to an AOR's devices and to an explicit target.
	pushCols := []string{"AOR", "INSTANCE", "PROVIDER", "TOKEN", "TYPE", "RESULT"}
	rows = tableRows(t, d.ok(t, "push", "test", "--aor", "sip:1001@pbx.test"), pushCols...)
	if len(rows) != 1 || rows[0][2] != "apns" || rows[0][4] != "alert" || rows[0][5] != "ok (200)" {
		t.Errorf("push test --aor: %q", rows)
	}
	if p := e.apns.WaitRequests(t, 1, 5*time.Second)[0]; p.Token != iosRemoteToken || p.PushType() != "alert" {
		t.Errorf("push test --aor reached APNs as %s to %s", p.PushType(), push6(p.Token))
	}
	var pr pushTestResults
	d.okJSON(t, &pr, "push", "test", "--provider", "fcm", "--token", androidToken, "--param", fcmProject)
	if len(pr.Results) != 1 || !pr.Results[0].OK || !pr.Results[0].Sent || pr.Results[0].Provider != "fcm" {
		t.Errorf("push test --provider fcm -o json: %+v", pr)
	}
	if p := e.fcm.WaitRequests(t, 1, 5*time.Second)[0]; p.Message.Token != androidToken || p.ProjectID != fcmProject {
		t.Errorf("push test --provider fcm reached FCM for %s/%s", p.ProjectID, push6(p.Message.Token))
	}
	rows = tableRows(t, d.ok(t, "push", "test", "--provider", "apns", "--token", iosToken, "--param", "TEAMTEST01.com.example.phone.voip", "--type", "voip"), pushCols...)
	if len(rows) != 1 || rows[0][0] != "-" || rows[0][4] != "voip" || rows[0][5] != "ok (200)" {
		t.Errorf("push test --provider apns --type voip: %q", rows)
	}
	d.okJSON(t, &pr, "push", "test", "--aor", "sip:1003@pbx.test", "--instance", androidInstance)
	if len(pr.Results) != 1 || !pr.Results[0].OK || pr.Results[0].Instance != androidInstance {
		t.Errorf("push test --aor --instance -o json: %+v", pr)
	}
	apnsBefore, fcmBefore := len(e.apns.Requests()), len(e.fcm.Requests())

	// messages pending: a MESSAGE stored for the sleeping Android phone.
	if out := d.ok(t, "messages", "pending"); out != "no pending messages\n" {
		t.Errorf("messages pending (none): %q", out)
	}
	const text = "cli e2e message body"
	expectLines(t, "sender", e.sendMessage(t, "1003", text).Messages, "SIP/2.0 202")
	out := d.ok(t, "messages", "pending")
	rows = tableRows(t, out, "ID", "AOR", "SENDER", "RECEIVED", "EXPIRES", "PENDING", "DELIVERED", "ATTEMPTS")
	if len(rows) != 1 || rows[0][1] != "sip:1003@pbx.test" || !strings.Contains(rows[0][2], "1002") || rows[0][5] != "1" || rows[0][6] != "0" {
		t.Errorf("messages pending: %q", rows)
	}
	var mp adminPending
	d.okJSON(t, &mp, "messages", "pending")
	if len(mp.Messages) != 1 || mp.Messages[0].AOR != "sip:1003@pbx.test" || mp.Messages[0].Pending != 1 || mp.Messages[0].ID != rows[0][0] {
		t.Errorf("messages pending -o json: %+v", mp)
	}
	if strings.Contains(out, text) {
		t.Errorf("messages pending shows the body")
	}

	// calls held: a call for the sleeping iPhone, held while it is pushed.
	if out := d.ok(t, "calls", "held"); out != "no held calls\n" {
		t.Errorf("calls held (none): %q", out)
	}
	caller := e.call(t, "1001", 20*time.Second)
	e.apns.WaitRequests(t, apnsBefore+1, 5*time.Second)
	rows = tableRows(t, d.ok(t, "calls", "held"), "CALL-ID", "AOR", "NODE", "RECEIVED", "DEADLINE", "DEVICES", "PUSHED", "STATE")
	if len(rows) != 1 || rows[0][1] != "sip:1001@pbx.test" || rows[0][2] != "e2e" || rows[0][5] != "1" || rows[0][6] != "1" || rows[0][7] != "held" {
		t.Errorf("calls held: %q", rows)
	}
	var ch adminHeld
	d.okJSON(t, &ch, "calls", "held")
	if len(ch.Calls) != 1 || ch.Calls[0].CallID != rows[0][0] || ch.Calls[0].Pushed != 1 || ch.Calls[0].Deadline.Sub(ch.Calls[0].Received) != testHold {
		t.Errorf("calls held -o json: %+v", ch)
	}
	iphone := e.wakeDevice(t, "1001", iosBoth)
	answer(t, iphone, e.sw.TCP)
	waitSIPp(t, "caller", caller)
	iphone.Close()
	d.okJSON(t, &ch, "calls", "held")
	if len(ch.Calls) != 0 {
		t.Errorf("calls held after the call: %+v", ch)
	}

	// registrations list: the Android phone's refresh-push record.
	regCols := []string{"AOR", "INSTANCE", "TOKEN", "ON-BEHALF", "STATE", "FAILURES", "EXPIRES", "DEVICE-EXPIRES", "REFRESH-AT"}
	rows = tableRows(t, d.ok(t, "registrations", "list"), regCols...)
	if len(rows) != 1 || rows[0][0] != "sip:1003@pbx.test" || rows[0][3] != "no" || rows[0][4] != "push_only" {
		t.Errorf("registrations list: %q", rows)
	}
	var rl adminRegistrations
	d.okJSON(t, &rl, "registrations", "list", "--aor", "sip:1003@pbx.test")
	if len(rl.Registrations) != 1 || rl.Registrations[0].State != "push_only" || rl.Registrations[0].OnBehalf {
		t.Errorf("registrations list --aor -o json: %+v", rl)
	}
	if out := d.ok(t, "registrations", "list", "--aor", "sip:1001@pbx.test"); out != "no registrations\n" {
		t.Errorf("registrations list --aor (none): %q", out)
	}

	// accounts: set by password and by HA1, list, rekey, delete.
	if out := d.ok(t, "accounts", "list"); out != "no accounts\n" {
		t.Errorf("accounts list (none): %q", out)
	}
	keyID := registrar.KeyID(bytes.Repeat([]byte{0x7e}, 32))
	pw := writeFile(t, "1001.pw", "pw1001\n")
	if out := d.ok(t, "accounts", "set", "sip:1001@pbx.test", "--password-file", pw); out !=
		"stored credentials for sip:1001@pbx.test (realms pbx.test, algorithms MD5,SHA-256, key "+keyID+")\n" {
		t.Errorf("accounts set --password-file: %q", out)
	}
	ha1 := mustHA1(t, registrar.AlgMD5, "1003", "pbx.test", "pw1003")
	d.secrets = append(d.secrets, ha1, mustHA1(t, registrar.AlgSHA256, "1001", "pbx.test", "pw1001"))
	var acct adminAccount
	d.okJSON(t, &acct, "accounts", "set", "1003@pbx.test", "--ha1-file", writeFile(t, "1003.ha1", ha1+"\n"), "--realm", "pbx.test")
	if acct.AOR != "sip:1003@pbx.test" || strings.Join(acct.Realms, ",") != "pbx.test" || strings.Join(acct.Algorithms, ",") != "MD5" || acct.KeyID != keyID {
		t.Errorf("accounts set --ha1-file -o json: %+v", acct)
	}
	rows = tableRows(t, d.ok(t, "accounts", "list"), "AOR", "REALMS", "ALGORITHMS", "KEY", "UPDATED", "STATE", "UPSTREAM-EXPIRES")
	if len(rows) != 2 || rows[0][0] != "sip:1001@pbx.test" || rows[1][0] != "sip:1003@pbx.test" || rows[1][2] != "MD5" {
		t.Errorf("accounts list: %q", rows)
	}
	var al adminAccounts
	d.okJSON(t, &al, "accounts", "list")
	if len(al.Accounts) != 2 {
		t.Errorf("accounts list -o json: %+v", al)
	}
	if out := d.ok(t, "accounts", "rekey"); out != "re-encrypted 0 account(s) under the current key\n" {
		t.Errorf("accounts rekey: %q", out)
	}
	var rk adminResealed
	d.okJSON(t, &rk, "accounts", "rekey")
	if rk.Resealed != 0 || rk.Error != "" {
		t.Errorf("accounts rekey -o json: %+v", rk)
	}
	if out := d.ok(t, "accounts", "delete", "sip:1003@pbx.test"); out != "deleted the credentials of sip:1003@pbx.test\n" {
		t.Errorf("accounts delete: %q", out)
	}
	var del struct {
		AOR     string `json:"aor"`
		Deleted bool   `json:"deleted"`
	}
	d.okJSON(t, &del, "accounts", "delete", "1001@pbx.test")
	if del.AOR != "sip:1001@pbx.test" || !del.Deleted {
		t.Errorf("accounts delete -o json: %+v", del)
	}

	// log level: read, set, in both forms.
	if out := d.ok(t, "log", "level"); out != "log level: debug\n" {
		t.Errorf("log level: %q", out)
	}
	if out := d.ok(t, "log", "level", "info"); out != "log level set to info\n" {
		t.Errorf("log level info: %q", out)
	}
	var lv adminLevel
	if d.okJSON(t, &lv, "log", "level"); lv.Level != "info" {
		t.Errorf("log level -o json: %+v", lv)
	}
	if d.okJSON(t, &lv, "log", "level", "debug"); lv.Level != "debug" {
		t.Errorf("log level debug -o json: %+v", lv)
	}

	// The SIP trace switch (when this build has it).
	if hasCommand("trace") {
		traceCLI(t, d)
	}

	// bindings delete: one device, then an AOR.
	if out := d.ok(t, "bindings", "delete", "sip:1003@pbx.test", "--instance", androidInstance); out !=
		"deleted binding "+androidInstance+" of sip:1003@pbx.test\n" {
		t.Errorf("bindings delete --instance: %q", out)
	}
	var dl adminDeleted
	d.okJSON(t, &dl, "bindings", "delete", "sip:1001@pbx.test")
	if dl.AOR != "sip:1001@pbx.test" || dl.Deleted != 1 {
		t.Errorf("bindings delete -o json: %+v", dl)
	}
	if out := d.ok(t, "bindings", "list"); out != "no bindings\n" {
		t.Errorf("bindings list after delete: %q", out)
	}
	if out := d.ok(t, "-o", "json", "bindings", "list"); strings.Join(strings.Fields(out), "") != `{"bindings":[]}` {
		t.Errorf("bindings list -o json after delete: %q", out)
	}

	// Commands that need no daemon: version, config default and show.
	out = d.ok(t, "version")
	for _, k := range []string{"version:", "commit:", "go:", "sip library:"} {
		if !strings.Contains(out, k) {
			t.Errorf("version lacks %q:\n%s", k, out)
		}
	}
	var bi buildInfo
	if d.okJSON(t, &bi, "version"); bi.GoVersion == "" || !strings.HasPrefix(bi.SIPLibrary, sipLibraryPath+" ") {
		t.Errorf("version -o json: %+v", bi)
	}
	for _, args := range [][]string{{"config", "default"}, {"-o", "json", "config", "default"}, {"config", "show", "-c", d.serveCfg}, {"-o", "json", "config", "show", "-c", d.serveCfg}} {
		code, out, errOut := d.cli(t, args...)
		var doc map[string]any
		if code != exitOK || errOut != "" {
			t.Errorf("%v = %d %q", args, code, errOut)
			continue
		}
		// config default and show print the commented YAML, or JSON
		// with -o json; a YAML parser reads both.
		if err := yaml.Unmarshal([]byte(out), &doc); err != nil || doc["sip"] == nil || doc["store"] == nil || doc["admin"] == nil {
			t.Errorf("%v output does not parse as a config (%v):\n%s", args, err, out)
		}
	}

	// Exit statuses. 1: a usage error, a config error, an error answer.
	for _, args := range [][]string{
		{"bindings", "show"},
		{"bindings", "list", "--bogus"},
		{"push", "test"},
		{"accounts", "set", "sip:1001@pbx.test"},
	} {
		code, out, errOut := d.admin(t, args...)
		if code != exitConfig || out != "" || !strings.Contains(errOut, "sipwake --help") {
			t.Errorf("usage error %v = %d %q %q", args, code, out, errOut)
		}
	}
	bad := writeFile(t, "bad.yaml", "admin: {listen: \""+e.sw.admin.Addr().String()+"\", token_fil: x}\n")
	if code, out, errOut := d.cli(t, "-c", bad, "calls", "held"); code != exitConfig || out != "" || !strings.Contains(errOut, "admin.token_fil") {
		t.Errorf("config error = %d %q %q", code, out, errOut)
	}
	noToken := writeFile(t, "notoken.yaml", "admin: {listen: \""+e.sw.admin.Addr().String()+"\"}\n")
	if code, out, errOut := d.cli(t, "-c", noToken, "messages", "pending"); code != exitConfig || out != "" || !strings.Contains(errOut, "HTTP 401") {
		t.Errorf("no token = %d %q %q", code, out, errOut)
	}
	if code, out, errOut := d.admin(t, "bindings", "show", "sip:1001@pbx.test"); code != exitConfig || out != "" || !strings.Contains(errOut, "HTTP 404") {
		t.Errorf("unknown AOR = %d %q %q", code, out, errOut)
	}
	// 2: the admin API cannot be reached.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	if code, out, errOut := d.admin(t, "--admin", dead, "log", "level"); code != exitUnavailable || out != "" || !strings.Contains(errOut, "cannot be reached") {
		t.Errorf("unreachable = %d %q %q", code, out, errOut)
	}
	// --admin reaches the live daemon too (the token from -c).
	if code, out, _ := d.admin(t, "--admin", "http://"+e.sw.admin.Addr().String(), "log", "level"); code != exitOK || out != "log level: debug\n" {
		t.Errorf("--admin = %d %q", code, out)
	}
	if fcmN, apnsN := len(e.fcm.Requests()), len(e.apns.Requests()); fcmN != fcmBefore+1 || apnsN != apnsBefore+1 {
		t.Errorf("pushes after the test pushes: %d FCM (want %d: the message), %d APNs (want %d: the call)", fcmN, fcmBefore+1, apnsN, apnsBefore+1)
	}

	d.Stop(t)
	// Once it stopped: exit 2 from its own address.
	if code, _, errOut := d.admin(t, "calls", "held"); code != exitUnavailable {
		t.Errorf("stopped daemon = %d %q", code, errOut)
	}

	// Every runnable command ran, in both forms (serve has none).
	for _, path := range runnableCommands() {
		forms := d.seen[path]
		switch {
		case path == "serve":
			if !forms["table"] {
				t.Errorf("%q not run", path)
			}
		case !forms["table"] || !forms["json"]:
			t.Errorf("%q not run in both forms (ran %v)", path, forms)
		}
	}
}
