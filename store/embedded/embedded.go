package embedded

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/sipwake/sipwake/store"
)

// Defaults applied by Open to zero Options fields.
const (
	// DefaultSweepInterval is how often expired bindings are deleted.
	DefaultSweepInterval = 30 * time.Second
	// DefaultLockTimeout is how long Open waits for the file lock.
	DefaultLockTimeout = 5 * time.Second
)

// sweepBatch caps the bindings one sweeper transaction deletes, so that a
// large backlog does not hold the write lock for long.
const sweepBatch = 1000

var (
	bucketBindings = []byte("bindings")
	bucketTokens   = []byte("tokens")
	bucketExpiry   = []byte("expiry")
	bucketSecrets  = []byte("secrets")
	// bucketHeld and bucketHeldExpiry keep held calls and their forget
	// index (see held.go); bucketNodes the node heartbeats.
	bucketHeld       = []byte("held")
	bucketHeldExpiry = []byte("heldexpiry")
	bucketNodes      = []byte("nodes")
	// bucketMessages, bucketMsgAOR, bucketMsgArrival and bucketMsgExpiry
	// keep stored messages and their indexes, bucketLeases the delivery
	// leases (see messages.go).
	bucketMessages   = []byte("messages")
	bucketMsgAOR     = []byte("msgaor")
	bucketMsgArrival = []byte("msgarrival")
	bucketMsgExpiry  = []byte("msgexpiry")
	bucketLeases     = []byte("leases")
	// bucketRegs, bucketRegDue, bucketRegAOR and bucketRegStates keep
	// registrations, their schedule, their AOR index and the per-state
	// counts; bucketAccounts the on-behalf accounts (see registrations.go).
	bucketRegs      = []byte("regs")
	bucketRegDue    = []byte("regdue")
	bucketRegAOR    = []byte("regaor")
	bucketRegStates = []byte("regstates")
	bucketAccounts  = []byte("accounts")
)

// buckets lists every bucket Open creates.
var buckets = [][]byte{bucketBindings, bucketTokens, bucketExpiry, bucketSecrets,
	bucketHeld, bucketHeldExpiry, bucketNodes,
	bucketMessages, bucketMsgAOR, bucketMsgArrival, bucketMsgExpiry, bucketLeases,
	bucketRegs, bucketRegDue, bucketRegAOR, bucketRegStates, bucketAccounts}

// Options configures Open.
type Options struct {
	// Path is the database file; its directory is created when missing.
	// Required.
	Path string
	// NodeID names this node in binding-change events. Required.
	NodeID string
	// Registerer receives the store's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// SweepInterval is how often the background sweeper deletes expired
	// bindings (expired bindings are never returned, swept or not).
	// Zero means DefaultSweepInterval; negative disables the sweeper.
	SweepInterval time.Duration
	// LockTimeout bounds the wait for the file lock held by another
	// process (or another Open of the same file). Zero means
	// DefaultLockTimeout.
	LockTimeout time.Duration
}

// Store is the bbolt-backed store.Store for a single node. It is safe for
// concurrent use.
type Store struct {
	db      *bolt.DB
	node    string
	metrics *metrics
	hub     *hub

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	stop      chan struct{}
	swept     chan struct{}
}

var _ store.Store = (*Store)(nil)

// Open opens (or creates) the database file at opt.Path. It fails with a
// clear error after opt.LockTimeout when another process holds the file.
func Open(ctx context.Context, opt Options) (*Store, error) {
	if opt.Path == "" {
		return nil, errors.New("embedded store: open: path is required")
	}
	if opt.NodeID == "" {
		return nil, errors.New("embedded store: open: node id is required")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embedded store: open: %w", err)
	}
	lockTimeout := opt.LockTimeout
	if lockTimeout <= 0 {
		lockTimeout = DefaultLockTimeout
	}
	sweep := opt.SweepInterval
	if sweep == 0 {
		sweep = DefaultSweepInterval
	}
	m, err := newMetrics(opt.Registerer)
	if err != nil {
		return nil, fmt.Errorf("embedded store: open: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(opt.Path), 0o750); err != nil {
		return nil, fmt.Errorf("embedded store: open: create directory: %w", err)
	}
	// NoSync stays false: every write transaction is fsynced before it
	// returns, which PutMessage's durability (and PutBinding's) rests on.
	db, err := bolt.Open(opt.Path, 0o600, &bolt.Options{Timeout: lockTimeout, NoSync: false})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("embedded store: open %s: file is locked by another process (waited %s; the embedded store serves one node only): %w",
			opt.Path, lockTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded store: open %s: %w", opt.Path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range buckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded store: open %s: create buckets: %w", opt.Path, err)
	}
	s := &Store{
		db:      db,
		node:    opt.NodeID,
		metrics: m,
		hub:     newHub(m.Dropped),
		stop:    make(chan struct{}),
		swept:   make(chan struct{}),
	}
	if sweep > 0 {
		go s.sweeper(sweep)
	} else {
		close(s.swept)
	}
	return s, nil
}

// begin checks that the store is open and ctx is live.
func (s *Store) begin(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// fail wraps err with the operation, mapping bbolt's closed error.
func fail(what string, err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		err = store.ErrClosed
	}
	return fmt.Errorf("embedded store: %s: %w", what, err)
}

// decode reads a stored binding; AOR and Instance come from the key so that
// they survive byte for byte (JSON would rewrite invalid UTF-8).
func decode(k, v []byte) (store.Binding, error) {
	var b store.Binding
	aor, instance, ok := splitBindingKey(k)
	if !ok {
		return b, fmt.Errorf("corrupt binding key %q", k)
	}
	if err := json.Unmarshal(v, &b); err != nil {
		return b, fmt.Errorf("corrupt binding %q: %w", k, err)
	}
	b.AOR, b.Instance = aor, instance
	return b, nil
}

type entry struct {
	key []byte
	b   store.Binding
}

// aorEntries returns every stored binding of aor, expired ones included.
func aorEntries(tx *bolt.Tx, aor string) ([]entry, error) {
	prefix := aorKey(aor)
	var out []entry
	c := tx.Bucket(bucketBindings).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		b, err := decode(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, entry{key: bytes.Clone(k), b: b})
	}
	return out, nil
}

// remove deletes a binding and its index entries inside tx.
func remove(tx *bolt.Tx, e entry) error {
	if err := tx.Bucket(bucketBindings).Delete(e.key); err != nil {
		return err
	}
	if err := tx.Bucket(bucketExpiry).Delete(expiryKey(e.b.Expires, e.key)); err != nil {
		return err
	}
	return dropToken(tx, e.b.Token, e.key)
}

// dropToken deletes the token index entry when it still points at key.
func dropToken(tx *bolt.Tx, token string, key []byte) error {
	if token == "" {
		return nil
	}
	tk := tx.Bucket(bucketTokens)
	if bytes.Equal(tk.Get([]byte(token)), key) {
		return tk.Delete([]byte(token))
	}
	return nil
}

// PutBinding implements store.Bindings in one bbolt write transaction.
func (s *Store) PutBinding(ctx context.Context, b store.Binding, max int) (replaced bool, err error) {
	defer func() { s.metrics.Observe(store.OpPutBinding, err) }()
	if err := s.begin(ctx); err != nil {
		return false, fail("put binding", err)
	}
	if b.AOR == "" || b.Instance == "" {
		return false, errors.New("embedded store: put binding: aor and instance must not be empty")
	}
	val, err := json.Marshal(b)
	if err != nil {
		return false, fail("put binding", err)
	}
	now := time.Now()
	key := bindingKey(b.AOR, b.Instance)
	err = s.db.Update(func(tx *bolt.Tx) error {
		replaced = false
		entries, err := aorEntries(tx, b.AOR)
		if err != nil {
			return err
		}
		var stale, dropped []entry
		others := 0
		for _, e := range entries {
			switch {
			case !e.b.Live(now):
				stale = append(stale, e)
			case e.b.Instance == b.Instance:
				replaced = true
				stale = append(stale, e)
			case b.Token != "" && e.b.Token == b.Token:
				dropped = append(dropped, e)
			default:
				others++
			}
		}
		if !replaced && max > 0 && others+1 > max {
			return store.ErrTooManyBindings
		}
		for _, e := range append(stale, dropped...) {
			if err := remove(tx, e); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketBindings).Put(key, val); err != nil {
			return err
		}
		if err := tx.Bucket(bucketExpiry).Put(expiryKey(b.Expires, key), nil); err != nil {
			return err
		}
		if b.Token != "" {
			if err := tx.Bucket(bucketTokens).Put([]byte(b.Token), key); err != nil {
				return err
			}
		}
		events := make([]store.Event, 0, len(dropped)+1)
		for _, e := range dropped {
			events = append(events, s.event(store.EventBindingDeleted, e.b.AOR, e.b.Instance))
		}
		events = append(events, s.event(store.EventBindingPut, b.AOR, b.Instance))
		tx.OnCommit(func() { s.hub.publish(events...) })
		return nil
	})
	if errors.Is(err, store.ErrTooManyBindings) {
		return false, err
	}
	if err != nil {
		return false, fail("put binding", err)
	}
	return replaced, nil
}

func (s *Store) event(kind store.EventKind, aor, instance string) store.Event {
	return store.Event{Kind: kind, AOR: aor, Instance: instance, Node: s.node}
}

// DeleteBinding implements store.Bindings.
func (s *Store) DeleteBinding(ctx context.Context, aor, instance string) (err error) {
	defer func() { s.metrics.Observe(store.OpDeleteBinding, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("delete binding", err)
	}
	key := bindingKey(aor, instance)
	now := time.Now()
	live := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketBindings).Get(key)
		if v == nil {
			return nil
		}
		b, err := decode(key, v)
		if err != nil {
			return err
		}
		if err := remove(tx, entry{key: key, b: b}); err != nil {
			return err
		}
		// An expired binding is removed too, but readers saw it gone.
		if live = b.Live(now); live {
			ev := s.event(store.EventBindingDeleted, aor, instance)
			tx.OnCommit(func() { s.hub.publish(ev) })
		}
		return nil
	})
	if err != nil {
		return fail("delete binding", err)
	}
	if !live {
		return store.ErrNotFound
	}
	return nil
}

// DeleteAOR implements store.Bindings.
func (s *Store) DeleteAOR(ctx context.Context, aor string) (n int, err error) {
	defer func() { s.metrics.Observe(store.OpDeleteAOR, err) }()
	if err := s.begin(ctx); err != nil {
		return 0, fail("delete aor", err)
	}
	now := time.Now()
	err = s.db.Update(func(tx *bolt.Tx) error {
		n = 0
		entries, err := aorEntries(tx, aor)
		if err != nil {
			return err
		}
		var events []store.Event
		for _, e := range entries {
			if err := remove(tx, e); err != nil {
				return err
			}
			if e.b.Live(now) {
				n++
				events = append(events, s.event(store.EventBindingDeleted, aor, e.b.Instance))
			}
		}
		if len(events) > 0 {
			tx.OnCommit(func() { s.hub.publish(events...) })
		}
		return nil
	})
	if err != nil {
		return 0, fail("delete aor", err)
	}
	return n, nil
}

// Bindings implements store.Bindings.
func (s *Store) Bindings(ctx context.Context, aor string) (out []store.Binding, err error) {
	defer func() { s.metrics.Observe(store.OpBindings, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("bindings", err)
	}
	now := time.Now()
	err = s.db.View(func(tx *bolt.Tx) error {
		entries, err := aorEntries(tx, aor)
		if err != nil {
			return err
		}
		out = make([]store.Binding, 0, len(entries))
		for _, e := range entries {
			if e.b.Live(now) {
				out = append(out, e.b)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fail("bindings", err)
	}
	store.SortOldestFirst(out)
	return out, nil
}

// BindingByToken implements store.Bindings.
func (s *Store) BindingByToken(ctx context.Context, token string) (b store.Binding, err error) {
	defer func() { s.metrics.Observe(store.OpBindingByToken, err) }()
	if err := s.begin(ctx); err != nil {
		return b, fail("binding by token", err)
	}
	if token == "" {
		return b, store.ErrNotFound
	}
	now := time.Now()
	found := false
	err = s.db.View(func(tx *bolt.Tx) error {
		key := tx.Bucket(bucketTokens).Get([]byte(token))
		if key == nil {
			return nil
		}
		v := tx.Bucket(bucketBindings).Get(key)
		if v == nil {
			return nil
		}
		var err error
		if b, err = decode(key, v); err != nil {
			return err
		}
		found = b.Token == token && b.Live(now)
		return nil
	})
	if err != nil {
		return store.Binding{}, fail("binding by token", err)
	}
	if !found {
		return store.Binding{}, store.ErrNotFound
	}
	return b, nil
}

// ListBindings implements store.Bindings. The bucket order is AOR then
// instance (see aorKey), so it reads no more than it returns plus the
// expired bindings it skips.
func (s *Store) ListBindings(ctx context.Context, opt store.ListOptions) (out []store.Binding, err error) {
	defer func() { s.metrics.Observe(store.OpListBindings, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("list bindings", err)
	}
	now := time.Now()
	var prefix []byte
	if opt.AOR != "" {
		prefix = aorKey(opt.AOR)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		out = []store.Binding{}
		c := tx.Bucket(bucketBindings).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if opt.Limit > 0 && len(out) >= opt.Limit {
				return nil
			}
			b, err := decode(k, v)
			if err != nil {
				return err
			}
			if b.Live(now) {
				out = append(out, b)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fail("list bindings", err)
	}
	return out, nil
}

// CountBindings implements store.Bindings with one read transaction
// over the bindings bucket, each binding decoded into its expiry and
// provider only.
func (s *Store) CountBindings(ctx context.Context) (counts map[string]int, err error) {
	defer func() { s.metrics.Observe(store.OpCountBindings, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("count bindings", err)
	}
	now := time.Now()
	err = s.db.View(func(tx *bolt.Tx) error {
		counts = map[string]int{}
		return tx.Bucket(bucketBindings).ForEach(func(k, v []byte) error {
			var b struct {
				Expires time.Time `json:"expires"`
				Push    *struct {
					Provider string `json:"provider"`
				} `json:"push"`
			}
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("corrupt binding %q: %w", k, err)
			}
			if !now.Before(b.Expires) {
				return nil
			}
			p := ""
			if b.Push != nil {
				p = b.Push.Provider
			}
			counts[p]++
			return nil
		})
	})
	if err != nil {
		return nil, fail("count bindings", err)
	}
	return counts, nil
}

// ClearPush implements store.Bindings in one bbolt write transaction: the
// binding is read, compared and rewritten without its push target while
// no other writer runs. The token and expiry indexes do not change.
func (s *Store) ClearPush(ctx context.Context, aor, instance, token string) (cleared bool, err error) {
	defer func() { s.metrics.Observe(store.OpClearPush, err) }()
	if err := s.begin(ctx); err != nil {
		return false, fail("clear push", err)
	}
	key := bindingKey(aor, instance)
	now := time.Now()
	found := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		found, cleared = false, false
		bk := tx.Bucket(bucketBindings)
		v := bk.Get(key)
		if v == nil {
			return nil
		}
		b, err := decode(key, v)
		if err != nil {
			return err
		}
		if found = b.Live(now); !found {
			return nil
		}
		if token == "" || b.Push == nil || b.Push.Token != token {
			return nil
		}
		b.Push = nil
		val, err := json.Marshal(b)
		if err != nil {
			return err
		}
		if err := bk.Put(key, val); err != nil {
			return err
		}
		cleared = true
		ev := s.event(store.EventBindingPut, aor, instance)
		tx.OnCommit(func() { s.hub.publish(ev) })
		return nil
	})
	if err != nil {
		return false, fail("clear push", err)
	}
	if !found {
		return false, store.ErrNotFound
	}
	return cleared, nil
}

// Subscribe implements store.Events. Events reach subscribers of this
// process only. Each subscriber has a buffer of SubscriberBuffer events;
// when it is full, further events to that subscriber are dropped and
// counted in sipwake_store_events_dropped_total, so a slow subscriber never
// delays a writer.
func (s *Store) Subscribe(ctx context.Context) (ch <-chan store.Event, err error) {
	defer func() { s.metrics.Observe(store.OpSubscribe, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("subscribe", err)
	}
	ch, err = s.hub.subscribe(ctx)
	if err != nil {
		return nil, fail("subscribe", err)
	}
	return ch, nil
}

// Publish implements store.Events: e reaches every subscriber of this
// process (the only node an embedded store serves), as given, with the
// same buffering as the events of writes.
func (s *Store) Publish(ctx context.Context, e store.Event) (err error) {
	defer func() { s.metrics.Observe(store.OpPublish, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("publish", err)
	}
	s.hub.publish(e)
	return nil
}

// Secret implements store.Store: it reads the secret from the "secrets"
// bucket or, when absent, stores n fresh random bytes there, in one write
// transaction (bbolt runs one at a time, so concurrent first calls agree).
// The file is fsynced before the new secret is returned.
func (s *Store) Secret(ctx context.Context, name string, n int) (secret []byte, err error) {
	defer func() { s.metrics.Observe(store.OpSecret, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("secret", err)
	}
	if name == "" {
		return nil, errors.New("embedded store: secret: name must not be empty")
	}
	if n <= 0 {
		return nil, fmt.Errorf("embedded store: secret %q: size %d must be positive", name, n)
	}
	fresh := make([]byte, n)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fail("secret", err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSecrets)
		if v := b.Get([]byte(name)); v != nil {
			secret = bytes.Clone(v) // v is only valid inside the transaction
			return nil
		}
		secret = fresh
		return b.Put([]byte(name), fresh)
	})
	if err != nil {
		return nil, fail("secret", err)
	}
	return secret, nil
}

// Ping implements store.Store: it checks the file can be read.
func (s *Store) Ping(ctx context.Context) (err error) {
	defer func() { s.metrics.Observe(store.OpPing, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("ping", err)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketBindings) == nil {
			return errors.New("bindings bucket missing")
		}
		return nil
	})
	if err != nil {
		return fail("ping", err)
	}
	return nil
}

// Close stops the sweeper, closes every subscription and the file.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.swept
		s.hub.close()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("embedded store: close: %w", err)
			s.metrics.Observe(store.OpClose, err)
		}
	})
	return s.closeErr
}

// sweeper deletes expired bindings, forgotten held calls, lapsed
// heartbeats and lapsed leases every interval until Close.
func (s *Store) sweeper(interval time.Duration) {
	defer close(s.swept)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			_, err := s.sweep(now)
			s.metrics.Observe(opSweep, err)
		}
	}
}

// sweep deletes the bindings expired at now, the held calls forgotten at
// now, the lapsed node heartbeats and the lapsed leases, and returns how
// many bindings and held calls it deleted. Expiry is not a change made by
// a node: no event. Stored messages are not touched: an expired message
// stays until the caller's sweeper deletes it (store.Messages).
func (s *Store) sweep(now time.Time) (int, error) {
	n, err := s.sweepBindings(now)
	if err != nil {
		return n, err
	}
	h, err := s.sweepHeld(now)
	n += h
	if err != nil {
		return n, err
	}
	if err := s.sweepNodes(now); err != nil {
		return n, err
	}
	return n, s.sweepLeases(now)
}

// sweepBindings deletes the bindings expired at now, in batches, and
// returns how many it deleted.
func (s *Store) sweepBindings(now time.Time) (int, error) {
	total := 0
	for {
		n, more := 0, false
		err := s.db.Update(func(tx *bolt.Tx) error {
			n, more = 0, false
			var idx [][]byte
			c := tx.Bucket(bucketExpiry).Cursor()
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
			bk, ek := tx.Bucket(bucketBindings), tx.Bucket(bucketExpiry)
			for _, k := range idx {
				// The index entry goes in every case; the binding only
				// when it has really expired (the index may be stale).
				if err := ek.Delete(k); err != nil {
					return err
				}
				_, key, ok := splitExpiryKey(k)
				if !ok {
					continue
				}
				v := bk.Get(key)
				if v == nil {
					continue
				}
				b, err := decode(key, v)
				if err != nil || b.Live(now) {
					continue
				}
				if err := remove(tx, entry{key: key, b: b}); err != nil {
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
