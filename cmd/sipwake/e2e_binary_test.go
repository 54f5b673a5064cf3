package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
)

// TestE2EBinarySIGTERMDrains runs the built binary: once ready, SIGTERM
// turns /readyz to 503 during drain.delay, then the process exits 0.
func TestE2EBinarySIGTERMDrains(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "sipwake")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	opsPort := testpeers.FreePort(t, "tcp")
	cfg := "sip:\n  listen: [\"udp://127.0.0.1:0\", \"tcp://127.0.0.1:0\"]\n" +
		"store:\n  embedded:\n    path: " + filepath.Join(dir, "db", "sipwake.db") + "\n" +
		"ops:\n  listen: \"127.0.0.1:" + strconv.Itoa(opsPort) + "\"\n" +
		"admin:\n  listen: \"127.0.0.3:0\"\n" +
		"drain:\n  delay: 1s\n  timeout: 5s\n"
	cfgFile := filepath.Join(dir, "sipwake.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer // read while the process may still write
	cmd := exec.Command(bin, "serve", "-c", cfgFile)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	readyz := "http://127.0.0.1:" + strconv.Itoa(opsPort) + "/readyz"
	status := func() int {
		c := http.Client{Timeout: time.Second}
		res, err := c.Get(readyz)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	deadline := time.Now().Add(15 * time.Second)
	for status() != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("never ready\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	saw503 := false
	for i := 0; i < 40 && !saw503; i++ {
		saw503 = status() == 503
		time.Sleep(20 * time.Millisecond)
	}
	if !saw503 {
		t.Errorf("/readyz did not turn 503 while draining")
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("exit: %v\nstderr:\n%s", waitErr, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("did not exit after SIGTERM\nstdout:\n%s", stdout.String())
	}
	out := stdout.String()
	for _, msg := range []string{`"msg":"sipwake started"`, `"msg":"draining"`, `"msg":"stopped"`} {
		if !strings.Contains(out, msg) {
			t.Errorf("stdout lacks %s", msg)
		}
	}
}
