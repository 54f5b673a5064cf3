package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/store"
)

// clearPushTries bounds ClearPush's read-compare-write attempts when the
// binding keeps changing between its read and its write.
const clearPushTries = 5

// ClearPush implements store.Bindings as a compare-and-set: it reads the
// binding, drops its push target in Go, and writes it back with a script
// that succeeds only while the stored data is still what it read (see
// clearPushScript); when another write came in between it reads again. A
// REGISTER that stored a new token is therefore never overwritten. Two
// round trips; with a single server or Sentinel the script also publishes
// the EventBindingPut, with a Cluster a PUBLISH follows.
func (s *Store) ClearPush(ctx context.Context, aor, instance, token string) (cleared bool, err error) {
	defer func() { s.metrics.Observe(store.OpClearPush, err) }()
	if err := s.begin(ctx); err != nil {
		return false, fail("clear push", err)
	}
	bkey := s.keys.binding(aor, instance)
	ev := s.event(store.EventBindingPut, aor, instance)
	var extra []any
	if s.oneTrip {
		payload, err := json.Marshal(ev)
		if err != nil {
			return false, fail("clear push", err)
		}
		extra = []any{s.keys.events(), payload}
	}
	for range clearPushTries {
		data, err := s.client.HGet(ctx, bkey, "data").Result()
		if errors.Is(err, goredis.Nil) {
			return false, store.ErrNotFound
		}
		if err != nil {
			return false, fail("clear push", err)
		}
		b, err := decode(aor, instance, data)
		if err != nil {
			return false, fail("clear push", err)
		}
		if !b.Live(time.Now()) {
			return false, store.ErrNotFound
		}
		if token == "" || b.Push == nil || b.Push.Token != token {
			return false, nil
		}
		b.Push = nil
		next, err := json.Marshal(b)
		if err != nil {
			return false, fail("clear push", err)
		}
		n, err := clearPushScript.Run(ctx, s.client, []string{bkey}, append([]any{data, next}, extra...)...).Int()
		if err != nil {
			return false, fail("clear push", err)
		}
		if n == 0 {
			continue // changed since the read: look again
		}
		if !s.oneTrip {
			ctx, cancel := afterWrite(ctx)
			defer cancel()
			s.publish(ctx, ev)
		}
		return true, nil
	}
	return false, fail("clear push", fmt.Errorf("binding changed during each of %d attempts", clearPushTries))
}

// forgetAt is when the store forgets h, in unix ms.
func forgetAt(h store.HeldCall) int64 { return ms(h.Deadline.Add(store.HeldRetention)) }

// heldData returns the JSON kept in a held call's "data" field: the call
// without ID, AOR and Node, which the key and fields of their own carry
// byte for byte (JSON would rewrite invalid UTF-8).
func heldData(h store.HeldCall) ([]byte, error) {
	h.ID, h.AOR, h.Node = "", "", ""
	return json.Marshal(h)
}

// decodeHeld reads a held call from its data and raw id, aor and node.
func decodeHeld(id, aor, node, data string) (store.HeldCall, error) {
	var h store.HeldCall
	if err := json.Unmarshal([]byte(data), &h); err != nil {
		return h, fmt.Errorf("corrupt held call %q: %w", id, err)
	}
	h.ID, h.AOR, h.Node = id, aor, node
	return h, nil
}

// PutHeld implements store.Held with one script on the {held} slot: the
// record (a hash, PEXPIREAT a minute after the Deadline) and its index
// entry are replaced together. One round trip in every mode.
func (s *Store) PutHeld(ctx context.Context, h store.HeldCall) (err error) {
	defer func() { s.metrics.Observe(store.OpPutHeld, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("put held", err)
	}
	if h.ID == "" {
		return errors.New("redis store: put held: id must not be empty")
	}
	data, err := heldData(h)
	if err != nil {
		return fail("put held", err)
	}
	err = putHeldScript.Run(ctx, s.client, []string{s.keys.heldIndex(), s.keys.held(h.ID)},
		ms(time.Now()), forgetAt(h), h.ID, h.AOR, h.Node, data).Err()
	if err != nil {
		return fail("put held", err)
	}
	return nil
}

// DeleteHeld implements store.Held with one script on the {held} slot.
func (s *Store) DeleteHeld(ctx context.Context, id string) (err error) {
	defer func() { s.metrics.Observe(store.OpDeleteHeld, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("delete held", err)
	}
	n, err := deleteHeldScript.Run(ctx, s.client, []string{s.keys.heldIndex(), s.keys.held(id)},
		ms(time.Now()), id).Int()
	if err != nil {
		return fail("delete held", err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// ListHeld implements store.Held with one script that prunes the index and
// reads the matching records (held calls are few: one per INVITE waiting
// for a push).
func (s *Store) ListHeld(ctx context.Context, f store.HeldFilter) (out []store.HeldCall, err error) {
	defer func() { s.metrics.Observe(store.OpListHeld, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("list held", err)
	}
	now := time.Now()
	res, err := listHeldScript.Run(ctx, s.client, []string{s.keys.heldIndex()},
		ms(now), s.keys.heldPrefix(), f.AOR, f.Node).Slice()
	if err != nil {
		return nil, fail("list held", err)
	}
	out = make([]store.HeldCall, 0, len(res)/4)
	for i := 0; i+3 < len(res); i += 4 {
		id, _ := str(res[i])
		aor, _ := str(res[i+1])
		node, _ := str(res[i+2])
		data, _ := str(res[i+3])
		h, err := decodeHeld(id, aor, node, data)
		if err != nil {
			return nil, fail("list held", err)
		}
		if h.Kept(now) {
			out = append(out, h)
		}
	}
	store.SortHeld(out)
	return out, nil
}

// ClaimHeld implements store.Held with one script on the {held} slot that
// compares the record's owner and sets the new one atomically.
func (s *Store) ClaimHeld(ctx context.Context, id, from, to string) (h store.HeldCall, err error) {
	defer func() { s.metrics.Observe(store.OpClaimHeld, err) }()
	if err := s.begin(ctx); err != nil {
		return h, fail("claim held", err)
	}
	if to == "" {
		return h, errors.New("redis store: claim held: new owner must not be empty")
	}
	res, err := claimHeldScript.Run(ctx, s.client, []string{s.keys.heldIndex(), s.keys.held(id)},
		ms(time.Now()), id, from, to).Slice()
	if err != nil {
		return h, fail("claim held", err)
	}
	switch {
	case len(res) >= 1 && res[0] == "absent":
		return h, store.ErrNotFound
	case len(res) >= 1 && res[0] == "conflict":
		return h, store.ErrConflict
	case len(res) != 3 || res[0] != "ok":
		return h, fail("claim held", fmt.Errorf("unexpected script reply %v", res))
	}
	data, _ := str(res[1])
	aor, _ := str(res[2])
	h, err = decodeHeld(id, aor, to, data)
	if err != nil {
		return store.HeldCall{}, fail("claim held", err)
	}
	return h, nil
}

// Heartbeat implements store.Held: SET <prefix>node:<node> with the
// node's clock (unix ms) and PX ttl, so Redis's own clock ends it.
func (s *Store) Heartbeat(ctx context.Context, node string, ttl time.Duration) (err error) {
	defer func() { s.metrics.Observe(store.OpHeartbeat, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("heartbeat", err)
	}
	if node == "" {
		return errors.New("redis store: heartbeat: node must not be empty")
	}
	if ttl <= 0 {
		return fmt.Errorf("redis store: heartbeat %q: ttl %s must be positive", node, ttl)
	}
	// PX counts milliseconds: round a sub-millisecond ttl up, not to 0.
	ttl = max(ttl, time.Millisecond)
	if err := s.client.Set(ctx, s.keys.node(node), ms(time.Now()), ttl).Err(); err != nil {
		return fail("heartbeat", err)
	}
	return nil
}

// NodeAlive implements store.Held with EXISTS on the node's key.
func (s *Store) NodeAlive(ctx context.Context, node string) (alive bool, err error) {
	defer func() { s.metrics.Observe(store.OpNodeAlive, err) }()
	if err := s.begin(ctx); err != nil {
		return false, fail("node alive", err)
	}
	if node == "" {
		return false, nil
	}
	n, err := s.client.Exists(ctx, s.keys.node(node)).Result()
	if err != nil {
		return false, fail("node alive", err)
	}
	return n == 1, nil
}

// Publish implements store.Events: PUBLISH of e as JSON on the events
// channel, which every node's subscribers (this node's too) receive.
func (s *Store) Publish(ctx context.Context, e store.Event) (err error) {
	defer func() { s.metrics.Observe(store.OpPublish, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("publish", err)
	}
	payload, err := json.Marshal(e)
	if err != nil {
		return fail("publish", err)
	}
	if err := s.client.Publish(ctx, s.keys.events(), payload).Err(); err != nil {
		return fail("publish", err)
	}
	return nil
}
