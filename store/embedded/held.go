package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sipwake/sipwake/store"
)

// Held calls live in three buckets (see doc.go):
//
//	held        ID -> encodeHeld(h)
//	heldexpiry  8-byte big-endian unix nanos of Deadline+HeldRetention + ID -> empty
//	nodes       node id -> 8-byte big-endian unix nanos when its heartbeat lapses
//
// A held call's ID, AOR and Node are kept byte for byte (the ID is the
// key; AOR and Node are length-prefixed before the JSON), so that filters
// and claims compare raw bytes as the caller gave them.

// forgetAt is when the store forgets h.
func forgetAt(h store.HeldCall) time.Time { return h.Deadline.Add(store.HeldRetention) }

// encodeHeld returns the stored form of h: uvarint length and bytes of
// AOR, the same for Node, then h as JSON with ID, AOR and Node left empty
// (the key and the prefix carry them).
func encodeHeld(h store.HeldCall) ([]byte, error) {
	aor, node := h.AOR, h.Node
	h.ID, h.AOR, h.Node = "", "", ""
	data, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	v := make([]byte, 0, 2*binary.MaxVarintLen64+len(aor)+len(node)+len(data))
	v = binary.AppendUvarint(v, uint64(len(aor)))
	v = append(v, aor...)
	v = binary.AppendUvarint(v, uint64(len(node)))
	v = append(v, node...)
	return append(v, data...), nil
}

// decodeHeld reverses encodeHeld for the record stored under id.
func decodeHeld(id, v []byte) (store.HeldCall, error) {
	var h store.HeldCall
	field := func() (string, bool) {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) {
			return "", false
		}
		f := string(v[k : k+int(n)])
		v = v[k+int(n):]
		return f, true
	}
	aor, ok1 := field()
	node, ok2 := field()
	if !ok1 || !ok2 {
		return h, fmt.Errorf("corrupt held call %q", id)
	}
	if err := json.Unmarshal(v, &h); err != nil {
		return h, fmt.Errorf("corrupt held call %q: %w", id, err)
	}
	h.ID, h.AOR, h.Node = string(id), aor, node
	return h, nil
}

// getHeld returns the held call id as stored inside tx, kept or not; ok is
// false when there is none.
func getHeld(tx *bolt.Tx, id []byte) (h store.HeldCall, ok bool, err error) {
	v := tx.Bucket(bucketHeld).Get(id)
	if v == nil {
		return h, false, nil
	}
	h, err = decodeHeld(id, v)
	return h, err == nil, err
}

// removeHeld deletes a held call and its forget-index entry inside tx.
func removeHeld(tx *bolt.Tx, h store.HeldCall) error {
	id := []byte(h.ID)
	if err := tx.Bucket(bucketHeldExpiry).Delete(expiryKey(forgetAt(h), id)); err != nil {
		return err
	}
	return tx.Bucket(bucketHeld).Delete(id)
}

// PutHeld implements store.Held in one write transaction: it replaces the
// record and its forget-index entry. A call already forgotten at now (a
// minute past its Deadline) is not stored, and removes any record it
// would have replaced.
func (s *Store) PutHeld(ctx context.Context, h store.HeldCall) (err error) {
	defer func() { s.metrics.Observe(store.OpPutHeld, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("put held", err)
	}
	if h.ID == "" {
		return errors.New("embedded store: put held: id must not be empty")
	}
	val, err := encodeHeld(h)
	if err != nil {
		return fail("put held", err)
	}
	id := []byte(h.ID)
	now := time.Now()
	err = s.db.Update(func(tx *bolt.Tx) error {
		old, ok, err := getHeld(tx, id)
		if err != nil {
			return err
		}
		if ok {
			if err := removeHeld(tx, old); err != nil {
				return err
			}
		}
		if !h.Kept(now) {
			return nil
		}
		if err := tx.Bucket(bucketHeld).Put(id, val); err != nil {
			return err
		}
		return tx.Bucket(bucketHeldExpiry).Put(expiryKey(forgetAt(h), id), nil)
	})
	if err != nil {
		return fail("put held", err)
	}
	return nil
}

// DeleteHeld implements store.Held.
func (s *Store) DeleteHeld(ctx context.Context, id string) (err error) {
	defer func() { s.metrics.Observe(store.OpDeleteHeld, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("delete held", err)
	}
	now := time.Now()
	kept := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		h, ok, err := getHeld(tx, []byte(id))
		if err != nil || !ok {
			return err
		}
		kept = h.Kept(now)
		return removeHeld(tx, h)
	})
	if err != nil {
		return fail("delete held", err)
	}
	if !kept {
		return store.ErrNotFound
	}
	return nil
}

// ListHeld implements store.Held: it reads every held call (there are few:
// one per INVITE waiting for a push) and filters them.
func (s *Store) ListHeld(ctx context.Context, f store.HeldFilter) (out []store.HeldCall, err error) {
	defer func() { s.metrics.Observe(store.OpListHeld, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("list held", err)
	}
	now := time.Now()
	err = s.db.View(func(tx *bolt.Tx) error {
		out = []store.HeldCall{}
		return tx.Bucket(bucketHeld).ForEach(func(k, v []byte) error {
			h, err := decodeHeld(k, v)
			if err != nil {
				return err
			}
			if h.Kept(now) && (f.AOR == "" || h.AOR == f.AOR) && (f.Node == "" || h.Node == f.Node) {
				out = append(out, h)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fail("list held", err)
	}
	store.SortHeld(out)
	return out, nil
}

// ClaimHeld implements store.Held in one write transaction (bbolt runs one
// at a time, so of two racing claims the second sees the first's owner).
func (s *Store) ClaimHeld(ctx context.Context, id, from, to string) (h store.HeldCall, err error) {
	defer func() { s.metrics.Observe(store.OpClaimHeld, err) }()
	if err := s.begin(ctx); err != nil {
		return h, fail("claim held", err)
	}
	if to == "" {
		return h, errors.New("embedded store: claim held: new owner must not be empty")
	}
	now := time.Now()
	err = s.db.Update(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		h, ok, err = getHeld(tx, []byte(id))
		switch {
		case err != nil:
			return err
		case !ok || !h.Kept(now):
			return store.ErrNotFound
		case h.Node != from:
			return store.ErrConflict
		}
		h.Node = to
		val, err := encodeHeld(h)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketHeld).Put([]byte(id), val)
	})
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
		return store.HeldCall{}, err
	}
	if err != nil {
		return store.HeldCall{}, fail("claim held", err)
	}
	return h, nil
}

// Heartbeat implements store.Held: the node's lapse time goes to the
// nodes bucket (fsynced like every write, so it survives a restart as a
// Redis key would).
func (s *Store) Heartbeat(ctx context.Context, node string, ttl time.Duration) (err error) {
	defer func() { s.metrics.Observe(store.OpHeartbeat, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("heartbeat", err)
	}
	if node == "" {
		return errors.New("embedded store: heartbeat: node must not be empty")
	}
	if ttl <= 0 {
		return fmt.Errorf("embedded store: heartbeat %q: ttl %s must be positive", node, ttl)
	}
	lapse := binary.BigEndian.AppendUint64(nil, uint64(time.Now().Add(ttl).UnixNano()))
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNodes).Put([]byte(node), lapse)
	})
	if err != nil {
		return fail("heartbeat", err)
	}
	return nil
}

// NodeAlive implements store.Held.
func (s *Store) NodeAlive(ctx context.Context, node string) (alive bool, err error) {
	defer func() { s.metrics.Observe(store.OpNodeAlive, err) }()
	if err := s.begin(ctx); err != nil {
		return false, fail("node alive", err)
	}
	if node == "" {
		return false, nil // Heartbeat refuses an empty name
	}
	now := time.Now()
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketNodes).Get([]byte(node))
		alive = len(v) == 8 && now.UnixNano() < int64(binary.BigEndian.Uint64(v))
		return nil
	})
	if err != nil {
		return false, fail("node alive", err)
	}
	return alive, nil
}

// heldDue reports whether the forget index has an entry due at now, so
// that a sweep with nothing to do opens no write transaction (each costs
// an fsync).
func (s *Store) heldDue(now time.Time) (due bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketHeldExpiry).Cursor().First()
		if k == nil {
			return nil
		}
		t, _, ok := splitExpiryKey(k)
		due = !ok || !t.After(now)
		return nil
	})
	return due, err
}

// sweepHeld deletes the held calls forgotten at now, in batches, and
// returns how many it deleted.
func (s *Store) sweepHeld(now time.Time) (int, error) {
	due, err := s.heldDue(now)
	if err != nil {
		return 0, fail("sweep", err)
	}
	if !due {
		return 0, nil
	}
	total := 0
	for {
		n, more := 0, false
		err := s.db.Update(func(tx *bolt.Tx) error {
			n, more = 0, false
			var idx [][]byte
			c := tx.Bucket(bucketHeldExpiry).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				t, _, ok := splitExpiryKey(k)
				if ok && t.After(now) {
					break
				}
				if len(idx) == sweepBatch {
					more = true
					break
				}
				idx = append(idx, bytes.Clone(k))
			}
			ek := tx.Bucket(bucketHeldExpiry)
			for _, k := range idx {
				// The index entry goes in every case; the record only when
				// it is really forgotten (the index may be stale).
				if err := ek.Delete(k); err != nil {
					return err
				}
				_, id, ok := splitExpiryKey(k)
				if !ok {
					continue
				}
				h, found, err := getHeld(tx, id)
				if err != nil || !found || h.Kept(now) {
					continue
				}
				if err := tx.Bucket(bucketHeld).Delete(id); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, fail("sweep", err)
		}
		total += n
		if !more {
			return total, nil
		}
	}
}

// sweepNodes deletes the heartbeats lapsed at now (one per node: few).
// It writes only when one has lapsed.
func (s *Store) sweepNodes(now time.Time) error {
	lapsed := func(v []byte) bool {
		return len(v) != 8 || now.UnixNano() >= int64(binary.BigEndian.Uint64(v))
	}
	var keys [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			if lapsed(v) {
				keys = append(keys, bytes.Clone(k))
			}
			return nil
		})
	})
	if err != nil {
		return fail("sweep", err)
	}
	if len(keys) == 0 {
		return nil
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		for _, k := range keys {
			// A heartbeat since the View may have renewed it.
			if v := b.Get(k); v != nil && lapsed(v) {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fail("sweep", err)
	}
	return nil
}
