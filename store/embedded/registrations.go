package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sipwake/sipwake/store"
)

// Registrations live in four buckets, accounts in a fifth (see doc.go):
//
//	regs       token -> 8-byte big-endian unix nanos of its schedule entry,
//	           uvarint-prefixed AOR, Instance and State, then the record as JSON
//	regdue     8-byte big-endian unix nanos of the schedule entry + token -> empty
//	regaor     aorKey(AOR) + token -> empty
//	regstates  's' + state -> 8-byte big-endian count of records in that state
//	accounts   AOR -> the account as JSON (without its AOR)
//
// A cursor on regdue walks the schedule earliest first (ties by token), so
// ClaimDue reads only the entries it returns (and stale ones it drops); a
// cursor on regaor walks records by AOR then token, as ListRegistrations
// returns them. A record's token (the key), AOR, Instance and State are
// kept byte for byte. The schedule time is kept in the record too, so that
// a write or a delete finds the record's index entry without a scan.

// stateKey is the regstates key of state: bbolt refuses empty keys, and
// "" is a state like any other.
func stateKey(state string) []byte { return append([]byte{'s'}, state...) }

// nanos returns t as unix nanoseconds for an index key, clamped to what
// the key can order: before 1970 is 0, after 2262 the largest int64.
func nanos(t time.Time) uint64 {
	switch {
	case t.Unix() < 0:
		return 0
	case t.Unix() >= math.MaxInt64/int64(time.Second)-1:
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

// dueKey is the regdue key of token scheduled at n (unix nanos).
func dueKey(n uint64, token string) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(token)), n)
	return append(k, token...)
}

// regAORKey is the regaor key of a record.
func regAORKey(aor, token string) []byte { return append(aorKey(aor), token...) }

// encodeRegistration returns the stored form of r scheduled at sched:
// the schedule time, uvarint length and bytes of AOR, Instance and State,
// then r as JSON with those and the Token left empty (the key and the
// prefix carry them).
func encodeRegistration(r store.Registration, sched uint64) ([]byte, error) {
	aor, inst, state := r.AOR, r.Instance, r.State
	r.Token, r.AOR, r.Instance, r.State = "", "", "", ""
	data, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	v := make([]byte, 0, 8+3*binary.MaxVarintLen64+len(aor)+len(inst)+len(state)+len(data))
	v = binary.BigEndian.AppendUint64(v, sched)
	for _, f := range []string{aor, inst, state} {
		v = binary.AppendUvarint(v, uint64(len(f)))
		v = append(v, f...)
	}
	return append(v, data...), nil
}

// decodeRegistration reverses encodeRegistration for the record stored
// under token.
func decodeRegistration(token, v []byte) (r store.Registration, sched uint64, err error) {
	if len(v) < 8 {
		return r, 0, fmt.Errorf("corrupt registration %q", token)
	}
	sched, v = binary.BigEndian.Uint64(v[:8]), v[8:]
	var fields [3]string
	for i := range fields {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) {
			return r, 0, fmt.Errorf("corrupt registration %q", token)
		}
		fields[i] = string(v[k : k+int(n)])
		v = v[k+int(n):]
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, 0, fmt.Errorf("corrupt registration %q: %w", token, err)
	}
	r.Token, r.AOR, r.Instance, r.State = string(token), fields[0], fields[1], fields[2]
	return r, sched, nil
}

// getRegistration returns the record of token as stored inside tx and its
// schedule time; ok is false when there is none.
func getRegistration(tx *bolt.Tx, token []byte) (r store.Registration, sched uint64, ok bool, err error) {
	v := tx.Bucket(bucketRegs).Get(token)
	if v == nil {
		return r, 0, false, nil
	}
	r, sched, err = decodeRegistration(token, v)
	return r, sched, err == nil, err
}

// countState adds delta to the number of records in state inside tx; a
// count that reaches 0 is deleted.
func countState(tx *bolt.Tx, state string, delta int64) error {
	b, k := tx.Bucket(bucketRegStates), stateKey(state)
	var n int64
	if v := b.Get(k); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	if n += delta; n <= 0 {
		return b.Delete(k)
	}
	return b.Put(k, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

// insertRegistration stores r scheduled at sched, its index entries and
// its state count inside tx (no record of r.Token may be stored).
func insertRegistration(tx *bolt.Tx, r store.Registration, sched uint64) error {
	v, err := encodeRegistration(r, sched)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketRegs).Put([]byte(r.Token), v); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRegDue).Put(dueKey(sched, r.Token), nil); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRegAOR).Put(regAORKey(r.AOR, r.Token), nil); err != nil {
		return err
	}
	return countState(tx, r.State, 1)
}

// removeRegistration deletes r (scheduled at sched), its index entries
// and its share of the state count inside tx.
func removeRegistration(tx *bolt.Tx, r store.Registration, sched uint64) error {
	if err := tx.Bucket(bucketRegDue).Delete(dueKey(sched, r.Token)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRegAOR).Delete(regAORKey(r.AOR, r.Token)); err != nil {
		return err
	}
	if err := countState(tx, r.State, -1); err != nil {
		return err
	}
	return tx.Bucket(bucketRegs).Delete([]byte(r.Token))
}

// PutRegistration implements store.Registrations in one write
// transaction: the Gen is compared (with check) and the record, its
// schedule entry (at r.Due), its AOR index entry and the state counts are
// replaced together, so of racing conditional writers exactly one wins.
func (s *Store) PutRegistration(ctx context.Context, r store.Registration, check bool) (gen uint64, err error) {
	defer func() { s.metrics.Observe(store.OpPutRegistration, err) }()
	if err := s.begin(ctx); err != nil {
		return 0, fail("put registration", err)
	}
	if r.Token == "" || r.AOR == "" {
		return 0, errors.New("embedded store: put registration: token and aor must not be empty")
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		old, sched, ok, err := getRegistration(tx, []byte(r.Token))
		if err != nil {
			return err
		}
		var stored uint64
		if ok {
			stored = old.Gen
		}
		if check && stored != r.Gen {
			return store.ErrConflict
		}
		if ok {
			if err := removeRegistration(tx, old, sched); err != nil {
				return err
			}
		}
		gen = stored + 1
		next := r
		next.Gen = gen
		return insertRegistration(tx, next, nanos(r.Due))
	})
	if errors.Is(err, store.ErrConflict) {
		return 0, err
	}
	if err != nil {
		return 0, fail("put registration", err)
	}
	return gen, nil
}

// Registration implements store.Registrations.
func (s *Store) Registration(ctx context.Context, token string) (r store.Registration, err error) {
	defer func() { s.metrics.Observe(store.OpRegistration, err) }()
	if err := s.begin(ctx); err != nil {
		return r, fail("registration", err)
	}
	found := false
	err = s.db.View(func(tx *bolt.Tx) error {
		var err error
		r, _, found, err = getRegistration(tx, []byte(token))
		return err
	})
	if err != nil {
		return store.Registration{}, fail("registration", err)
	}
	if !found {
		return store.Registration{}, store.ErrNotFound
	}
	return r, nil
}

// DeleteRegistration implements store.Registrations: the record, its
// schedule and AOR index entries and its share of the state count go in
// one write transaction.
func (s *Store) DeleteRegistration(ctx context.Context, token string) (err error) {
	defer func() { s.metrics.Observe(store.OpDeleteRegistration, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("delete registration", err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		r, sched, ok, err := getRegistration(tx, []byte(token))
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		return removeRegistration(tx, r, sched)
	})
	if errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err != nil {
		return fail("delete registration", err)
	}
	return nil
}

// ListRegistrations implements store.Registrations: a cursor on regaor
// (from the AOR's prefix when filtered) walks records by AOR then token
// and stops at the limit.
func (s *Store) ListRegistrations(ctx context.Context, f store.RegistrationFilter) (out []store.Registration, err error) {
	defer func() { s.metrics.Observe(store.OpListRegistrations, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("list registrations", err)
	}
	var prefix []byte
	if f.AOR != "" {
		prefix = aorKey(f.AOR)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		out = []store.Registration{}
		c := tx.Bucket(bucketRegAOR).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if f.Limit > 0 && len(out) >= f.Limit {
				return nil
			}
			_, token, ok := splitBindingKey(k)
			if !ok {
				return fmt.Errorf("corrupt registration index key %q", k)
			}
			r, _, found, err := getRegistration(tx, []byte(token))
			if err != nil {
				return err
			}
			if found {
				out = append(out, r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fail("list registrations", err)
	}
	return out, nil
}

// claimed is a record ClaimDue returns and the regdue key it was found
// under.
type claimed struct {
	key []byte
	v   []byte
	r   store.Registration
}

// ClaimDue implements store.Registrations in one write transaction: a
// cursor on regdue reads the entries due at now, earliest first, until
// limit records are found; each one's entry moves to now+lease (and the
// schedule time kept in its record with it). Entries without a record, or
// not the record's current entry, are deleted on the way. bbolt runs one
// write transaction at a time, so two claims never return one record
// within its lease.
func (s *Store) ClaimDue(ctx context.Context, now time.Time, lease time.Duration, limit int) (out []store.Registration, err error) {
	defer func() { s.metrics.Observe(store.OpClaimDue, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("claim due", err)
	}
	if limit <= 0 || lease <= 0 {
		return nil, fmt.Errorf("embedded store: claim due: limit %d and lease %s must be positive", limit, lease)
	}
	at, until := nanos(now), nanos(now.Add(lease))
	err = s.db.Update(func(tx *bolt.Tx) error {
		out = []store.Registration{}
		regs, due := tx.Bucket(bucketRegs), tx.Bucket(bucketRegDue)
		var claims []claimed
		var stale [][]byte
		c := due.Cursor()
		for k, _ := c.First(); k != nil && len(claims) < limit; k, _ = c.Next() {
			if len(k) < 8 {
				stale = append(stale, bytes.Clone(k))
				continue
			}
			t, token := binary.BigEndian.Uint64(k[:8]), k[8:]
			if t > at {
				break
			}
			v := regs.Get(token)
			if v == nil {
				stale = append(stale, bytes.Clone(k))
				continue
			}
			r, sched, err := decodeRegistration(token, v)
			if err != nil {
				return err
			}
			if sched != t {
				stale = append(stale, bytes.Clone(k))
				continue
			}
			claims = append(claims, claimed{key: bytes.Clone(k), v: bytes.Clone(v), r: r})
		}
		for _, k := range stale {
			if err := due.Delete(k); err != nil {
				return err
			}
		}
		for _, cl := range claims {
			if err := due.Delete(cl.key); err != nil {
				return err
			}
			if err := due.Put(dueKey(until, cl.r.Token), nil); err != nil {
				return err
			}
			binary.BigEndian.PutUint64(cl.v[:8], until)
			if err := regs.Put([]byte(cl.r.Token), cl.v); err != nil {
				return err
			}
			out = append(out, cl.r)
		}
		return nil
	})
	if err != nil {
		return nil, fail("claim due", err)
	}
	return out, nil
}

// CountRegistrations implements store.Registrations from the regstates
// bucket, which every write keeps in step with the records.
func (s *Store) CountRegistrations(ctx context.Context) (counts map[string]int, err error) {
	defer func() { s.metrics.Observe(store.OpCountRegistrations, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("count registrations", err)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		counts = map[string]int{}
		return tx.Bucket(bucketRegStates).ForEach(func(k, v []byte) error {
			if len(k) < 1 || len(v) != 8 {
				return fmt.Errorf("corrupt state count %q", k)
			}
			if n := int(binary.BigEndian.Uint64(v)); n > 0 {
				counts[string(k[1:])] = n
			}
			return nil
		})
	})
	if err != nil {
		return nil, fail("count registrations", err)
	}
	return counts, nil
}

// encodeAccount returns the stored form of a (without its AOR, the key).
func encodeAccount(a store.Account) ([]byte, error) {
	a.AOR = ""
	return json.Marshal(a)
}

// decodeAccount reverses encodeAccount for the account stored under aor.
func decodeAccount(aor, v []byte) (store.Account, error) {
	var a store.Account
	if err := json.Unmarshal(v, &a); err != nil {
		return a, fmt.Errorf("corrupt account %q: %w", aor, err)
	}
	a.AOR = string(aor)
	return a, nil
}

// PutAccount implements store.Accounts with one write transaction.
func (s *Store) PutAccount(ctx context.Context, a store.Account) (err error) {
	defer func() { s.metrics.Observe(store.OpPutAccount, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("put account", err)
	}
	if a.AOR == "" {
		return errors.New("embedded store: put account: aor must not be empty")
	}
	v, err := encodeAccount(a)
	if err != nil {
		return fail("put account", err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).Put([]byte(a.AOR), v)
	})
	if err != nil {
		return fail("put account", err)
	}
	return nil
}

// Account implements store.Accounts.
func (s *Store) Account(ctx context.Context, aor string) (a store.Account, err error) {
	defer func() { s.metrics.Observe(store.OpAccount, err) }()
	if err := s.begin(ctx); err != nil {
		return a, fail("account", err)
	}
	found := false
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAccounts).Get([]byte(aor))
		if found = v != nil; !found {
			return nil
		}
		var err error
		a, err = decodeAccount([]byte(aor), v)
		return err
	})
	if err != nil {
		return store.Account{}, fail("account", err)
	}
	if !found {
		return store.Account{}, store.ErrNotFound
	}
	return a, nil
}

// DeleteAccount implements store.Accounts.
func (s *Store) DeleteAccount(ctx context.Context, aor string) (err error) {
	defer func() { s.metrics.Observe(store.OpDeleteAccount, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("delete account", err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAccounts)
		if b.Get([]byte(aor)) == nil {
			return store.ErrNotFound
		}
		return b.Delete([]byte(aor))
	})
	if errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err != nil {
		return fail("delete account", err)
	}
	return nil
}

// ListAccounts implements store.Accounts: the bucket's order is the AOR's
// byte order.
func (s *Store) ListAccounts(ctx context.Context) (out []store.Account, err error) {
	defer func() { s.metrics.Observe(store.OpListAccounts, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("list accounts", err)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		out = []store.Account{}
		return tx.Bucket(bucketAccounts).ForEach(func(k, v []byte) error {
			a, err := decodeAccount(k, v)
			if err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	if err != nil {
		return nil, fail("list accounts", err)
	}
	return out, nil
}
