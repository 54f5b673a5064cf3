package redis

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/store"
)

// ErrNotReplicated: PutMessage stored the message on the primary, but
// fewer than Options.WaitReplicas replicas acknowledged it within
// Options.WaitTimeout. The put counts as failed (answer no 202); a retry
// of the same MESSAGE finds it stored (created false) and waits again.
var ErrNotReplicated = errors.New("redis store: message not acknowledged by enough replicas")

// messageData is the JSON kept in a stored message's "data" field: the
// fields that never change and need no raw bytes (AOR, sender and
// instances have fields of their own, see scripts.go).
type messageData struct {
	Received time.Time `json:"received"`
	Expires  time.Time `json:"expires"`
	Request  []byte    `json:"request,omitempty"`
}

// prepareMessage checks m for PutMessage and returns it with duplicate
// instances dropped, and pending instances that are also delivered.
func prepareMessage(m store.StoredMessage) (store.StoredMessage, error) {
	if m.ID == "" || m.AOR == "" || len(m.Pending) == 0 {
		return m, errors.New("redis store: put message: id, aor and pending must not be empty")
	}
	var pending, delivered []string
	for _, d := range m.Delivered {
		if d != "" && !slices.Contains(delivered, d) {
			delivered = append(delivered, d)
		}
	}
	for _, p := range m.Pending {
		if p == "" {
			return m, fmt.Errorf("redis store: put message %q: empty instance in pending", m.ID)
		}
		if !slices.Contains(pending, p) && !slices.Contains(delivered, p) {
			pending = append(pending, p)
		}
	}
	if len(pending) == 0 {
		return m, fmt.Errorf("redis store: put message %q: every pending instance is delivered", m.ID)
	}
	m.Pending, m.Delivered = pending, delivered
	return m, nil
}

// decodeMessage builds a stored message from its ID and hash fields.
func decodeMessage(id string, f map[string]string) (store.StoredMessage, error) {
	m := store.StoredMessage{ID: id, AOR: f["aor"], Sender: f["sender"]}
	var d messageData
	if err := json.Unmarshal([]byte(f["data"]), &d); err != nil {
		return m, fmt.Errorf("corrupt message %q: %w", id, err)
	}
	m.Received, m.Expires, m.Request = d.Received, d.Expires, d.Request
	if a := f["attempts"]; a != "" {
		n, err := strconv.Atoi(a)
		if err != nil {
			return m, fmt.Errorf("corrupt message %q: attempts %q", id, a)
		}
		m.Attempts = n
	}
	type device struct {
		instance string
		seq      int
	}
	var pending, delivered []device
	for k, v := range f {
		list := &pending
		inst, ok := strings.CutPrefix(k, "p:")
		if !ok {
			if inst, ok = strings.CutPrefix(k, "d:"); !ok {
				continue
			}
			list = &delivered
		}
		seq, err := strconv.Atoi(v)
		if err != nil {
			return m, fmt.Errorf("corrupt message %q: field %q", id, k)
		}
		*list = append(*list, device{inst, seq})
	}
	ordered := func(ds []device) []string {
		if len(ds) == 0 {
			return nil
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i].seq < ds[j].seq })
		out := make([]string, len(ds))
		for i, d := range ds {
			out[i] = d.instance
		}
		return out
	}
	m.Pending, m.Delivered = ordered(pending), ordered(delivered)
	return m, nil
}

// fieldMap turns a flat {field, value, ...} script reply into a map.
func fieldMap(v any) map[string]string {
	flat, _ := v.([]any)
	f := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := str(flat[i])
		f[k], _ = str(flat[i+1])
	}
	return f
}

// pipeliner is what runs PutMessage's write and WAIT on one connection: the
// store's client, or in a Cluster the client of the slot's primary.
type pipeliner interface {
	Pipeline() goredis.Pipeliner
}

// PutMessage implements store.Messages with one script on the {msg} slot:
// when the ID is free it writes the message hash and its three index
// entries, atomically, so that of racing duplicates exactly one is
// stored. One round trip.
//
// With Options.WaitReplicas the script and WAIT go in one pipeline on one
// connection (in a Cluster, to the slot's primary), still one round trip,
// and the put fails with ErrNotReplicated unless enough replicas
// acknowledged — for a duplicate too, since the first copy may not have
// reached them yet.
//
// Each call carries a random nonce kept in the message: when go-redis
// retries a put whose reply was lost, the retry finds its own nonce and
// still reports created. Duplicate instances are stored once; an
// instance both pending and delivered counts as delivered.
func (s *Store) PutMessage(ctx context.Context, m store.StoredMessage) (created bool, err error) {
	defer func() { s.metrics.Observe(store.OpPutMessage, err) }()
	if err := s.begin(ctx); err != nil {
		return false, fail("put message", err)
	}
	if m, err = prepareMessage(m); err != nil {
		return false, err
	}
	data, err := json.Marshal(messageData{Received: m.Received, Expires: m.Expires, Request: m.Request})
	if err != nil {
		return false, fail("put message", err)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return false, fail("put message", err)
	}
	keys := []string{s.keys.msg(m.ID), s.keys.msgIndex(), s.keys.msgExpiry(), s.keys.msgAOR(m.AOR)}
	args := make([]any, 0, 9+len(m.Pending)+len(m.Delivered))
	args = append(args, m.ID, m.AOR, m.Sender, data, ms(m.Received), msUntil(m.Expires), m.Attempts, nonce, len(m.Pending))
	for _, p := range m.Pending {
		args = append(args, p)
	}
	for _, d := range m.Delivered {
		args = append(args, d)
	}
	if s.waitReplicas <= 0 {
		n, err := putMessageScript.Run(ctx, s.client, keys, args...).Int()
		if err != nil {
			return false, fail("put message", err)
		}
		return n == 1, nil
	}
	n, acked, err := s.putAndWait(ctx, keys, args)
	if err != nil {
		return false, fail("put message", err)
	}
	if acked < int64(s.waitReplicas) {
		return false, fmt.Errorf("redis store: put message %q: %w (%d of %d within %s)",
			m.ID, ErrNotReplicated, acked, s.waitReplicas, s.waitTimeout)
	}
	return n == 1, nil
}

// putAndWait runs putMessageScript and WAIT in one pipeline on one
// connection and returns the script's reply and the replicas that
// acknowledged. Only after a server start (or SCRIPT FLUSH) does the
// EVALSHA find no script: the pipeline is then sent again with EVAL.
func (s *Store) putAndWait(ctx context.Context, keys []string, args []any) (int64, int64, error) {
	var conn pipeliner = s.client
	if cc, ok := s.client.(*goredis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			return 0, 0, err
		}
		conn = node
	}
	run := func(eval bool) (*goredis.Cmd, *goredis.IntCmd) {
		p := conn.Pipeline()
		var put *goredis.Cmd
		if eval {
			put = putMessageScript.Eval(ctx, p, keys, args...)
		} else {
			put = putMessageScript.EvalSha(ctx, p, keys, args...)
		}
		// A Pipeliner has no Wait method: WAIT <replicas> <timeout ms>.
		wait := goredis.NewIntCmd(ctx, "wait", s.waitReplicas, s.waitTimeout.Milliseconds())
		_ = p.Process(ctx, wait)
		_, _ = p.Exec(ctx) // errors are read from each command
		return put, wait
	}
	put, wait := run(false)
	if goredis.HasErrorPrefix(put.Err(), "NOSCRIPT") {
		put, wait = run(true)
	}
	n, err := put.Int64()
	if err != nil {
		return 0, 0, err
	}
	acked, err := wait.Result()
	if err != nil {
		return n, 0, fmt.Errorf("wait: %w", err)
	}
	return n, acked, nil
}

// Message implements store.Messages with HGETALL of the message's hash.
func (s *Store) Message(ctx context.Context, id string) (m store.StoredMessage, err error) {
	defer func() { s.metrics.Observe(store.OpMessage, err) }()
	if err := s.begin(ctx); err != nil {
		return m, fail("message", err)
	}
	f, err := s.client.HGetAll(ctx, s.keys.msg(id)).Result()
	if err != nil {
		return m, fail("message", err)
	}
	if f["data"] == "" {
		return m, store.ErrNotFound
	}
	m, err = decodeMessage(id, f)
	if err != nil {
		return store.StoredMessage{}, fail("message", err)
	}
	return m, nil
}

// listMessages runs listMessagesScript and returns the messages sorted in
// arrival order and cut at limit.
func (s *Store) listMessages(ctx context.Context, aor string, expired bool, limit int, instance string) ([]store.StoredMessage, error) {
	keys := []string{s.keys.msgIndex(), s.keys.msgExpiry()}
	if aor != "" && !s.oneTrip {
		// In a Cluster every registration asks for its device's messages
		// (its put event cannot say there are none: see putOneScript),
		// and almost always there is none: Redis drops the AOR's index
		// with its last member, and a plain EXISTS costs the server a
		// small part of what a script call does. A message stored just
		// after it is delivered by its own attempt, as if stored after
		// the script.
		n, err := s.client.Exists(ctx, s.keys.msgAOR(aor)).Result()
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return []store.StoredMessage{}, nil
		}
	}
	if aor != "" {
		keys = append(keys, s.keys.msgAOR(aor))
	}
	flag := "0"
	if expired {
		flag = "1"
	}
	res, err := listMessagesScript.Run(ctx, s.client, keys,
		ms(time.Now()), flag, max(limit, 0), s.keys.msgPrefix(), instance).Slice()
	if err != nil {
		return nil, err
	}
	out := make([]store.StoredMessage, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		id, _ := str(res[i])
		m, err := decodeMessage(id, fieldMap(res[i+1]))
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	store.SortMessages(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// ListMessages implements store.Messages with one script on the {msg}
// slot: it walks the AOR's index, or the arrival index (live messages) or
// the due part of the expiry index (expired ones), reads the matching
// messages and stops at the limit. Expiry is compared to the millisecond
// with this node's clock.
func (s *Store) ListMessages(ctx context.Context, f store.MessageFilter) (out []store.StoredMessage, err error) {
	defer func() { s.metrics.Observe(store.OpListMessages, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("list messages", err)
	}
	out, err = s.listMessages(ctx, f.AOR, f.Expired, f.Limit, "")
	if err != nil {
		return nil, fail("list messages", err)
	}
	return out, nil
}

// MessagesFor implements store.Messages with one script on the {msg} slot
// that walks the AOR's index and reads the live messages whose pending
// devices include instance.
func (s *Store) MessagesFor(ctx context.Context, aor, instance string, limit int) (out []store.StoredMessage, err error) {
	defer func() { s.metrics.Observe(store.OpMessagesFor, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("messages for", err)
	}
	if aor == "" || instance == "" {
		return []store.StoredMessage{}, nil // no message is stored for either
	}
	out, err = s.listMessages(ctx, aor, false, limit, instance)
	if err != nil {
		return nil, fail("messages for", err)
	}
	return out, nil
}

// Acknowledge implements store.Messages with one script on the {msg} slot:
// the device moves from pending to delivered, and the message and its
// index entries are deleted with the last one, atomically — of racing
// acknowledgements each sees the other's, exactly one deletes.
func (s *Store) Acknowledge(ctx context.Context, id, instance string) (remaining int, err error) {
	defer func() { s.metrics.Observe(store.OpAcknowledge, err) }()
	if err := s.begin(ctx); err != nil {
		return 0, fail("acknowledge", err)
	}
	n, err := acknowledgeScript.Run(ctx, s.client, []string{s.keys.msg(id), s.keys.msgIndex(), s.keys.msgExpiry()},
		id, s.keys.msgAORPrefix(), instance).Int()
	if err != nil {
		return 0, fail("acknowledge", err)
	}
	if n < 0 {
		return 0, store.ErrNotFound
	}
	return n, nil
}

// AddPending implements store.Messages with one script on the message's
// hash.
func (s *Store) AddPending(ctx context.Context, id, instance string) (err error) {
	defer func() { s.metrics.Observe(store.OpAddPending, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("add pending", err)
	}
	if instance == "" {
		return fmt.Errorf("redis store: add pending %q: instance must not be empty", id)
	}
	n, err := addPendingScript.Run(ctx, s.client, []string{s.keys.msg(id)}, instance).Int()
	if err != nil {
		return fail("add pending", err)
	}
	if n < 0 {
		return store.ErrNotFound
	}
	return nil
}

// CountAttempt implements store.Messages with one script (HINCRBY while
// the message exists); ErrNotFound when it is absent.
func (s *Store) CountAttempt(ctx context.Context, id string) (err error) {
	defer func() { s.metrics.Observe(store.OpCountAttempt, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("count attempt", err)
	}
	n, err := countAttemptScript.Run(ctx, s.client, []string{s.keys.msg(id)}).Int()
	if err != nil {
		return fail("count attempt", err)
	}
	if n < 0 {
		return store.ErrNotFound
	}
	return nil
}

// DeleteMessage implements store.Messages with one script on the {msg}
// slot: the hash and its index entries go together, expired or not.
func (s *Store) DeleteMessage(ctx context.Context, id string) (err error) {
	defer func() { s.metrics.Observe(store.OpDeleteMessage, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("delete message", err)
	}
	n, err := deleteMessageScript.Run(ctx, s.client, []string{s.keys.msg(id), s.keys.msgIndex(), s.keys.msgExpiry()},
		id, s.keys.msgAORPrefix()).Int()
	if err != nil {
		return fail("delete message", err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// Lease implements store.Messages with one script on <prefix>lease:<key>:
// SET PX when the key is free, PX renewal when node holds it, nothing
// otherwise. The server's clock ends a lease, so nodes' clocks need not
// agree on it.
func (s *Store) Lease(ctx context.Context, key, node string, ttl time.Duration) (held bool, err error) {
	defer func() { s.metrics.Observe(store.OpLease, err) }()
	if err := s.begin(ctx); err != nil {
		return false, fail("lease", err)
	}
	if key == "" || node == "" {
		return false, errors.New("redis store: lease: key and node must not be empty")
	}
	if ttl <= 0 {
		return false, fmt.Errorf("redis store: lease %q: ttl %s must be positive", key, ttl)
	}
	// PX counts milliseconds: round a sub-millisecond ttl up, not to 0.
	n, err := leaseScript.Run(ctx, s.client, []string{s.keys.lease(key)}, node,
		max(ttl, time.Millisecond).Milliseconds()).Int()
	if err != nil {
		return false, fail("lease", err)
	}
	return n == 1, nil
}

// ReleaseLease implements store.Messages with a compare-and-delete script.
func (s *Store) ReleaseLease(ctx context.Context, key, node string) (err error) {
	defer func() { s.metrics.Observe(store.OpReleaseLease, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("release lease", err)
	}
	if err := releaseLeaseScript.Run(ctx, s.client, []string{s.keys.lease(key)}, node).Err(); err != nil {
		return fail("release lease", err)
	}
	return nil
}
