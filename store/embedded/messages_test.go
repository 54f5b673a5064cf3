package embedded_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/embedded"
	"github.com/sipwake/sipwake/store/storetest"
)

// TestSweeperKeepsMessagesForgetsLeases: the background sweeper never
// deletes a stored message, expired or not (the caller's sweeper lists
// and deletes them), but deletes lapsed leases; acknowledging and deleting
// leave no index entry behind.
func TestSweeperKeepsMessagesForgetsLeases(t *testing.T) {
	s := open(t, embedded.Options{Path: filepath.Join(t.TempDir(), "s.db"), SweepInterval: -1})
	ctx := t.Context()
	now := time.Now()
	expired := storetest.MessageFixture("expired", "sip:m@example.com", now.Add(-time.Hour), now.Add(-time.Minute), "d1")
	live := storetest.MessageFixture("live", "sip:m@example.com", now, now.Add(time.Hour), "d1", "d2")
	for _, m := range []store.StoredMessage{expired, live} {
		if _, err := s.PutMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := s.Lease(ctx, "short", "n1", time.Second); err != nil || !ok {
		t.Fatalf("Lease = %v, %v", ok, err)
	}
	if ok, err := s.Lease(ctx, "long", "n1", time.Hour); err != nil || !ok {
		t.Fatalf("Lease = %v, %v", ok, err)
	}
	if _, err := s.Sweep(now.Add(2 * time.Second)); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if m, a, r, e, l, err := s.MessageCounts(); err != nil || m != 2 || a != 2 || r != 2 || e != 2 || l != 1 {
		t.Errorf("after sweep: %d messages, %d/%d/%d index keys, %d leases (%v); want 2, 2/2/2, 1", m, a, r, e, l, err)
	}
	if _, err := s.Message(ctx, expired.ID); err != nil {
		t.Errorf("Message(expired) after a sweep: %v", err)
	}
	if err := s.DeleteMessage(ctx, expired.ID); err != nil {
		t.Fatal(err)
	}
	for _, inst := range []string{"d1", "d2"} {
		if _, err := s.Acknowledge(ctx, live.ID, inst); err != nil {
			t.Fatal(err)
		}
	}
	if m, a, r, e, _, err := s.MessageCounts(); err != nil || m+a+r+e != 0 {
		t.Errorf("after delete and acks: %d messages, %d/%d/%d index keys (%v); want none", m, a, r, e, err)
	}
}

// TestCommitsAreFsynced: the store leaves bbolt's fsync on, so a write
// that returned is on disk.
func TestCommitsAreFsynced(t *testing.T) {
	s := open(t, embedded.Options{Path: filepath.Join(t.TempDir(), "s.db")})
	if s.NoSync() {
		t.Fatal("bbolt NoSync is set: commits are not fsynced")
	}
}

// killedChildEnv makes the test binary, run again by
// TestMessageSurvivesSIGKILL, store a message and wait to be killed.
const killedChildEnv = "SIPWAKE_EMBEDDED_KILLED_CHILD"

// TestMessageSurvivesSIGKILL runs a child process that stores a message
// and reports it; the child is killed with SIGKILL (no Close, no deferred
// code) and the message is read back from the file. A power loss cannot
// be simulated here: that part rests on bbolt's fsync (TestCommitsAreFsynced).
func TestMessageSurvivesSIGKILL(t *testing.T) {
	if path := os.Getenv(killedChildEnv); path != "" {
		storeAndWait(path)
		return
	}
	path := filepath.Join(t.TempDir(), "sipwake.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestMessageSurvivesSIGKILL$")
	cmd.Env = append(os.Environ(), killedChildEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	stored := false
	for lines.Scan() {
		if strings.TrimSpace(lines.Text()) == "stored" {
			stored = true
			break
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if !stored {
		t.Fatal("child did not report the message stored")
	}
	s := open(t, embedded.Options{Path: path})
	m, err := s.Message(t.Context(), "killed-1")
	if err != nil {
		t.Fatalf("Message after SIGKILL: %v", err)
	}
	if len(m.Pending) != 1 || m.Pending[0] != "d1" {
		t.Errorf("Message after SIGKILL: pending %q, want [d1]", m.Pending)
	}
}

// storeAndWait is the child of TestMessageSurvivesSIGKILL.
func storeAndWait(path string) {
	s, err := embedded.Open(context.Background(), embedded.Options{Path: path, NodeID: "child"})
	if err != nil {
		os.Stderr.WriteString("open: " + err.Error() + "\n")
		os.Exit(2)
	}
	now := time.Now()
	m := storetest.MessageFixture("killed-1", "sip:k@example.com", now, now.Add(time.Hour), "d1")
	if created, err := s.PutMessage(context.Background(), m); err != nil || !created {
		os.Stderr.WriteString("put message failed\n")
		os.Exit(2)
	}
	os.Stdout.WriteString("stored\n")
	time.Sleep(time.Minute) // killed before this ends
	os.Exit(3)
}
