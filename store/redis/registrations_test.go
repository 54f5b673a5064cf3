package redis_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/redis"
	"github.com/sipwake/sipwake/store/storetest"
)

// TestRegistrationKeyLayout checks the registration keys in Redis: the
// record's fields, the schedule scores before and after a claim, the
// index and state sets, no expiry; and that a delete leaves nothing.
func TestRegistrationKeyLayout(t *testing.T) {
	addr := storetest.StartRedis(t)
	prefix := prefixFor(t)
	s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw := goredis.NewClient(&goredis.Options{Addr: addr})
	defer raw.Close()
	ctx := t.Context()
	base := time.Now().Truncate(time.Second)
	r := storetest.RegistrationFixture("tok\x00{x}", "sip:lay@example.com", "dev", base)
	if _, err := s.PutRegistration(ctx, r, true); err != nil {
		t.Fatal(err)
	}
	due, index, states, stateSet, record := redis.RegistrationKeys(prefix, r.Token, store.RegActive)
	for _, k := range []string{due, index, states, stateSet, record} {
		if ttl, err := raw.PTTL(ctx, k).Result(); err != nil || ttl != -1 {
			t.Errorf("PTTL %q = %s, %v; want no expiry (-1)", k, ttl, err)
		}
	}
	f, err := raw.HGetAll(ctx, record).Result()
	if err != nil || f["aor"] != r.AOR || f["instance"] != r.Instance || f["state"] != r.State || f["gen"] != "1" ||
		f["data"] == "" || f["ix"] != r.AOR+"\x00\x01"+r.Token || len(f["put"]) != 16 {
		t.Errorf("record fields %q, %v", f, err)
	}
	score := func() int64 {
		t.Helper()
		v, err := raw.ZScore(ctx, due, r.Token).Result()
		if err != nil {
			t.Fatalf("ZSCORE %q: %v", due, err)
		}
		return int64(v)
	}
	if got := score(); got != base.UnixMilli() {
		t.Errorf("schedule score %d, want Due %d", got, base.UnixMilli())
	}
	if _, err := s.ClaimDue(ctx, base.Add(time.Second), time.Minute, 10); err != nil {
		t.Fatal(err)
	}
	if got, want := score(), base.Add(time.Second+time.Minute).UnixMilli(); got != want {
		t.Errorf("schedule score after a claim %d, want %d", got, want)
	}
	if m, err := raw.SMembers(ctx, states).Result(); err != nil || !reflect.DeepEqual(m, []string{store.RegActive}) {
		t.Errorf("state names %q, %v", m, err)
	}
	if m, err := raw.SMembers(ctx, stateSet).Result(); err != nil || !reflect.DeepEqual(m, []string{r.Token}) {
		t.Errorf("active tokens %q, %v", m, err)
	}
	if err := s.DeleteRegistration(ctx, r.Token); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{due, index, states, stateSet, record} {
		if n, err := raw.Exists(ctx, k).Result(); err != nil || n != 0 {
			t.Errorf("%q exists (%d, %v) after the last record was deleted, want gone", k, n, err)
		}
	}

	a := storetest.AccountFixture("sip:lay@example.com", base)
	if err := s.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if n, err := raw.HLen(ctx, redis.AccountsKey(prefix)).Result(); err != nil || n != 1 {
		t.Errorf("HLEN accounts = %d, %v; want 1", n, err)
	}
}

// TestRegistrationRecordGone: a record whose hash vanished (deleted by
// hand) while its schedule entry, index member and state-set member stay
// is never returned; ClaimDue drops its schedule and state entries (and
// claims the next due record in its place), a listing drops its index
// member, and the counts no longer include it.
func TestRegistrationRecordGone(t *testing.T) {
	addr := storetest.StartRedis(t)
	prefix := prefixFor(t)
	s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw := goredis.NewClient(&goredis.Options{Addr: addr})
	defer raw.Close()
	ctx := t.Context()
	base := time.Now().Truncate(time.Second)
	var rs []store.Registration
	for i := range 4 {
		r := storetest.RegistrationFixture(fmt.Sprintf("gone-%d", i), "sip:gone@example.com", "d", base.Add(time.Duration(i)*time.Second))
		if i == 1 {
			r.State = store.RegNeedsLogin
		}
		gen, err := s.PutRegistration(ctx, r, false)
		if err != nil {
			t.Fatal(err)
		}
		r.Gen = gen
		rs = append(rs, r)
	}
	due, index, states, _, _ := redis.RegistrationKeys(prefix, "", "")
	for _, i := range []int{0, 1} {
		_, _, _, _, record := redis.RegistrationKeys(prefix, rs[i].Token, "")
		if err := raw.Del(ctx, record).Err(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ClaimDue(ctx, base.Add(time.Hour), time.Minute, 2)
	if err != nil {
		t.Fatal(err)
	}
	var claimed []string
	for _, r := range got {
		claimed = append(claimed, r.Token)
	}
	if !reflect.DeepEqual(claimed, []string{"gone-2", "gone-3"}) {
		t.Errorf("ClaimDue = %q, want gone-2 and gone-3", claimed)
	}
	if n, err := raw.ZCard(ctx, due).Result(); err != nil || n != 2 {
		t.Errorf("ZCARD schedule = %d, %v; want 2 (the vanished records' entries dropped)", n, err)
	}
	counts, err := s.CountRegistrations(ctx)
	if err != nil || !reflect.DeepEqual(counts, map[string]int{store.RegActive: 2}) {
		t.Errorf("CountRegistrations = %v, %v; want active 2", counts, err)
	}
	if m, err := raw.SMembers(ctx, states).Result(); err != nil || !reflect.DeepEqual(m, []string{store.RegActive}) {
		t.Errorf("state names %q, %v; want only active", m, err)
	}
	if n, err := raw.ZCard(ctx, index).Result(); err != nil || n != 4 {
		t.Fatalf("ZCARD index = %d, %v; want 4 before a listing", n, err)
	}
	list, err := s.ListRegistrations(ctx, store.RegistrationFilter{})
	if err != nil || len(list) != 2 || list[0].Token != "gone-2" || list[1].Token != "gone-3" {
		t.Errorf("ListRegistrations = %d records, %v; want gone-2 and gone-3", len(list), err)
	}
	if n, err := raw.ZCard(ctx, index).Result(); err != nil || n != 2 {
		t.Errorf("ZCARD index = %d, %v; want 2 after a listing", n, err)
	}
}

// TestListRegistrationsPages lists more records than one script call
// reads (500), whole and cut at limits across pages.
func TestListRegistrationsPages(t *testing.T) {
	addr := storetest.StartRedis(t)
	s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{addr}, NodeID: "n", KeyPrefix: prefixFor(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	now := time.Now()
	const n = 1234
	aors := []string{"sip:a@x", "sip:b@x", "sip:c@x"}
	want := map[string][]string{}
	var all []string
	for i := range n {
		aor := aors[i%len(aors)]
		r := store.Registration{Token: fmt.Sprintf("t%05d", i), AOR: aor, Due: now, State: store.RegActive}
		if _, err := s.PutRegistration(ctx, r, false); err != nil {
			t.Fatal(err)
		}
		want[aor] = append(want[aor], r.Token)
	}
	for _, aor := range aors {
		all = append(all, want[aor]...)
	}
	toks := func(rs []store.Registration) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = r.Token
		}
		return out
	}
	for _, tc := range []struct {
		f    store.RegistrationFilter
		want []string
	}{
		{store.RegistrationFilter{}, all},
		{store.RegistrationFilter{Limit: 500}, all[:500]},
		{store.RegistrationFilter{Limit: 501}, all[:501]},
		{store.RegistrationFilter{Limit: 1000}, all[:1000]},
		{store.RegistrationFilter{AOR: "sip:b@x"}, want["sip:b@x"]},
		{store.RegistrationFilter{AOR: "sip:c@x", Limit: 300}, want["sip:c@x"][:300]},
	} {
		got, err := s.ListRegistrations(ctx, tc.f)
		if err != nil {
			t.Fatalf("ListRegistrations(%+v): %v", tc.f, err)
		}
		if !reflect.DeepEqual(toks(got), tc.want) {
			t.Errorf("ListRegistrations(%+v): %d records, want %d in order", tc.f, len(got), len(tc.want))
		}
	}
	counts, err := s.CountRegistrations(ctx)
	if err != nil || counts[store.RegActive] != n {
		t.Errorf("CountRegistrations = %v, %v; want active %d", counts, err, n)
	}
}

// TestRegistrationRoundTrips: every registration and account operation is
// one round trip, in a Cluster as well.
func TestRegistrationRoundTrips(t *testing.T) {
	single := storetest.StartRedis(t)
	cluster := startCluster(t)
	for _, tc := range []struct {
		name    string
		addr    string
		cluster bool
	}{{"single", single, false}, {"cluster", cluster, true}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := redis.Open(t.Context(), redis.Options{Addresses: []string{tc.addr}, Cluster: tc.cluster,
				NodeID: "n", KeyPrefix: prefixFor(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			rec := &tripRecorder{}
			s.AddHook(rec)
			ctx := t.Context()
			now := time.Now()
			r := storetest.RegistrationFixture("tok", "sip:trip@example.com", "d", now)
			a := storetest.AccountFixture("sip:trip@example.com", now)
			ops := []struct {
				name string
				fn   func() error
				want []string
			}{
				{"PutRegistration", func() error { _, err := s.PutRegistration(ctx, r, false); return err }, []string{"evalsha"}},
				{"Registration", func() error { _, err := s.Registration(ctx, r.Token); return err }, []string{"hmget"}},
				{"ListRegistrations", func() error { _, err := s.ListRegistrations(ctx, store.RegistrationFilter{}); return err }, []string{"evalsha"}},
				{"ClaimDue", func() error { _, err := s.ClaimDue(ctx, now, time.Minute, 10); return err }, []string{"evalsha"}},
				{"CountRegistrations", func() error { _, err := s.CountRegistrations(ctx); return err }, []string{"evalsha"}},
				{"DeleteRegistration", func() error { return s.DeleteRegistration(ctx, r.Token) }, []string{"evalsha"}},
				{"PutAccount", func() error { return s.PutAccount(ctx, a) }, []string{"hset"}},
				{"Account", func() error { _, err := s.Account(ctx, a.AOR); return err }, []string{"hget"}},
				{"ListAccounts", func() error { _, err := s.ListAccounts(ctx); return err }, []string{"hgetall"}},
				{"DeleteAccount", func() error { return s.DeleteAccount(ctx, a.AOR) }, []string{"hdel"}},
			}
			// The first call of a script may add an EVAL (NOSCRIPT): warm
			// every script up (a delete of nothing loads its script), then
			// count.
			for _, op := range ops {
				if err := op.fn(); err != nil && !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("%s (warm-up): %v", op.name, err)
				}
			}
			for _, op := range ops {
				rec.take()
				if err := op.fn(); err != nil {
					t.Fatalf("%s: %v", op.name, err)
				}
				if got := rec.take(); !reflect.DeepEqual(got, [][]string{op.want}) {
					t.Errorf("%s: round trips %q, want one: %q", op.name, got, op.want)
				}
			}
		})
	}
}
