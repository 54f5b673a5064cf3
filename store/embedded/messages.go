package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sipwake/sipwake/store"
)

// Stored messages live in four buckets, leases in a fifth (see doc.go):
//
//	messages    ID -> messageRecord as JSON
//	msgaor      aorKey(AOR) + 8-byte big-endian unix nanos of Received + ID -> empty
//	msgarrival  8-byte big-endian unix nanos of Received + ID -> empty
//	msgexpiry   8-byte big-endian unix nanos of Expires + ID -> empty
//	leases      lease key -> 8-byte big-endian unix nanos when it lapses + holder
//
// A cursor on msgaor or msgarrival walks messages in arrival order
// (Received, then ID, as store.SortMessages); msgexpiry lets ListMessages
// find expired messages without reading live ones. Nothing deletes an
// expired message but DeleteMessage (the caller's sweeper) and the last
// Acknowledge.

// messageRecord is a stored message as kept in the messages bucket. Its
// strings are kept as bytes (base64 in the JSON), so that every byte of an
// AOR, a sender or a device instance survives; the ID is the key.
type messageRecord struct {
	AOR       []byte    `json:"aor"`
	Sender    []byte    `json:"sender,omitempty"`
	Received  time.Time `json:"received"`
	Expires   time.Time `json:"expires"`
	Request   []byte    `json:"request,omitempty"`
	Pending   [][]byte  `json:"pending,omitempty"`
	Delivered [][]byte  `json:"delivered,omitempty"`
	Attempts  int       `json:"attempts,omitempty"`
}

func toBytes(ss []string) [][]byte {
	if len(ss) == 0 {
		return nil
	}
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func toStrings(bs [][]byte) []string {
	if len(bs) == 0 {
		return nil
	}
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}

// encodeMessage returns the stored form of m (without its ID, the key).
func encodeMessage(m store.StoredMessage) ([]byte, error) {
	return json.Marshal(messageRecord{
		AOR:       []byte(m.AOR),
		Sender:    []byte(m.Sender),
		Received:  m.Received,
		Expires:   m.Expires,
		Request:   m.Request,
		Pending:   toBytes(m.Pending),
		Delivered: toBytes(m.Delivered),
		Attempts:  m.Attempts,
	})
}

// decodeMessage reverses encodeMessage for the record stored under id.
func decodeMessage(id, v []byte) (store.StoredMessage, error) {
	var r messageRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return store.StoredMessage{}, fmt.Errorf("corrupt message %q: %w", id, err)
	}
	return store.StoredMessage{
		ID:        string(id),
		AOR:       string(r.AOR),
		Received:  r.Received,
		Expires:   r.Expires,
		Request:   r.Request,
		Sender:    string(r.Sender),
		Pending:   toStrings(r.Pending),
		Delivered: toStrings(r.Delivered),
		Attempts:  r.Attempts,
	}, nil
}

// prepareMessage checks m for PutMessage and returns it with duplicate
// instances dropped, and pending instances that are also delivered.
func prepareMessage(m store.StoredMessage) (store.StoredMessage, error) {
	if m.ID == "" || m.AOR == "" || len(m.Pending) == 0 {
		return m, errors.New("embedded store: put message: id, aor and pending must not be empty")
	}
	var pending, delivered []string
	for _, d := range m.Delivered {
		if d != "" && !slices.Contains(delivered, d) {
			delivered = append(delivered, d)
		}
	}
	for _, p := range m.Pending {
		if p == "" {
			return m, fmt.Errorf("embedded store: put message %q: empty instance in pending", m.ID)
		}
		if !slices.Contains(pending, p) && !slices.Contains(delivered, p) {
			pending = append(pending, p)
		}
	}
	if len(pending) == 0 {
		return m, fmt.Errorf("embedded store: put message %q: every pending instance is delivered", m.ID)
	}
	m.Pending, m.Delivered = pending, delivered
	return m, nil
}

// arrivalKey is the msgarrival key of message id received at t; with
// aorKey(aor) in front, its msgaor key.
func arrivalKey(t time.Time, id string) []byte { return expiryKey(t, []byte(id)) }

func aorArrivalKey(aor string, t time.Time, id string) []byte {
	return append(aorKey(aor), arrivalKey(t, id)...)
}

// getMessage returns message id as stored inside tx; ok is false when
// there is none.
func getMessage(tx *bolt.Tx, id []byte) (m store.StoredMessage, ok bool, err error) {
	v := tx.Bucket(bucketMessages).Get(id)
	if v == nil {
		return m, false, nil
	}
	m, err = decodeMessage(id, v)
	return m, err == nil, err
}

// writeMessage replaces the record of m inside tx; its indexes, which
// depend on fields that never change (AOR, Received, Expires), stay.
func writeMessage(tx *bolt.Tx, m store.StoredMessage) error {
	v, err := encodeMessage(m)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMessages).Put([]byte(m.ID), v)
}

// insertMessage stores m and its three index entries inside tx.
func insertMessage(tx *bolt.Tx, m store.StoredMessage) error {
	if err := writeMessage(tx, m); err != nil {
		return err
	}
	if err := tx.Bucket(bucketMsgAOR).Put(aorArrivalKey(m.AOR, m.Received, m.ID), nil); err != nil {
		return err
	}
	if err := tx.Bucket(bucketMsgArrival).Put(arrivalKey(m.Received, m.ID), nil); err != nil {
		return err
	}
	return tx.Bucket(bucketMsgExpiry).Put(expiryKey(m.Expires, []byte(m.ID)), nil)
}

// removeMessage deletes m and its index entries inside tx.
func removeMessage(tx *bolt.Tx, m store.StoredMessage) error {
	if err := tx.Bucket(bucketMsgAOR).Delete(aorArrivalKey(m.AOR, m.Received, m.ID)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketMsgArrival).Delete(arrivalKey(m.Received, m.ID)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketMsgExpiry).Delete(expiryKey(m.Expires, []byte(m.ID))); err != nil {
		return err
	}
	return tx.Bucket(bucketMessages).Delete([]byte(m.ID))
}

// PutMessage implements store.Messages in one write transaction: when no
// message has m.ID it stores the record and its index entries. bbolt
// fsyncs the file before Update returns (the store never sets NoSync), so
// a message PutMessage reported stored survives a crash or power loss.
// Duplicate instances in m.Pending or m.Delivered are stored once, and an
// instance in both counts as delivered.
func (s *Store) PutMessage(ctx context.Context, m store.StoredMessage) (created bool, err error) {
	defer func() { s.metrics.Observe(store.OpPutMessage, err) }()
	if err := s.begin(ctx); err != nil {
		return false, fail("put message", err)
	}
	if m, err = prepareMessage(m); err != nil {
		return false, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		created = false
		if tx.Bucket(bucketMessages).Get([]byte(m.ID)) != nil {
			return nil
		}
		created = true
		return insertMessage(tx, m)
	})
	if err != nil {
		return false, fail("put message", err)
	}
	return created, nil
}

// Message implements store.Messages.
func (s *Store) Message(ctx context.Context, id string) (m store.StoredMessage, err error) {
	defer func() { s.metrics.Observe(store.OpMessage, err) }()
	if err := s.begin(ctx); err != nil {
		return m, fail("message", err)
	}
	found := false
	err = s.db.View(func(tx *bolt.Tx) error {
		var err error
		m, found, err = getMessage(tx, []byte(id))
		return err
	})
	if err != nil {
		return store.StoredMessage{}, fail("message", err)
	}
	if !found {
		return store.StoredMessage{}, store.ErrNotFound
	}
	return m, nil
}

// walkArrivals reads, in arrival order, the messages whose index keys in
// bucket start with prefix (an arrival key follows the prefix), and
// passes each to keep until it returns false.
func walkArrivals(tx *bolt.Tx, bucket, prefix []byte, keep func(store.StoredMessage) bool) error {
	c := tx.Bucket(bucket).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		_, id, ok := splitExpiryKey(k[len(prefix):])
		if !ok {
			return fmt.Errorf("corrupt message index key %q", k)
		}
		m, found, err := getMessage(tx, id)
		if err != nil {
			return err
		}
		if found && !keep(m) {
			return nil
		}
	}
	return nil
}

// ListMessages implements store.Messages. With an AOR it walks the AOR's
// index in arrival order; without, live messages come from the arrival
// index and expired ones from the expiry index (only those due are read),
// sorted afterwards.
func (s *Store) ListMessages(ctx context.Context, f store.MessageFilter) (out []store.StoredMessage, err error) {
	defer func() { s.metrics.Observe(store.OpListMessages, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("list messages", err)
	}
	now := time.Now()
	full := func() bool { return f.Limit > 0 && len(out) >= f.Limit }
	collect := func(m store.StoredMessage) bool {
		if m.Expired(now) == f.Expired {
			out = append(out, m)
		}
		return !full()
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		out = []store.StoredMessage{}
		switch {
		case f.AOR != "":
			return walkArrivals(tx, bucketMsgAOR, aorKey(f.AOR), collect)
		case !f.Expired:
			return walkArrivals(tx, bucketMsgArrival, nil, collect)
		}
		c := tx.Bucket(bucketMsgExpiry).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			t, id, ok := splitExpiryKey(k)
			if !ok {
				return fmt.Errorf("corrupt message expiry key %q", k)
			}
			if t.After(now) {
				break
			}
			m, found, err := getMessage(tx, id)
			if err != nil {
				return err
			}
			if found && m.Expired(now) {
				out = append(out, m)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fail("list messages", err)
	}
	if f.AOR == "" && f.Expired {
		store.SortMessages(out)
		if full() {
			out = out[:f.Limit]
		}
	}
	return out, nil
}

// MessagesFor implements store.Messages: it walks the AOR's index in
// arrival order and keeps the live messages pending for instance.
func (s *Store) MessagesFor(ctx context.Context, aor, instance string, limit int) (out []store.StoredMessage, err error) {
	defer func() { s.metrics.Observe(store.OpMessagesFor, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("messages for", err)
	}
	now := time.Now()
	err = s.db.View(func(tx *bolt.Tx) error {
		out = []store.StoredMessage{}
		return walkArrivals(tx, bucketMsgAOR, aorKey(aor), func(m store.StoredMessage) bool {
			if !m.Expired(now) && slices.Contains(m.Pending, instance) {
				out = append(out, m)
			}
			return limit <= 0 || len(out) < limit
		})
	})
	if err != nil {
		return nil, fail("messages for", err)
	}
	return out, nil
}

// updateMessage runs change on message id inside one write transaction
// and stores what it left, or deletes the message when change says so.
// It returns ErrNotFound when the message is absent.
func (s *Store) updateMessage(id string, change func(m *store.StoredMessage) (write, remove bool)) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		m, ok, err := getMessage(tx, []byte(id))
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		write, remove := change(&m)
		switch {
		case remove:
			return removeMessage(tx, m)
		case write:
			return writeMessage(tx, m)
		}
		return nil
	})
}

// Acknowledge implements store.Messages in one write transaction (bbolt
// runs one at a time, so racing acknowledgements each see the other's
// change, and only the last deletes the message). An instance that is
// not pending changes nothing.
func (s *Store) Acknowledge(ctx context.Context, id, instance string) (remaining int, err error) {
	defer func() { s.metrics.Observe(store.OpAcknowledge, err) }()
	if err := s.begin(ctx); err != nil {
		return 0, fail("acknowledge", err)
	}
	err = s.updateMessage(id, func(m *store.StoredMessage) (bool, bool) {
		i := slices.Index(m.Pending, instance)
		remaining = len(m.Pending)
		if i < 0 {
			return false, false
		}
		m.Pending = slices.Delete(m.Pending, i, i+1)
		if !slices.Contains(m.Delivered, instance) {
			m.Delivered = append(m.Delivered, instance)
		}
		remaining = len(m.Pending)
		return true, remaining == 0
	})
	if errors.Is(err, store.ErrNotFound) {
		return 0, err
	}
	if err != nil {
		return 0, fail("acknowledge", err)
	}
	return remaining, nil
}

// AddPending implements store.Messages in one write transaction.
func (s *Store) AddPending(ctx context.Context, id, instance string) (err error) {
	defer func() { s.metrics.Observe(store.OpAddPending, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("add pending", err)
	}
	if instance == "" {
		return fmt.Errorf("embedded store: add pending %q: instance must not be empty", id)
	}
	err = s.updateMessage(id, func(m *store.StoredMessage) (bool, bool) {
		if slices.Contains(m.Pending, instance) || slices.Contains(m.Delivered, instance) {
			return false, false
		}
		m.Pending = append(m.Pending, instance)
		return true, false
	})
	if errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err != nil {
		return fail("add pending", err)
	}
	return nil
}

// CountAttempt implements store.Messages; ErrNotFound when the message is
// absent.
func (s *Store) CountAttempt(ctx context.Context, id string) (err error) {
	defer func() { s.metrics.Observe(store.OpCountAttempt, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("count attempt", err)
	}
	err = s.updateMessage(id, func(m *store.StoredMessage) (bool, bool) {
		m.Attempts++
		return true, false
	})
	if errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err != nil {
		return fail("count attempt", err)
	}
	return nil
}

// DeleteMessage implements store.Messages: the record and its index
// entries go in one write transaction, expired or not.
func (s *Store) DeleteMessage(ctx context.Context, id string) (err error) {
	defer func() { s.metrics.Observe(store.OpDeleteMessage, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("delete message", err)
	}
	err = s.updateMessage(id, func(*store.StoredMessage) (bool, bool) { return false, true })
	if errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err != nil {
		return fail("delete message", err)
	}
	return nil
}

// encodeLease is a lease's value: when it lapses, then its holder.
func encodeLease(node string, lapse time.Time) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(node)), uint64(lapse.UnixNano()))
	return append(v, node...)
}

// decodeLease reverses encodeLease; ok is false for a malformed value.
func decodeLease(v []byte) (node string, lapse int64, ok bool) {
	if len(v) < 8 {
		return "", 0, false
	}
	return string(v[8:]), int64(binary.BigEndian.Uint64(v[:8])), true
}

// Lease implements store.Messages in one write transaction: the lease is
// taken when absent or lapsed, renewed when node holds it. Lapse times
// come from this node's clock (an embedded store serves one node).
func (s *Store) Lease(ctx context.Context, key, node string, ttl time.Duration) (held bool, err error) {
	defer func() { s.metrics.Observe(store.OpLease, err) }()
	if err := s.begin(ctx); err != nil {
		return false, fail("lease", err)
	}
	if key == "" || node == "" {
		return false, errors.New("embedded store: lease: key and node must not be empty")
	}
	if ttl <= 0 {
		return false, fmt.Errorf("embedded store: lease %q: ttl %s must be positive", key, ttl)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		now := time.Now()
		holder, lapse, ok := decodeLease(b.Get([]byte(key)))
		if held = !ok || holder == node || now.UnixNano() >= lapse; !held {
			return nil
		}
		return b.Put([]byte(key), encodeLease(node, now.Add(ttl)))
	})
	if err != nil {
		return false, fail("lease", err)
	}
	return held, nil
}

// ReleaseLease implements store.Messages: the lease is deleted when node
// holds it (lapsed or not).
func (s *Store) ReleaseLease(ctx context.Context, key, node string) (err error) {
	defer func() { s.metrics.Observe(store.OpReleaseLease, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("release lease", err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		if holder, _, ok := decodeLease(b.Get([]byte(key))); ok && holder == node {
			return b.Delete([]byte(key))
		}
		return nil
	})
	if err != nil {
		return fail("release lease", err)
	}
	return nil
}

// sweepLeases deletes the leases lapsed at now. It writes only when one
// has lapsed (each write transaction costs an fsync).
func (s *Store) sweepLeases(now time.Time) error {
	lapsed := func(v []byte) bool {
		_, lapse, ok := decodeLease(v)
		return !ok || now.UnixNano() >= lapse
	}
	var keys [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
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
		b := tx.Bucket(bucketLeases)
		for _, k := range keys {
			// A Lease since the View may have renewed or retaken it.
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
