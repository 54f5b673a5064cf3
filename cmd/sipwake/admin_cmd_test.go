package main

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/proxy/wake"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
)

// adminCLIConfig writes a config file naming f's admin listener and a token file holding
// token (none when empty) and returns its path.
func adminCLIConfig(t *testing.T, f *adminFixture, token string) string {
	t.Helper()
	yaml := "admin: {listen: \"" + strings.TrimPrefix(f.base, "http://") + "\""
	if token != "" {
		yaml += ", token_file: \"" + writeFile(t, "admin.token", token+"\n") + "\""
	}
	return writeFile(t, "sipwake.yaml", yaml+"}\n")
}

// runAdminCLI runs the CLI and checks that no full device token reaches either output.
func runAdminCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	code, stdout, stderr := runCLI(t, nil, args...)
	assertNoSecrets(t, strings.Join(args, " "), stdout+stderr)
	return code, stdout, stderr
}

func TestCLIAdminBindings(t *testing.T) {
	f := startAdmin(t, adminToken)
	cfg := adminCLIConfig(t, f, adminToken)

	code, out, errOut := runAdminCLI(t, "-c", cfg, "bindings", "list")
	if code != exitOK || errOut != "" {
		t.Fatalf("bindings list = %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 7 || !strings.HasPrefix(lines[0], "AOR") || !strings.Contains(lines[0], "INSTANCE") || !strings.Contains(lines[0], "PUSH") {
		t.Fatalf("bindings list table:\n%s", out)
	}
	if !strings.Contains(out, "apns "+push.Mask(tokAPNsVoIP)) || !strings.Contains(out, "fcm "+push.Mask(tokFCM)) || !strings.Contains(out, "ExamplePhone/1.0 iOS") {
		t.Errorf("bindings list lacks push cells or user agent:\n%s", out)
	}

	code, out, _ = runAdminCLI(t, "-c", cfg, "bindings", "list", "--aor", "1003@pbx.test", "--provider", "fcm")
	if code != exitOK || strings.Count(out, "\n") != 2 || !strings.Contains(out, instFCM) {
		t.Errorf("bindings list --aor --provider = %d:\n%s", code, out)
	}
	code, out, _ = runAdminCLI(t, "-c", cfg, "bindings", "list", "--aor", "sip:9999@pbx.test")
	if code != exitOK || out != "no bindings\n" {
		t.Errorf("empty list = %d %q", code, out)
	}

	code, out, _ = runAdminCLI(t, "-c", cfg, "-o", "json", "bindings", "list")
	var listed adminBindings
	if err := json.Unmarshal([]byte(out), &listed); err != nil || code != exitOK || len(listed.Bindings) != 6 {
		t.Fatalf("bindings list -o json = %d, %d bindings (%v):\n%s", code, len(listed.Bindings), err, out)
	}

	code, out, _ = runAdminCLI(t, "-c", cfg, "bindings", "show", "sip:1003@pbx.test")
	if code != exitOK || strings.Count(out, "aor:") != 3 || !strings.Contains(out, "contact:") ||
		!strings.Contains(out, "apns token "+push.Mask(tokAPNsVoIP)+" param TEAM1.com.example.phone types voip,remote") {
		t.Errorf("bindings show = %d:\n%s", code, out)
	}
	// An AOR with an escaped user reaches the API percent-encoded as a whole.
	code, out, _ = runAdminCLI(t, "-c", cfg, "-o", "json", "bindings", "show", "sip:john%20doe@pbx.test")
	if code != exitOK || !strings.Contains(out, `"aor": "sip:john%20doe@pbx.test"`) {
		t.Errorf("bindings show escaped user = %d:\n%s", code, out)
	}
	code, out, errOut = runAdminCLI(t, "-c", cfg, "bindings", "show", "sip:9999@pbx.test")
	if code != exitConfig || out != "" || !strings.Contains(errOut, "no live binding for sip:9999@pbx.test (HTTP 404)") {
		t.Errorf("show unknown = %d %q %q", code, out, errOut)
	}

	code, out, _ = runAdminCLI(t, "-c", cfg, "bindings", "delete", "sip:1003@pbx.test", "--instance", instFCM)
	if code != exitOK || out != "deleted binding "+instFCM+" of sip:1003@pbx.test\n" {
		t.Errorf("delete --instance = %d %q", code, out)
	}
	code, out, _ = runAdminCLI(t, "-c", cfg, "-o", "json", "bindings", "delete", "sip:1003@pbx.test")
	if code != exitOK || !strings.Contains(out, `"deleted": 2`) {
		t.Errorf("delete -o json = %d %q", code, out)
	}
	code, _, errOut = runAdminCLI(t, "-c", cfg, "bindings", "delete", "sip:1003@pbx.test")
	if code != exitConfig || !strings.Contains(errOut, "HTTP 404") {
		t.Errorf("delete again = %d %q", code, errOut)
	}

	// Usage errors.
	for _, args := range [][]string{
		{"bindings", "show"},
		{"bindings", "show", "a", "b"},
		{"bindings", "list", "extra"},
		{"bindings", "list", "--nope"},
		{"bindings", "frob"},
	} {
		code, out, errOut := runAdminCLI(t, append([]string{"-c", cfg}, args...)...)
		if code != exitConfig || out != "" || !strings.Contains(errOut, "sipwake --help") {
			t.Errorf("%v = %d %q %q", args, code, out, errOut)
		}
	}
}

func TestCLIAdminPushTest(t *testing.T) {
	f := startAdmin(t, adminToken)
	cfg := adminCLIConfig(t, f, adminToken)

	code, out, errOut := runAdminCLI(t, "-c", cfg, "push", "test", "--aor", "sip:1003@pbx.test")
	if code != exitOK || errOut != "" {
		t.Fatalf("push test --aor = %d %q", code, errOut)
	}
	if !strings.HasPrefix(out, "AOR") || strings.Count(out, "ok (200)") != 2 || !strings.Contains(out, push.Mask(tokAPNsRemote)) {
		t.Errorf("push test table:\n%s", out)
	}
	if sent := f.push.take(); len(sent) != 2 {
		t.Errorf("%d pushes sent", len(sent))
	}

	code, out, errOut = runAdminCLI(t, "-c", cfg, "push", "test", "--aor", "sip:3000@pbx.test")
	if code != exitConfig || !strings.Contains(out, "failed: unregistered, status 410, token is dead") || !strings.Contains(errOut, "1 of 1 test push(es) failed") {
		t.Errorf("dead token = %d:\n%s%s", code, out, errOut)
	}
	f.push.take()

	code, out, _ = runAdminCLI(t, "-c", cfg, "-o", "json", "push", "test", "--provider", "apns", "--token", tokAdHoc, "--param", "TEAM1.com.example.phone", "--type", "voip")
	var res pushTestResults
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitOK || len(res.Results) != 1 || !res.Results[0].OK || res.Results[0].Type != "voip" {
		t.Errorf("explicit voip -o json = %d (%v):\n%s", code, err, out)
	}
	if sent := f.push.take(); len(sent) != 1 || sent[0].Type != push.TypeVoIP || sent[0].Target.Token != tokAdHoc {
		t.Errorf("sent %+v", sent)
	}

	// A device that cannot take the push type is skipped, not failed...
	code, out, errOut = runAdminCLI(t, "-c", cfg, "push", "test", "--aor", "sip:1003@pbx.test", "--type", "voip")
	if code != exitOK || !strings.Contains(out, "ok (200)") || !strings.Contains(out, "not sent: voip pushes exist only for apple devices") {
		t.Errorf("voip to a mixed aor = %d:\n%s%s", code, out, errOut)
	}
	if sent := f.push.take(); len(sent) != 1 {
		t.Errorf("%d pushes sent", len(sent))
	}
	// ...but sending nothing at all is a failure.
	code, out, errOut = runAdminCLI(t, "-c", cfg, "push", "test", "--aor", "sip:2000@pbx.test")
	if code != exitConfig || !strings.Contains(out, "not sent: the device accepts only voip pushes") || !strings.Contains(errOut, "no test push was sent") {
		t.Errorf("voip-only alert = %d:\n%s%s", code, out, errOut)
	}

	for _, args := range [][]string{
		{"push", "test"},
		{"push", "test", "--aor", "sip:1003@pbx.test", "--token", "x"},
		{"push", "test", "--instance", instAPNs},
		{"push", "test", "--token", tokAdHoc},
		{"push", "test", "--aor", "sip:1003@pbx.test", "--type", "silent"},
	} {
		code, out, errOut := runAdminCLI(t, append([]string{"-c", cfg}, args...)...)
		if code != exitConfig || out != "" || !strings.Contains(errOut, "sipwake --help") {
			t.Errorf("%v = %d %q %q", args, code, out, errOut)
		}
	}
	if sent := f.push.take(); len(sent) != 0 {
		t.Errorf("usage errors sent %d pushes", len(sent))
	}
	// An error answer of the API (400 here) is exit status 1.
	code, _, errOut = runAdminCLI(t, "-c", cfg, "push", "test", "--provider", "fcm", "--token", tokAdHoc, "--type", "voip")
	if code != exitConfig || !strings.Contains(errOut, "HTTP 400") {
		t.Errorf("voip to fcm = %d %q", code, errOut)
	}
}

func TestCLIAdminHeldMessagesLog(t *testing.T) {
	f := startAdmin(t, adminToken)
	cfg := adminCLIConfig(t, f, adminToken)

	if code, out, _ := runAdminCLI(t, "-c", cfg, "calls", "held"); code != exitOK || out != "no held calls\n" {
		t.Errorf("calls held (none) = %d %q", code, out)
	}
	recv := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.heldMu.Lock()
	f.held = []wake.HeldInfo{{CallID: "abc@pbx", AOR: "sip:1003@pbx.test", Node: "node-a", Received: recv, Deadline: recv.Add(30 * time.Second), Devices: 2, Pushed: 1}}
	f.heldMu.Unlock()
	code, out, _ := runAdminCLI(t, "-c", cfg, "calls", "held")
	if code != exitOK || !strings.HasPrefix(out, "CALL-ID") || !strings.Contains(out, "abc@pbx") || !strings.Contains(out, "2026-03-01T12:00:30Z") || !strings.Contains(out, "held") {
		t.Errorf("calls held = %d:\n%s", code, out)
	}
	code, out, _ = runAdminCLI(t, "-c", cfg, "-o", "json", "calls", "held")
	var held adminHeld
	if err := json.Unmarshal([]byte(out), &held); err != nil || code != exitOK || len(held.Calls) != 1 || held.Calls[0].Pushed != 1 {
		t.Errorf("calls held -o json = %d (%v) %s", code, err, out)
	}

	if code, out, _ := runAdminCLI(t, "-c", cfg, "messages", "pending"); code != exitOK || out != "no pending messages\n" {
		t.Errorf("messages pending = %d %q", code, out)
	}
	if code, out, _ := runAdminCLI(t, "-c", cfg, "-o", "json", "messages", "pending"); code != exitOK || out != "{\n  \"messages\": []\n}\n" {
		t.Errorf("messages pending -o json = %d %q", code, out)
	}

	if code, out, _ := runAdminCLI(t, "-c", cfg, "log", "level"); code != exitOK || out != "log level: info\n" {
		t.Errorf("log level = %d %q", code, out)
	}
	if code, out, _ := runAdminCLI(t, "-c", cfg, "log", "level", "debug"); code != exitOK || out != "log level set to debug\n" || f.level.Level() != zapcore.DebugLevel {
		t.Errorf("log level debug = %d %q (level %s)", code, out, f.level.Level())
	}
	if code, out, _ := runAdminCLI(t, "-c", cfg, "-o", "json", "log", "level"); code != exitOK || out != "{\n  \"level\": \"debug\"\n}\n" {
		t.Errorf("log level -o json = %d %q", code, out)
	}
	code, _, errOut := runAdminCLI(t, "-c", cfg, "log", "level", "loud")
	if code != exitConfig || !strings.Contains(errOut, `level "loud"`) || f.level.Level() != zapcore.DebugLevel {
		t.Errorf("log level loud = %d %q", code, errOut)
	}
	if code, _, _ := runAdminCLI(t, "-c", cfg, "log", "level", "info", "debug"); code != exitConfig {
		t.Errorf("two levels = %d", code)
	}
}

func TestCLIAdminConnection(t *testing.T) {
	f := startAdmin(t, adminToken)
	withToken := adminCLIConfig(t, f, adminToken)

	// --admin overrides admin.listen; the token still comes from the config.
	tokenOnly := writeFile(t, "token-only.yaml", "admin: {token_file: \""+writeFile(t, "tok", adminToken+"\n")+"\"}\n")
	for _, admin := range []string{f.base, strings.TrimPrefix(f.base, "http://"), f.base + "/"} {
		if code, out, errOut := runAdminCLI(t, "-c", tokenOnly, "--admin", admin, "log", "level"); code != exitOK || out != "log level: info\n" {
			t.Errorf("--admin %s = %d %q %q", admin, code, out, errOut)
		}
	}
	// The config can also come from SIPWAKE_CONFIG and SIPWAKE_ADMIN_* overrides.
	env := []string{"SIPWAKE_CONFIG=" + tokenOnly, "SIPWAKE_ADMIN_LISTEN=" + strings.TrimPrefix(f.base, "http://")}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr strings.Builder
	if code := run(ctx, []string{"calls", "held"}, env, &stdout, &stderr); code != exitOK || stdout.String() != "no held calls\n" {
		t.Errorf("env config = %d %q %q", code, stdout.String(), stderr.String())
	}

	// A missing or wrong token is an error answer: exit 1, and the message says why.
	noToken := adminCLIConfig(t, f, "")
	code, _, errOut := runAdminCLI(t, "-c", noToken, "bindings", "list")
	if code != exitConfig || !strings.Contains(errOut, "bearer token") || !strings.Contains(errOut, "HTTP 401") {
		t.Errorf("no token = %d %q", code, errOut)
	}
	wrong := adminCLIConfig(t, f, "not-the-token")
	if code, _, _ := runAdminCLI(t, "-c", wrong, "bindings", "list"); code != exitConfig {
		t.Errorf("wrong token = %d", code)
	}
	if code, out, _ := runAdminCLI(t, "-c", withToken, "bindings", "list"); code != exitOK || !strings.HasPrefix(out, "AOR") {
		t.Errorf("right token = %d", code)
	}

	// Nothing listening: exit 2.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	code, out, errOut := runAdminCLI(t, "-c", tokenOnly, "--admin", dead, "bindings", "list")
	if code != exitUnavailable || out != "" || !strings.Contains(errOut, "cannot be reached") {
		t.Errorf("unreachable = %d %q %q", code, out, errOut)
	}
	deadCfg := writeFile(t, "dead.yaml", "admin: {listen: \""+dead+"\"}\n")
	if code, _, _ := runAdminCLI(t, "-c", deadCfg, "push", "test", "--aor", "sip:1003@pbx.test"); code != exitUnavailable {
		t.Errorf("unreachable from admin.listen = %d", code)
	}

	// Config errors: exit 1.
	for _, args := range [][]string{
		{"-c", writeFile(t, "bad.yaml", "admin: {lisen: x}\n"), "bindings", "list"},
		{"-c", writeFile(t, "notok.yaml", "admin: {token_file: /nonexistent/tok}\n"), "bindings", "list"},
		{"-c", tokenOnly, "--admin", "ftp://127.0.0.1:1", "bindings", "list"},
		{"-c", tokenOnly, "-o", "yaml", "bindings", "list"},
	} {
		if code, out, errOut := runAdminCLI(t, args...); code != exitConfig || out != "" || errOut == "" {
			t.Errorf("%v = %d %q %q", args, code, out, errOut)
		}
	}
}

func TestCLIAdminURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:9091": "http://127.0.0.1:9091",
		":9091":          "http://127.0.0.1:9091",
		"0.0.0.0:9091":   "http://127.0.0.1:9091",
		"[::]:9091":      "http://[::1]:9091",
		"[::1]:9091":     "http://[::1]:9091",
		"localhost:9091": "http://localhost:9091",
		"10.1.2.3:9091":  "http://10.1.2.3:9091",
	} {
		if got, err := adminBaseURL(listen); err != nil || got != want {
			t.Errorf("adminBaseURL(%q) = %q %v, want %q", listen, got, err, want)
		}
	}
	if _, err := adminBaseURL("nope"); err == nil {
		t.Error("adminBaseURL without port accepted")
	}
	for in, want := range map[string]string{
		"127.0.0.1:9091":                 "http://127.0.0.1:9091",
		"http://127.0.0.1:9091/":         "http://127.0.0.1:9091",
		"https://admin.example:443/base": "https://admin.example:443/base",
	} {
		if got, err := parseAdminURL(in); err != nil || got != want {
			t.Errorf("parseAdminURL(%q) = %q %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"ftp://x:1", "http://", "http://u:p@x:1", "http://x:1/?a=b"} {
		if _, err := parseAdminURL(in); err == nil {
			t.Errorf("parseAdminURL(%q) accepted", in)
		}
	}
}

func TestCLIAdminAccounts(t *testing.T) {
	kr := mustKeyring(t, acctKeyNew, acctKeyOld)
	f := startAdmin(t, adminToken, withRegistrar(t, kr, nil))
	cfg := adminCLIConfig(t, f, adminToken)

	md5 := mustHA1(t, registrar.AlgMD5, "1003", "pbx.test", acctPassword)
	sha := mustHA1(t, registrar.AlgSHA256, "1003", "pbx.test", acctPassword)
	pw2000 := " two spaces  \n" // one trailing newline goes, the rest is the password
	secrets := []string{md5, sha, acctPassword, strings.TrimSpace(pw2000),
		mustHA1(t, registrar.AlgMD5, "alice", "asterisk", " two spaces  "), mustHA1(t, registrar.AlgSHA256, "alice", "asterisk", " two spaces  ")}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		code, out, errOut := runAdminCLI(t, append([]string{"-c", cfg}, args...)...)
		assertNoneOf(t, strings.Join(args, " "), out+errOut, secrets...)
		return code, out, errOut
	}

	if code, out, _ := cli("accounts", "list"); code != exitOK || out != "no accounts\n" {
		t.Errorf("accounts list (none) = %d %q", code, out)
	}

	// HA1 files, for any realm.
	ha1File := writeFile(t, "1003.ha1", md5+"\n")
	shaFile := writeFile(t, "1003.ha1-sha256", "  "+sha+"\n")
	code, out, errOut := cli("accounts", "set", "sip:1003@pbx.test", "--ha1-file", ha1File, "--ha1-sha256-file", shaFile)
	if code != exitOK || out != "stored credentials for sip:1003@pbx.test (realms (any), algorithms MD5,SHA-256, key "+registrar.KeyID(acctKeyNew)+")\n" {
		t.Fatalf("accounts set --ha1-file = %d %q %q", code, out, errOut)
	}
	_, c := openAccount(t, f.store, kr, "sip:1003@pbx.test")
	if h, _ := c.For("whatever-the-pbx-says", "MD5"); h != md5 || c.Username != "1003" {
		t.Errorf("stored MD5 HA1 wrong (user %q)", c.Username)
	}
	if h, _ := c.For("pbx.test", "SHA-256"); h != sha {
		t.Error("stored SHA-256 HA1 wrong")
	}

	// A password file, with a realm and a user name.
	pwFile := writeFile(t, "2000.pw", pw2000)
	code, out, _ = cli("-o", "json", "accounts", "set", "2000@pbx.test", "--password-file", pwFile, "--realm", "asterisk", "--username", "alice")
	var acct adminAccount
	if err := json.Unmarshal([]byte(out), &acct); err != nil || code != exitOK || acct.AOR != "sip:2000@pbx.test" ||
		strings.Join(acct.Realms, ",") != "asterisk" || strings.Join(acct.Algorithms, ",") != "MD5,SHA-256" {
		t.Fatalf("accounts set --password-file -o json = %d %q (%v)", code, out, err)
	}
	_, c = openAccount(t, f.store, kr, "sip:2000@pbx.test")
	if h, _ := c.For("asterisk", "MD5"); h != mustHA1(t, registrar.AlgMD5, "alice", "asterisk", " two spaces  ") || c.Username != "alice" {
		t.Errorf("password file: HA1 not that of the content less one newline (user %q)", c.Username)
	}
	// HA1 files with --realm.
	code, out, _ = cli("accounts", "set", "sip:3000@pbx.test", "--ha1-file", ha1File, "--realm", "pbx.test")
	if code != exitOK || !strings.Contains(out, "realms pbx.test, algorithms MD5,") {
		t.Errorf("accounts set --realm = %d %q", code, out)
	}

	code, out, _ = cli("accounts", "list")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if code != exitOK || len(lines) != 4 || !strings.HasPrefix(lines[0], "AOR") || !strings.Contains(lines[0], "REALMS") ||
		!strings.Contains(lines[1], "sip:1003@pbx.test") || !strings.Contains(lines[1], "(any)") || !strings.Contains(lines[2], "asterisk") {
		t.Errorf("accounts list = %d:\n%s", code, out)
	}
	code, out, _ = cli("-o", "json", "accounts", "list")
	var list adminAccounts
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != exitOK || len(list.Accounts) != 3 || strings.Contains(out, "sealed") {
		t.Errorf("accounts list -o json = %d %s", code, out)
	}

	// Rekey: nothing under an old key yet, then one account.
	if code, out, _ := cli("accounts", "rekey"); code != exitOK || out != "re-encrypted 0 account(s) under the current key\n" {
		t.Errorf("accounts rekey = %d %q", code, out)
	}
	oldReg, err := registrar.New(registrar.Config{Keyring: mustKeyring(t, acctKeyOld)}, f.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oldReg.SetPassword(context.Background(), "sip:4000@pbx.test", "", "", acctPassword); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := cli("-o", "json", "accounts", "rekey"); code != exitOK || out != "{\n  \"resealed\": 1\n}\n" {
		t.Errorf("accounts rekey -o json = %d %q", code, out)
	}
	if a, _ := openAccount(t, f.store, kr, "sip:4000@pbx.test"); a.KeyID != registrar.KeyID(acctKeyNew) {
		t.Errorf("rekeyed account under %s", a.KeyID)
	}
	strayReg, err := registrar.New(registrar.Config{Keyring: mustKeyring(t, acctKeyStray)}, f.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strayReg.SetPassword(context.Background(), "sip:5000@pbx.test", "", "", acctPassword); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := cli("accounts", "rekey"); code != exitConfig || out != "" || !strings.Contains(errOut, "sip:5000@pbx.test") || !strings.Contains(errOut, "HTTP 500") {
		t.Errorf("accounts rekey with a stray account = %d %q %q", code, out, errOut)
	}

	// Delete.
	if code, out, _ := cli("accounts", "delete", "sip:3000@pbx.test"); code != exitOK || out != "deleted the credentials of sip:3000@pbx.test\n" {
		t.Errorf("accounts delete = %d %q", code, out)
	}
	if code, out, _ := cli("-o", "json", "accounts", "delete", "5000@pbx.test"); code != exitOK || out != "{\n  \"aor\": \"sip:5000@pbx.test\",\n  \"deleted\": true\n}\n" {
		t.Errorf("accounts delete -o json = %d %q", code, out)
	}
	if code, out, errOut := cli("accounts", "delete", "sip:3000@pbx.test"); code != exitConfig || out != "" || !strings.Contains(errOut, "no account for sip:3000@pbx.test (HTTP 404)") {
		t.Errorf("accounts delete again = %d %q %q", code, out, errOut)
	}

	// Bad files: the message names the file, never its content.
	badHA1 := writeFile(t, "bad.ha1", "not-a-digest-"+strings.Repeat("q", 19)+"\n")
	twoLines := writeFile(t, "two.ha1", md5+"\n"+md5+"\n")
	emptyPW := writeFile(t, "empty.pw", "\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"accounts", "set", "sip:1003@pbx.test", "--ha1-file", badHA1}, "want 32 hex digits"},
		{[]string{"accounts", "set", "sip:1003@pbx.test", "--ha1-file", twoLines}, "more than one line"},
		{[]string{"accounts", "set", "sip:1003@pbx.test", "--ha1-file", ha1File, "--ha1-sha256-file", ha1File}, "want 64 hex digits"},
		{[]string{"accounts", "set", "sip:1003@pbx.test", "--ha1-file", filepath.Join(t.TempDir(), "missing")}, "--ha1-file"},
		{[]string{"accounts", "set", "sip:1003@pbx.test", "--password-file", emptyPW}, "password is empty"},
	} {
		code, out, errOut := cli(tc.args...)
		if code != exitConfig || out != "" || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "not-a-digest") {
			t.Errorf("%v = %d %q %q", tc.args, code, out, errOut)
		}
	}
	// Usage errors.
	for _, args := range [][]string{
		{"accounts", "set", "sip:1003@pbx.test"},
		{"accounts", "set", "sip:1003@pbx.test", "--ha1-file", ha1File, "--password-file", pwFile},
		{"accounts", "set", "sip:1003@pbx.test", "--ha1-sha256-file", shaFile},
		{"accounts", "set", "--ha1-file", ha1File},
		{"accounts", "set", "sip:1003@pbx.test", "--password", "x"},
		{"accounts", "delete"},
		{"accounts", "list", "extra"},
		{"accounts", "frob"},
	} {
		code, out, errOut := cli(args...)
		if code != exitConfig || out != "" || !strings.Contains(errOut, "sipwake --help") {
			t.Errorf("%v = %d %q %q", args, code, out, errOut)
		}
	}
	// The server refuses what the CLI cannot check: an AOR without a user part.
	if code, _, errOut := cli("accounts", "set", "sip:pbx.test", "--ha1-file", ha1File); code != exitConfig || !strings.Contains(errOut, "no user part (HTTP 400)") {
		t.Errorf("set without user part = %d %q", code, errOut)
	}

	// No key configured: 503 explains which key.
	g := startAdmin(t, "", withRegistrar(t, nil, nil))
	gcfg := adminCLIConfig(t, g, "")
	code, out, errOut = runAdminCLI(t, "-c", gcfg, "accounts", "set", "sip:1003@pbx.test", "--password-file", pwFile)
	if code != exitConfig || out != "" || !strings.Contains(errOut, "registrar.credentials.key_file") || !strings.Contains(errOut, "HTTP 503") {
		t.Errorf("set without key = %d %q %q", code, out, errOut)
	}
}

func TestCLIAdminRegistrations(t *testing.T) {
	f := startAdmin(t, adminToken)
	cfg := adminCLIConfig(t, f, adminToken)
	if code, out, _ := runAdminCLI(t, "-c", cfg, "registrations", "list"); code != exitOK || out != "no registrations\n" {
		t.Errorf("registrations list (none) = %d %q", code, out)
	}
	toks := seedRegistrations(t, f.store)
	code, out, _ := runAdminCLI(t, "-c", cfg, "registrations", "list")
	assertNoneOf(t, "registrations list", out, toks...)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if code != exitOK || len(lines) != 4 || !strings.HasPrefix(lines[0], "AOR") || !strings.Contains(lines[0], "ON-BEHALF") ||
		!strings.Contains(out, proxy.Mask(toks[1])) || !strings.Contains(out, "backing_off") || !strings.Contains(out, "2026-03-01T12:20:00Z") {
		t.Errorf("registrations list = %d:\n%s", code, out)
	}
	code, out, _ = runAdminCLI(t, "-c", cfg, "-o", "json", "registrations", "list", "--aor", "sip:2000@pbx.test")
	var rs adminRegistrations
	if err := json.Unmarshal([]byte(out), &rs); err != nil || code != exitOK || len(rs.Registrations) != 1 || rs.Registrations[0].State != store.RegPushOnly {
		t.Errorf("registrations list --aor -o json = %d %s", code, out)
	}
	if code, _, _ := runAdminCLI(t, "-c", cfg, "registrations", "list", "extra"); code != exitConfig {
		t.Errorf("registrations list extra = %d", code)
	}
}
