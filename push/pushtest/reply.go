package pushtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Reply is what a fake answers to a push. The zero Reply is success.
type Reply struct {
	// Status is the HTTP status; 0 means 200.
	Status int
	// Reason is the APNs reason ("Unregistered", "BadDeviceToken", …) or
	// the FCM errorCode ("UNREGISTERED", "INVALID_ARGUMENT", …).
	Reason string
	// Message is the FCM error message (a default per status when empty).
	Message string
	// Field, for FCM, adds a google.rpc.BadRequest field violation naming
	// it (e.g. "message.token").
	Field string
	// RetryAfter is sent as a Retry-After header in whole seconds.
	RetryAfter time.Duration
	// Hang holds the request open until Release, the client giving up,
	// or the server closing.
	Hang bool
}

func (r Reply) status() int {
	if r.Status == 0 {
		return http.StatusOK
	}
	return r.Status
}

func (r Reply) writeRetryAfter(w http.ResponseWriter) {
	if r.RetryAfter > 0 {
		secs := int((r.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
}

// replies holds a fake's programmed answers.
type replies struct {
	mu      sync.Mutex
	byToken map[string]Reply
	next    []Reply
	def     Reply
	release chan struct{}
	once    sync.Once
}

func newReplies() *replies {
	return &replies{byToken: map[string]Reply{}, release: make(chan struct{})}
}

// pick is the answer for a push to token: the token's own reply, else the
// next queued one, else the default.
func (r *replies) pick(token string) Reply {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rep, ok := r.byToken[token]; ok {
		return rep
	}
	if len(r.next) > 0 {
		rep := r.next[0]
		r.next = r.next[1:]
		return rep
	}
	return r.def
}

func (r *replies) forToken(token string, rep Reply) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byToken[token] = rep
}

func (r *replies) queue(n int, rep Reply) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for range n {
		r.next = append(r.next, rep)
	}
}

func (r *replies) all(rep Reply) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.def = rep
}

// hang waits for Release or ctx.
func (r *replies) hang(ctx context.Context) {
	select {
	case <-r.release:
	case <-ctx.Done():
	}
}

func (r *replies) releaseAll() { r.once.Do(func() { close(r.release) }) }

// recorder keeps what a fake received, in order.
type recorder[T any] struct {
	mu      sync.Mutex
	items   []T
	changed chan struct{}
}

func newRecorder[T any]() *recorder[T] { return &recorder[T]{changed: make(chan struct{})} }

func (r *recorder[T]) add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = append(r.items, v)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder[T]) snapshot() ([]T, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.items...), r.changed
}

func (r *recorder[T]) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items = nil
}

// wait returns the first n items once they are there; it fails t after
// timeout.
func (r *recorder[T]) wait(t testing.TB, n int, timeout time.Duration, what string) []T {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		items, changed := r.snapshot()
		if len(items) >= n {
			return items[:n]
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("pushtest: %s: %d requests after %v, want %d", what, len(items), timeout, n)
			return nil
		}
	}
}

// startTLS starts h on 127.0.0.1 over HTTP/2 and TLS with a certificate
// from ca; clientCAs, when set, verifies client certificates given.
func startTLS(t testing.TB, ca *CA, h http.Handler, clientCAs bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = ca.serverTLS(t, clientCAs)
	srv.StartTLS()
	return srv
}
