package pushhttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/push"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"30", 30 * time.Second},
		{" 5 ", 5 * time.Second},
		{"0", 0},
		{"-3", 0},
		{"999999999", 24 * time.Hour},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := ParseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestStatusReason(t *testing.T) {
	for status, want := range map[int]string{
		429: push.ReasonRateLimited, 500: push.ReasonServerError, 503: push.ReasonServerError,
		401: push.ReasonAuth, 403: push.ReasonAuth, 413: push.ReasonPayloadTooLong,
		400: push.ReasonBadRequest, 404: push.ReasonBadRequest, 302: push.ReasonBadRequest,
	} {
		if got := StatusReason(status); got != want {
			t.Errorf("StatusReason(%d) = %s, want %s", status, got, want)
		}
	}
}

func TestTransportErrorHidesURL(t *testing.T) {
	const tok = "deadbeefcafe0123456789"
	inner := &url.Error{Op: "Post", URL: "https://api.push.apple.com/3/device/" + tok, Err: context.DeadlineExceeded}
	e := TransportError(context.Background(), "apns", fmt.Errorf("apns: %w", inner))
	if strings.Contains(e.Error(), tok) || !strings.Contains(e.Error(), "apns: Post: context deadline exceeded") {
		t.Errorf("message %q", e.Error())
	}
	if e.Reason != push.ReasonTimeout || !errors.Is(e, context.DeadlineExceeded) {
		t.Errorf("reason %s, Is(deadline) %v", e.Reason, errors.Is(e, context.DeadlineExceeded))
	}
	refused := &url.Error{Op: "Post", URL: "https://h/3/device/" + tok, Err: errors.New("connection refused")}
	if e := TransportError(context.Background(), "apns", refused); e.Reason != push.ReasonNetwork || strings.Contains(e.Error(), tok) {
		t.Errorf("refused: %v", e)
	}
	// A cancelled context means no answer came in time.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if e := TransportError(ctx, "fcm", errors.New("eof")); e.Reason != push.ReasonTimeout {
		t.Errorf("cancelled ctx: %s", e.Reason)
	}
}

func TestTLSConfig(t *testing.T) {
	conf, err := TLSConfig("")
	if err != nil || conf.RootCAs != nil || conf.MinVersion == 0 {
		t.Errorf("no CA file: %v %v", conf, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := TLSConfig(bad); err == nil {
		t.Errorf("a file without certificates was accepted")
	}
	if _, err := TLSConfig(bad + ".missing"); err == nil {
		t.Errorf("a missing file was accepted")
	}
}
