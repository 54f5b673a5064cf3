package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// jsonKeys returns the keys of one JSON object line in the order written.
func jsonKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %q", line)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func TestLoggerJSONLine(t *testing.T) {
	var buf bytes.Buffer
	log, _, err := newLogger(LogConfig{Level: "info", Format: "json"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UTC().Truncate(time.Microsecond)
	log.Named("proxy").Error("invite held", zap.String("call_id", "abc@host"), zap.Duration("duration", 1500*time.Millisecond), zap.Error(errors.New("boom")))
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}

	line := strings.TrimSuffix(buf.String(), "\n")
	if strings.Contains(line, "\n") {
		t.Fatalf("more than one line: %q", buf.String())
	}
	// zap writes level before ts; what matters is that the four envelope keys come first,
	// then the fields in call order, and no caller or stacktrace.
	keys := jsonKeys(t, line)
	if len(keys) != 7 {
		t.Fatalf("keys %v, want ts, level, logger, msg, call_id, duration, error: %s", keys, line)
	}
	head := append([]string(nil), keys[:4]...)
	slices.Sort(head)
	if strings.Join(head, ",") != "level,logger,msg,ts" || strings.Join(keys[4:], ",") != "call_id,duration,error" {
		t.Fatalf("keys %v, want ts, level, logger, msg first, then call_id, duration, error: %s", keys, line)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["level"] != "error" || rec["logger"] != "proxy" || rec["msg"] != "invite held" || rec["call_id"] != "abc@host" || rec["error"] != "boom" {
		t.Errorf("record %v", rec)
	}
	if rec["duration"] != 1.5 {
		t.Errorf("duration = %v, want 1.5 (seconds)", rec["duration"])
	}
	ts, err := time.Parse(time.RFC3339Nano, rec["ts"].(string))
	if err != nil {
		t.Fatalf("ts %q: %v", rec["ts"], err)
	}
	if !strings.HasSuffix(rec["ts"].(string), "Z") || ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
		t.Errorf("ts %q: want UTC and now", rec["ts"])
	}
}

func TestLoggerLevels(t *testing.T) {
	var buf bytes.Buffer
	log, level, err := newLogger(LogConfig{Level: "warn", Format: "json"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("dropped")
	log.Warn("kept")
	level.SetLevel(zapcore.DebugLevel)
	log.Named("registrar").Debug("now kept")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"msg":"kept"`) || !strings.Contains(lines[1], `"logger":"registrar","msg":"now kept"`) {
		t.Fatalf("lines %q", lines)
	}
}

func TestLoggerConsole(t *testing.T) {
	var buf bytes.Buffer
	log, _, err := newLogger(LogConfig{Level: "debug", Format: "console"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Named("ops").Info("ops listening", zap.String("addr", "127.0.0.1:9090"))
	out := buf.String()
	for _, want := range []string{"INFO", "ops", "ops listening", `{"addr": "127.0.0.1:9090"}`} {
		if !strings.Contains(out, want) {
			t.Errorf("console line %q lacks %q", out, want)
		}
	}
}

func TestLoggerRejectsBadConfig(t *testing.T) {
	for _, cfg := range []LogConfig{{Level: "verbose", Format: "json"}, {Level: "dpanic", Format: "json"}, {Level: "info", Format: "logfmt"}} {
		if _, _, err := newLogger(cfg, &bytes.Buffer{}); err == nil {
			t.Errorf("newLogger(%+v) accepted it", cfg)
		}
	}
}
