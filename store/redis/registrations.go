package redis

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/store"
)

// listPage is how many AOR-index members one listRegistrationsScript call
// reads, so that a listing of every record does not block the server for
// long.
const listPage = 500

// regData returns the JSON kept in a record's "data" field: r without the
// fields the hash keeps byte for byte (Token, AOR, Instance, State) and
// without Gen (a field of its own).
func regData(r store.Registration) ([]byte, error) {
	r.Token, r.AOR, r.Instance, r.State, r.Gen = "", "", "", "", 0
	return json.Marshal(r)
}

// decodeRegistration builds a record from a script reply's six elements:
// token, data, aor, instance, state, gen.
func decodeRegistration(f []any) (store.Registration, error) {
	var r store.Registration
	token, _ := str(f[0])
	data, _ := str(f[1])
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		return r, fmt.Errorf("corrupt registration %q: %w", token, err)
	}
	r.Token = token
	r.AOR, _ = str(f[2])
	r.Instance, _ = str(f[3])
	r.State, _ = str(f[4])
	if g, _ := str(f[5]); g != "" {
		gen, err := strconv.ParseUint(g, 10, 64)
		if err != nil {
			return r, fmt.Errorf("corrupt registration %q: gen %q", token, g)
		}
		r.Gen = gen
	}
	return r, nil
}

// decodeRegistrations decodes the records of a flat script reply, six
// elements each.
func decodeRegistrations(res []any) ([]store.Registration, error) {
	out := make([]store.Registration, 0, len(res)/6)
	for i := 0; i+5 < len(res); i += 6 {
		r, err := decodeRegistration(res[i : i+6])
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// regKeys are the keys every registration write script declares.
func (s *Store) regKeys(token string) []string {
	return []string{s.keys.reg(token), s.keys.regDue(), s.keys.regIndex(), s.keys.regStates()}
}

// PutRegistration implements store.Registrations with one script on the
// {reg} slot: the generation is compared (with check) and the record, its
// schedule entry (Due, unix ms), its AOR-index member and its state set
// change together, atomically, so of racing conditional writers exactly
// one wins. One round trip in every mode. Each call carries a random
// nonce kept in the record: when go-redis retries a put whose reply was
// lost, the retry finds its own nonce and returns the generation it
// wrote instead of a conflict (or a second increment).
func (s *Store) PutRegistration(ctx context.Context, r store.Registration, check bool) (gen uint64, err error) {
	defer func() { s.metrics.Observe(store.OpPutRegistration, err) }()
	if err := s.begin(ctx); err != nil {
		return 0, fail("put registration", err)
	}
	if r.Token == "" || r.AOR == "" {
		return 0, errors.New("redis store: put registration: token and aor must not be empty")
	}
	data, err := regData(r)
	if err != nil {
		return 0, fail("put registration", err)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return 0, fail("put registration", err)
	}
	flag := "0"
	if check {
		flag = "1"
	}
	n, err := putRegistrationScript.Run(ctx, s.client, s.regKeys(r.Token),
		r.Token, flag, strconv.FormatUint(r.Gen, 10), data, r.AOR, r.Instance, r.State,
		ms(r.Due), regIndexMember(r.AOR, r.Token), s.keys.regStatePrefix(), nonce).Int64()
	if err != nil {
		return 0, fail("put registration", err)
	}
	if n < 0 {
		return 0, store.ErrConflict
	}
	return uint64(n), nil
}

// Registration implements store.Registrations with one HMGET of the
// record's hash.
func (s *Store) Registration(ctx context.Context, token string) (r store.Registration, err error) {
	defer func() { s.metrics.Observe(store.OpRegistration, err) }()
	if err := s.begin(ctx); err != nil {
		return r, fail("registration", err)
	}
	f, err := s.client.HMGet(ctx, s.keys.reg(token), "data", "aor", "instance", "state", "gen").Result()
	if err != nil {
		return r, fail("registration", err)
	}
	if _, ok := str(f[0]); !ok {
		return r, store.ErrNotFound
	}
	r, err = decodeRegistration(append([]any{token}, f...))
	if err != nil {
		return store.Registration{}, fail("registration", err)
	}
	return r, nil
}

// DeleteRegistration implements store.Registrations with one script on
// the {reg} slot: the record, its schedule entry, its AOR-index member
// and its state-set member go together.
func (s *Store) DeleteRegistration(ctx context.Context, token string) (err error) {
	defer func() { s.metrics.Observe(store.OpDeleteRegistration, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("delete registration", err)
	}
	n, err := deleteRegistrationScript.Run(ctx, s.client, s.regKeys(token), token, s.keys.regStatePrefix()).Int()
	if err != nil {
		return fail("delete registration", err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// ListRegistrations implements store.Registrations: the AOR index is a
// sorted set whose members (regIndexMember) sort by AOR then token, read
// with ZRANGEBYLEX (over the AOR's range when filtered) listPage members
// per script call until the limit is reached. Each page is consistent; the
// listing as a whole is not a snapshot.
func (s *Store) ListRegistrations(ctx context.Context, f store.RegistrationFilter) (out []store.Registration, err error) {
	defer func() { s.metrics.Observe(store.OpListRegistrations, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("list registrations", err)
	}
	lo, hi := regIndexRange(f.AOR)
	out = []store.Registration{}
	for {
		page := listPage
		if f.Limit > 0 {
			page = min(page, f.Limit-len(out))
		}
		res, err := listRegistrationsScript.Run(ctx, s.client, []string{s.keys.regIndex()},
			lo, hi, page, s.keys.regPrefix()).Slice()
		if err != nil {
			return nil, fail("list registrations", err)
		}
		if len(res) < 2 {
			return nil, fail("list registrations", fmt.Errorf("unexpected script reply %v", res))
		}
		read, _ := res[0].(int64)
		last, _ := str(res[1])
		rs, err := decodeRegistrations(res[2:])
		if err != nil {
			return nil, fail("list registrations", err)
		}
		out = append(out, rs...)
		if int(read) < page || (f.Limit > 0 && len(out) >= f.Limit) {
			return out, nil
		}
		lo = "(" + last
	}
}

// ClaimDue implements store.Registrations with one script on the {reg}
// slot (see claimDueScript): O(k log n) for k records claimed among n,
// one round trip. Schedule entries are unix milliseconds of this node's
// clock; the lease ends at least a millisecond after now. When go-redis
// retries a claim whose reply was lost, the records the first attempt
// claimed stay leased and fall due again at the lease's end.
func (s *Store) ClaimDue(ctx context.Context, now time.Time, lease time.Duration, limit int) (out []store.Registration, err error) {
	defer func() { s.metrics.Observe(store.OpClaimDue, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("claim due", err)
	}
	if limit <= 0 || lease <= 0 {
		return nil, fmt.Errorf("redis store: claim due: limit %d and lease %s must be positive", limit, lease)
	}
	at := ms(now)
	until := max(ms(now.Add(lease)), at+1)
	res, err := claimDueScript.Run(ctx, s.client, []string{s.keys.regDue(), s.keys.regStates()},
		at, until, limit, s.keys.regPrefix(), s.keys.regStatePrefix()).Slice()
	if err != nil {
		return nil, fail("claim due", err)
	}
	out, err = decodeRegistrations(res)
	if err != nil {
		return nil, fail("claim due", err)
	}
	return out, nil
}

// CountRegistrations implements store.Registrations with one script that
// reads the size of each state's token set.
func (s *Store) CountRegistrations(ctx context.Context) (counts map[string]int, err error) {
	defer func() { s.metrics.Observe(store.OpCountRegistrations, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("count registrations", err)
	}
	res, err := countRegistrationsScript.Run(ctx, s.client, []string{s.keys.regStates()}, s.keys.regStatePrefix()).Slice()
	if err != nil {
		return nil, fail("count registrations", err)
	}
	counts = make(map[string]int, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		state, _ := str(res[i])
		n, _ := res[i+1].(int64)
		counts[state] = int(n)
	}
	return counts, nil
}

// accountData returns the JSON kept as an account's value in the accounts
// hash: the account without its AOR (the field name, raw bytes).
func accountData(a store.Account) ([]byte, error) {
	a.AOR = ""
	return json.Marshal(a)
}

// decodeAccount reads an account from its field name and value.
func decodeAccount(aor, data string) (store.Account, error) {
	var a store.Account
	if err := json.Unmarshal([]byte(data), &a); err != nil {
		return a, fmt.Errorf("corrupt account %q: %w", aor, err)
	}
	a.AOR = aor
	return a, nil
}

// PutAccount implements store.Accounts with HSET on the accounts hash.
func (s *Store) PutAccount(ctx context.Context, a store.Account) (err error) {
	defer func() { s.metrics.Observe(store.OpPutAccount, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("put account", err)
	}
	if a.AOR == "" {
		return errors.New("redis store: put account: aor must not be empty")
	}
	data, err := accountData(a)
	if err != nil {
		return fail("put account", err)
	}
	if err := s.client.HSet(ctx, s.keys.accounts(), a.AOR, data).Err(); err != nil {
		return fail("put account", err)
	}
	return nil
}

// Account implements store.Accounts with HGET on the accounts hash.
func (s *Store) Account(ctx context.Context, aor string) (a store.Account, err error) {
	defer func() { s.metrics.Observe(store.OpAccount, err) }()
	if err := s.begin(ctx); err != nil {
		return a, fail("account", err)
	}
	data, err := s.client.HGet(ctx, s.keys.accounts(), aor).Result()
	if errors.Is(err, goredis.Nil) {
		return a, store.ErrNotFound
	}
	if err != nil {
		return a, fail("account", err)
	}
	a, err = decodeAccount(aor, data)
	if err != nil {
		return store.Account{}, fail("account", err)
	}
	return a, nil
}

// DeleteAccount implements store.Accounts with HDEL on the accounts hash.
func (s *Store) DeleteAccount(ctx context.Context, aor string) (err error) {
	defer func() { s.metrics.Observe(store.OpDeleteAccount, err) }()
	if err := s.begin(ctx); err != nil {
		return fail("delete account", err)
	}
	n, err := s.client.HDel(ctx, s.keys.accounts(), aor).Result()
	if err != nil {
		return fail("delete account", err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// ListAccounts implements store.Accounts with HGETALL of the accounts
// hash, sorted by AOR on the node.
func (s *Store) ListAccounts(ctx context.Context) (out []store.Account, err error) {
	defer func() { s.metrics.Observe(store.OpListAccounts, err) }()
	if err := s.begin(ctx); err != nil {
		return nil, fail("list accounts", err)
	}
	all, err := s.client.HGetAll(ctx, s.keys.accounts()).Result()
	if err != nil {
		return nil, fail("list accounts", err)
	}
	out = make([]store.Account, 0, len(all))
	for aor, data := range all {
		a, err := decodeAccount(aor, data)
		if err != nil {
			return nil, fail("list accounts", err)
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AOR < out[j].AOR })
	return out, nil
}
