package embedded

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/store"
)

// SubscriberBuffer is how many events a subscriber may fall behind before
// further events to it are dropped (and counted in
// sipwake_store_events_dropped_total{backend="embedded"}).
const SubscriberBuffer = 256

// hub fans events out to in-process subscribers. A writer never blocks on
// a subscriber: each has a buffered channel, and an event that does not
// fit is dropped for that subscriber only.
type hub struct {
	mu      sync.Mutex
	subs    map[chan store.Event]struct{}
	closed  bool
	done    chan struct{}
	dropped prometheus.Counter
}

func newHub(dropped prometheus.Counter) *hub {
	return &hub{subs: make(map[chan store.Event]struct{}), done: make(chan struct{}), dropped: dropped}
}

// subscribe adds a subscriber until ctx ends or the hub closes.
func (h *hub) subscribe(ctx context.Context) (<-chan store.Event, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, store.ErrClosed
	}
	ch := make(chan store.Event, SubscriberBuffer)
	h.subs[ch] = struct{}{}
	go func() {
		select {
		case <-ctx.Done():
			h.remove(ch)
		case <-h.done:
		}
	}()
	return ch, nil
}

func (h *hub) remove(ch chan store.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

// publish delivers evs to every subscriber without blocking.
func (h *hub) publish(evs ...store.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		for _, ev := range evs {
			select {
			case ch <- ev:
			default:
				h.dropped.Inc()
			}
		}
	}
}

// close closes every subscriber channel; later subscribes fail.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	close(h.done)
	for ch := range h.subs {
		delete(h.subs, ch)
		close(ch)
	}
}
