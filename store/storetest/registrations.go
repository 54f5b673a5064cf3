package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/store"
)

// RegistrationFixture returns a fully populated registration of token
// under aor for instance, due at due and in state active, so that a round
// trip through a store exercises every field. Its Gen is 0.
func RegistrationFixture(token, aor, instance string, due time.Time) store.Registration {
	now := time.Now()
	return store.Registration{
		Token:         token,
		AOR:           aor,
		Instance:      instance,
		OnBehalf:      true,
		Transport:     "tls",
		CallID:        "3f1c9a0e-upstream@sipwake",
		CSeq:          42,
		Expires:       now.Add(time.Hour),
		Granted:       time.Hour,
		DeviceExpires: now.Add(7 * 24 * time.Hour),
		LastSeen:      now.Add(-time.Minute),
		Due:           due,
		State:         store.RegActive,
		Failures:      2,
		LastPush:      now.Add(-30 * time.Second),
	}
}

// normalizeRegistration makes registrations comparable with
// reflect.DeepEqual: times lose their monotonic reading and location.
func normalizeRegistration(r store.Registration) store.Registration {
	r.Expires = r.Expires.UTC()
	r.DeviceExpires = r.DeviceExpires.UTC()
	r.LastSeen = r.LastSeen.UTC()
	r.Due = r.Due.UTC()
	r.LastPush = r.LastPush.UTC()
	return r
}

// describeRegistration prints a registration for a failure message,
// strings quoted.
func describeRegistration(r store.Registration) string {
	r = normalizeRegistration(r)
	f := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
	return fmt.Sprintf("{Token:%q AOR:%q Instance:%q OnBehalf:%v Transport:%q CallID:%q CSeq:%d Expires:%s Granted:%s DeviceExpires:%s LastSeen:%s Due:%s State:%q Failures:%d LastPush:%s Gen:%d}",
		r.Token, r.AOR, r.Instance, r.OnBehalf, r.Transport, r.CallID, r.CSeq, f(r.Expires), r.Granted,
		f(r.DeviceExpires), f(r.LastSeen), f(r.Due), r.State, r.Failures, f(r.LastPush), r.Gen)
}

func checkRegistration(t *testing.T, what string, got, want store.Registration) {
	t.Helper()
	if !reflect.DeepEqual(normalizeRegistration(got), normalizeRegistration(want)) {
		t.Errorf("%s:\n got %s\nwant %s", what, describeRegistration(got), describeRegistration(want))
	}
}

// tokens lists the tokens of rs in order.
func tokens(rs []store.Registration) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Token)
	}
	return out
}

// checkRegistrationList compares a listing or a claim with want, in order.
func checkRegistrationList(t *testing.T, what string, got []store.Registration, want ...store.Registration) {
	t.Helper()
	if !reflect.DeepEqual(tokens(got), tokens(want)) {
		t.Errorf("%s: tokens %q, want %q", what, tokens(got), tokens(want))
		return
	}
	for i := range got {
		checkRegistration(t, fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
	}
}

// putRegistration stores r and returns r as stored (with its new Gen).
func putRegistration(t *testing.T, st store.Store, r store.Registration, check bool) store.Registration {
	t.Helper()
	gen, err := st.PutRegistration(ctx(t), r, check)
	if err != nil {
		t.Fatalf("PutRegistration(%q, gen %d, check %v): %v", r.Token, r.Gen, check, err)
	}
	r.Gen = gen
	return r
}

func getRegistration(t *testing.T, st store.Store, token string) store.Registration {
	t.Helper()
	r, err := st.Registration(ctx(t), token)
	if err != nil {
		t.Fatalf("Registration(%q): %v", token, err)
	}
	return r
}

func expectRegistrationGone(t *testing.T, st store.Store, token string) {
	t.Helper()
	if r, err := st.Registration(ctx(t), token); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Registration(%q) = %s, %v; want ErrNotFound", token, describeRegistration(r), err)
	}
}

func listRegistrations(t *testing.T, st store.Store, f store.RegistrationFilter) []store.Registration {
	t.Helper()
	rs, err := st.ListRegistrations(ctx(t), f)
	if err != nil {
		t.Fatalf("ListRegistrations(%+v): %v", f, err)
	}
	return rs
}

func claimDue(t *testing.T, st store.Store, now time.Time, lease time.Duration, limit int) []store.Registration {
	t.Helper()
	rs, err := st.ClaimDue(ctx(t), now, lease, limit)
	if err != nil {
		t.Fatalf("ClaimDue(%s, %s, %d): %v", now.Format(time.RFC3339Nano), lease, limit, err)
	}
	return rs
}

func checkCounts(t *testing.T, what string, st store.Store, want map[string]int) {
	t.Helper()
	got, err := st.CountRegistrations(ctx(t))
	if err != nil {
		t.Fatalf("CountRegistrations: %v", err)
	}
	if got == nil {
		t.Errorf("%s: CountRegistrations returned a nil map", what)
		return
	}
	if want == nil {
		want = map[string]int{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: CountRegistrations = %q, want %q", what, sortedCounts(got), sortedCounts(want))
	}
}

func (s *suite) testRegistrationPutGet(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	const alice = "sip:alice@example.com"
	expectRegistrationGone(t, a, "tok-1")
	expectRegistrationGone(t, a, "")

	r := putRegistration(t, a, RegistrationFixture("tok-1", alice, "<urn:uuid:1>", now.Add(time.Minute)), true)
	if r.Gen != 1 {
		t.Errorf("first PutRegistration returned gen %d, want 1", r.Gen)
	}
	checkRegistration(t, "Registration (same node)", getRegistration(t, a, r.Token), r)
	checkRegistration(t, "Registration (other node)", getRegistration(t, b, r.Token), r)

	// A record shared by every device of the AOR, with few fields set.
	shared := store.Registration{Token: "tok-aor", AOR: alice, Due: now, State: store.RegNeedsLogin}
	shared = putRegistration(t, b, shared, false)
	checkRegistration(t, "Registration (sparse)", getRegistration(t, a, shared.Token), shared)

	// Every field is replaced.
	next := RegistrationFixture("tok-1", "sip:alice2@example.com", "", now.Add(2*time.Minute))
	next.OnBehalf = false
	next.Transport, next.CallID, next.CSeq = "udp", "other@sipwake", 43
	next.State, next.Failures = store.RegBackingOff, 0
	next.Granted = 0
	next.Gen = r.Gen
	next = putRegistration(t, b, next, true)
	if next.Gen != 2 {
		t.Errorf("second PutRegistration returned gen %d, want 2", next.Gen)
	}
	checkRegistration(t, "Registration after replace", getRegistration(t, a, "tok-1"), next)

	for _, bad := range []store.Registration{
		RegistrationFixture("", alice, "i", now),
		RegistrationFixture("tok-no-aor", "", "i", now),
	} {
		for _, check := range []bool{false, true} {
			if gen, err := a.PutRegistration(ctx(t), bad, check); err == nil || errors.Is(err, store.ErrConflict) {
				t.Errorf("PutRegistration(token %q, aor %q, check %v) = %d, %v; want an error", bad.Token, bad.AOR, check, gen, err)
			}
		}
	}
	expectRegistrationGone(t, b, "tok-no-aor")
	// "sip:alice2@…" sorts before "sip:alice@…" ('2' < '@').
	checkRegistrationList(t, "ListRegistrations", listRegistrations(t, b, store.RegistrationFilter{}), next, shared)
}

func (s *suite) testRegistrationGen(t *testing.T) {
	a, b, _ := s.nodes(t)
	base := time.Now().Truncate(time.Second)
	const aor = "sip:gen@example.com"
	r := RegistrationFixture("tok-gen", aor, "dev", base.Add(time.Hour))
	conflict := func(st store.Store, r store.Registration, what string) {
		t.Helper()
		if gen, err := st.PutRegistration(ctx(t), r, true); !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: PutRegistration(gen %d, check) = %d, %v; want ErrConflict", what, r.Gen, gen, err)
		}
	}

	// An absent record has Gen 0.
	r.Gen = 3
	conflict(a, r, "absent record, gen 3")
	expectRegistrationGone(t, b, r.Token)
	checkCounts(t, "after a refused put", b, nil)
	r.Gen = 0
	r = putRegistration(t, a, r, true)
	if r.Gen != 1 {
		t.Fatalf("conditional put of an absent record returned gen %d, want 1", r.Gen)
	}

	// A stale generation changes nothing: not the record, not its
	// schedule, not the counts.
	stale := r
	stale.Gen = 0
	stale.CallID, stale.State, stale.Due = "stale@sipwake", store.RegNeedsLogin, base.Add(-time.Hour)
	conflict(b, stale, "gen 0 of a record at gen 1")
	stale.Gen = 5
	conflict(b, stale, "gen 5 of a record at gen 1")
	checkRegistration(t, "Registration after refused puts", getRegistration(t, b, r.Token), r)
	checkRegistrationList(t, "ClaimDue after refused puts", claimDue(t, a, base, time.Minute, 10))
	checkCounts(t, "after refused puts", a, map[string]int{store.RegActive: 1})

	// The current generation wins and adds one.
	r.CallID = "fresh@sipwake"
	r = putRegistration(t, b, r, true)
	if r.Gen != 2 {
		t.Errorf("conditional put at gen 1 returned gen %d, want 2", r.Gen)
	}
	checkRegistration(t, "Registration after a conditional put", getRegistration(t, a, r.Token), r)

	// Without check the stored Gen counts, whatever r.Gen says.
	blind := r
	blind.Gen = 99
	blind.CallID = "blind@sipwake"
	blind = putRegistration(t, a, blind, false)
	if blind.Gen != 3 {
		t.Errorf("unconditional put over gen 2 returned gen %d, want 3", blind.Gen)
	}
	checkRegistration(t, "Registration after an unconditional put", getRegistration(t, b, r.Token), blind)
	fresh := RegistrationFixture("tok-gen-2", aor, "dev-2", base)
	fresh.Gen = 7
	if fresh = putRegistration(t, b, fresh, false); fresh.Gen != 1 {
		t.Errorf("unconditional put of an absent record returned gen %d, want 1", fresh.Gen)
	}

	// A deleted record is absent again: Gen 0.
	if err := a.DeleteRegistration(ctx(t), r.Token); err != nil {
		t.Fatalf("DeleteRegistration: %v", err)
	}
	conflict(b, blind, "gen 3 of a deleted record")
	r.Gen = 0
	if r = putRegistration(t, b, r, true); r.Gen != 1 {
		t.Errorf("conditional put after delete returned gen %d, want 1", r.Gen)
	}
	checkRegistration(t, "Registration after delete and put", getRegistration(t, a, r.Token), r)
}

func (s *suite) testRegistrationList(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	const alice, bob, carol = "sip:alice@example.com", "sip:bob@example.com", "sip:carol@example.com"
	var all []store.Registration
	for i, p := range []struct{ token, aor string }{
		{"t3", alice}, {"t0", bob}, {"t1", alice}, {"z", carol}, {"t2", alice}, {"a", carol}, {"t9", bob},
	} {
		st := a
		if i%2 == 1 {
			st = b
		}
		r := RegistrationFixture(p.token, p.aor, "dev-"+p.token, now.Add(time.Duration(i)*time.Second))
		all = append(all, putRegistration(t, st, r, false))
	}
	byToken := func(tok string) store.Registration {
		for _, r := range all {
			if r.Token == tok {
				return r
			}
		}
		t.Fatalf("no fixture %q", tok)
		return store.Registration{}
	}
	sorted := slices.Clone(all)
	store.SortRegistrations(sorted)
	checkRegistrationList(t, "ListRegistrations(all)", listRegistrations(t, a, store.RegistrationFilter{}), sorted...)
	for _, tc := range []struct {
		f    store.RegistrationFilter
		want []string
	}{
		{store.RegistrationFilter{AOR: alice}, []string{"t1", "t2", "t3"}},
		{store.RegistrationFilter{AOR: bob}, []string{"t0", "t9"}},
		{store.RegistrationFilter{AOR: carol, Limit: 1}, []string{"a"}},
		{store.RegistrationFilter{AOR: alice, Limit: 2}, []string{"t1", "t2"}},
		{store.RegistrationFilter{AOR: alice, Limit: 9}, []string{"t1", "t2", "t3"}},
		{store.RegistrationFilter{Limit: 4}, []string{"t1", "t2", "t3", "t0"}},
		{store.RegistrationFilter{Limit: 7}, []string{"t1", "t2", "t3", "t0", "t9", "a", "z"}},
		{store.RegistrationFilter{AOR: "sip:alice@example.co"}, nil},
		{store.RegistrationFilter{AOR: "sip:alice@example.com "}, nil},
		{store.RegistrationFilter{AOR: "sip:nobody@example.com", Limit: 3}, nil},
	} {
		var want []store.Registration
		for _, tok := range tc.want {
			want = append(want, byToken(tok))
		}
		checkRegistrationList(t, fmt.Sprintf("ListRegistrations(%+v)", tc.f), listRegistrations(t, b, tc.f), want...)
	}

	// A token put again under another AOR moves to that AOR.
	moved := byToken("t2")
	moved.AOR = "sip:dave@example.com"
	moved = putRegistration(t, a, moved, true)
	checkRegistrationList(t, "ListRegistrations(alice) after a move",
		listRegistrations(t, b, store.RegistrationFilter{AOR: alice}), byToken("t1"), byToken("t3"))
	checkRegistrationList(t, "ListRegistrations(dave) after a move",
		listRegistrations(t, b, store.RegistrationFilter{AOR: moved.AOR}), moved)
	if err := b.DeleteRegistration(ctx(t), "t1"); err != nil {
		t.Fatalf("DeleteRegistration: %v", err)
	}
	checkRegistrationList(t, "ListRegistrations(alice) after a delete",
		listRegistrations(t, a, store.RegistrationFilter{AOR: alice}), byToken("t3"))
	if got := listRegistrations(t, a, store.RegistrationFilter{}); len(got) != len(all)-1 {
		t.Errorf("ListRegistrations(all) after a delete: %d records, want %d", len(got), len(all)-1)
	}
}

func (s *suite) testRegistrationDelete(t *testing.T) {
	a, b, _ := s.nodes(t)
	base := time.Now().Truncate(time.Second)
	const aor = "sip:del@example.com"
	var rs []store.Registration
	for i := range 5 {
		r := RegistrationFixture(fmt.Sprintf("del-%d", i), aor, "dev", base.Add(-time.Duration(5-i)*time.Second))
		rs = append(rs, putRegistration(t, a, r, false))
	}
	for _, tok := range []string{"del-0", "del-3"} {
		if err := b.DeleteRegistration(ctx(t), tok); err != nil {
			t.Fatalf("DeleteRegistration(%q): %v", tok, err)
		}
		expectRegistrationGone(t, a, tok)
	}
	for _, tok := range []string{"del-0", "unknown", ""} {
		if err := a.DeleteRegistration(ctx(t), tok); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteRegistration(%q): %v, want ErrNotFound", tok, err)
		}
	}
	checkCounts(t, "after deletes", b, map[string]int{store.RegActive: 3})
	// Deleted records are never claimed, due or not.
	checkRegistrationList(t, "ClaimDue after deletes", claimDue(t, b, base, time.Hour, 10), rs[1], rs[2], rs[4])
	// A record deleted while claimed does not come back after the lease.
	if err := a.DeleteRegistration(ctx(t), "del-2"); err != nil {
		t.Fatalf("DeleteRegistration(claimed): %v", err)
	}
	checkRegistrationList(t, "ClaimDue after the lease", claimDue(t, a, base.Add(2*time.Hour), time.Hour, 10), rs[1], rs[4])
	checkRegistrationList(t, "ListRegistrations", listRegistrations(t, b, store.RegistrationFilter{}), rs[1], rs[4])
	// Put again, a deleted token is a new record.
	again := rs[0]
	again.Gen = 0
	again = putRegistration(t, b, again, true)
	checkRegistrationList(t, "ClaimDue after putting a deleted token again", claimDue(t, a, base, time.Hour, 10), again)
}

func (s *suite) testClaimDue(t *testing.T) {
	a, b, _ := s.nodes(t)
	// A whole second, so that every time below is a whole millisecond.
	base := time.Now().Truncate(time.Second)
	const aor = "sip:claim@example.com"
	const lease = 30 * time.Second
	ms := time.Millisecond
	p := putRegistration(t, a, RegistrationFixture("tok-p", aor, "p", base.Add(-time.Hour)), false)
	r1 := putRegistration(t, b, RegistrationFixture("tok-1", aor, "1", base.Add(time.Second)), false)
	r2 := putRegistration(t, a, RegistrationFixture("tok-2", aor, "2", base.Add(2*time.Second)), false)
	r3 := putRegistration(t, b, RegistrationFixture("tok-3", aor, "3", base.Add(3*time.Second)), false)
	far := putRegistration(t, a, RegistrationFixture("tok-far", aor, "far", base.Add(time.Hour)), false)

	checkRegistrationList(t, "ClaimDue before anything is due", claimDue(t, a, base.Add(-2*time.Hour), lease, 10))
	checkRegistrationList(t, "ClaimDue(base)", claimDue(t, a, base, lease, 10), p) // p leased until base+30s
	// A record due exactly at now is due; limit caps the claim.
	checkRegistrationList(t, "ClaimDue(base+2s, limit 1)", claimDue(t, b, base.Add(2*time.Second), lease, 1), r1) // until base+32s
	checkRegistrationList(t, "ClaimDue(base+2.5s) on the other node",
		claimDue(t, b, base.Add(2500*ms), lease, 10), r2) // until base+32.5s
	checkRegistrationList(t, "ClaimDue(base+3s)", claimDue(t, a, base.Add(3*time.Second), lease, 10), r3) // until base+33s
	// Nothing is claimed again before its lease ends, and everything is
	// claimed again once it has.
	checkRegistrationList(t, "ClaimDue just before the first lease ends", claimDue(t, b, base.Add(30*time.Second-ms), lease, 10))
	checkRegistrationList(t, "ClaimDue as the first lease ends", claimDue(t, a, base.Add(30*time.Second), lease, 10), p) // until base+60s
	checkRegistrationList(t, "ClaimDue just before the second lease ends", claimDue(t, a, base.Add(32*time.Second-ms), lease, 10))

	// The node that handled r1 writes it back with its next Due.
	r1.Due = base.Add(10 * time.Minute)
	r1 = putRegistration(t, a, r1, true)
	if r1.Gen != 2 {
		t.Errorf("write-back of a claimed record returned gen %d, want 2", r1.Gen)
	}
	checkRegistrationList(t, "ClaimDue(base+33s)", claimDue(t, b, base.Add(33*time.Second), lease, 10), r2, r3)
	// The records come as stored (Due and Gen unchanged by the claims),
	// earliest schedule entry first.
	checkRegistrationList(t, "ClaimDue(base+10m)", claimDue(t, a, base.Add(10*time.Minute), time.Minute, 10), p, r2, r3, r1)
	// Equal entries (all leased until base+11m) come by token, before far
	// (due at base+1h).
	checkRegistrationList(t, "ClaimDue(base+2h)", claimDue(t, b, base.Add(2*time.Hour), time.Minute, 10), r1, r2, r3, p, far)
	for _, r := range []store.Registration{p, r1, r2, r3, far} {
		checkRegistration(t, "Registration after the claims", getRegistration(t, a, r.Token), r)
	}

	// Writing a claimed record schedules it at its Due, even before its
	// lease (until base+2h+1m) ends.
	r3.Due = base.Add(90 * time.Minute)
	r3 = putRegistration(t, b, r3, true)
	checkRegistrationList(t, "ClaimDue(base+90m) after a write-back", claimDue(t, a, base.Add(90*time.Minute), time.Minute, 10), r3)

	// Equal Due: by token (both before every other entry).
	x := putRegistration(t, a, RegistrationFixture("tok-x", aor, "x", base.Add(-time.Hour)), false)
	w := putRegistration(t, b, RegistrationFixture("tok-w", aor, "w", base.Add(-time.Hour)), false)
	checkRegistrationList(t, "ClaimDue of equal Due", claimDue(t, a, base.Add(5*time.Hour), time.Minute, 2), w, x)

	// A zero Due is due at once (and comes back unchanged); nothing else
	// is due at base any more.
	zero := putRegistration(t, b, RegistrationFixture("tok-zero", aor, "zero", time.Time{}), false)
	checkRegistrationList(t, "ClaimDue of a zero Due", claimDue(t, a, base, time.Minute, 10), zero)

	for _, bad := range []struct {
		lease time.Duration
		limit int
	}{{time.Minute, 0}, {time.Minute, -1}, {0, 10}, {-time.Second, 10}} {
		if rs, err := a.ClaimDue(ctx(t), base.Add(24*time.Hour), bad.lease, bad.limit); err == nil {
			t.Errorf("ClaimDue(lease %s, limit %d) = %q, nil; want an error", bad.lease, bad.limit, tokens(rs))
		}
	}
	checkCounts(t, "after the claims", b, map[string]int{store.RegActive: 8})
}

func (s *suite) testClaimDueRace(t *testing.T) {
	a, b, _ := s.nodes(t)
	base := time.Now().Truncate(time.Second)
	const n = 60
	for i := range n {
		st := a
		if i%2 == 1 {
			st = b
		}
		putRegistration(t, st, RegistrationFixture(fmt.Sprintf("race-%02d", i), "sip:race@example.com", "d", base.Add(-time.Duration(i)*time.Millisecond)), false)
	}
	c := ctx(t)
	var mu sync.Mutex
	seen := map[string]int{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 6 {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			<-start
			for {
				rs, err := st.ClaimDue(c, base, time.Hour, 4)
				if err != nil {
					t.Errorf("ClaimDue (claimer %d): %v", i, err)
					return
				}
				if len(rs) == 0 {
					return
				}
				mu.Lock()
				for _, r := range rs {
					seen[r.Token]++
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if len(seen) != n {
		t.Errorf("racing claims returned %d distinct records, want %d", len(seen), n)
	}
	for tok, k := range seen {
		if k != 1 {
			t.Errorf("record %q claimed %d times within its lease", tok, k)
		}
	}
}

func (s *suite) testRegistrationCount(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	checkCounts(t, "with no records", a, nil)
	put := func(st store.Store, tok, state string) store.Registration {
		t.Helper()
		r := RegistrationFixture(tok, "sip:count@example.com", "d-"+tok, now)
		r.State = state
		return putRegistration(t, st, r, false)
	}
	put(a, "c1", store.RegActive)
	put(b, "c2", store.RegActive)
	c3 := put(a, "c3", store.RegActive)
	put(b, "c4", store.RegBackingOff)
	c5 := put(a, "c5", store.RegBackingOff)
	c6 := put(b, "c6", store.RegNeedsLogin)
	checkCounts(t, "after puts", b, map[string]int{store.RegActive: 3, store.RegBackingOff: 2, store.RegNeedsLogin: 1})

	// A put in the same state counts once; a state change moves the count.
	put(a, "c1", store.RegActive)
	c3.State = store.RegNeedsLogin
	c3 = putRegistration(t, b, c3, true)
	checkCounts(t, "after a state change", a, map[string]int{store.RegActive: 2, store.RegBackingOff: 2, store.RegNeedsLogin: 2})
	// A refused put changes nothing.
	stale := c5
	stale.Gen = 0
	stale.State = store.RegActive
	if _, err := a.PutRegistration(ctx(t), stale, true); !errors.Is(err, store.ErrConflict) {
		t.Errorf("PutRegistration(stale gen): %v, want ErrConflict", err)
	}
	// A claim changes nothing either.
	claimDue(t, a, now.Add(time.Second), time.Hour, 100)
	checkCounts(t, "after a refused put and a claim", b, map[string]int{store.RegActive: 2, store.RegBackingOff: 2, store.RegNeedsLogin: 2})

	// The last record of a state takes the state out of the map.
	for _, tok := range []string{c6.Token, c3.Token} {
		if err := a.DeleteRegistration(ctx(t), tok); err != nil {
			t.Fatalf("DeleteRegistration(%q): %v", tok, err)
		}
	}
	checkCounts(t, "after deletes", b, map[string]int{store.RegActive: 2, store.RegBackingOff: 2})
	// Any state is counted as given, the empty one too.
	put(b, "c7", "")
	put(b, "c8", "custom")
	put(a, "c4", "")
	checkCounts(t, "with other states", a, map[string]int{store.RegActive: 2, store.RegBackingOff: 1, "": 2, "custom": 1})
	for _, tok := range []string{"c1", "c2", "c4", "c5", "c7", "c8"} {
		if err := b.DeleteRegistration(ctx(t), tok); err != nil {
			t.Fatalf("DeleteRegistration(%q): %v", tok, err)
		}
	}
	checkCounts(t, "after deleting every record", a, nil)
}

func (s *suite) testRegistrationConditionalRace(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	const writers = 8
	c := ctx(t)
	r := putRegistration(t, a, RegistrationFixture("tok-race", "sip:race@example.com", "d", now.Add(time.Hour)), false)
	for round := range 10 {
		gens := make([]uint64, writers)
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range writers {
			st := a
			if i%2 == 1 {
				st = b
			}
			w := r
			w.CallID = fmt.Sprintf("writer-%d", i)
			w.CSeq = uint32(round)
			wg.Go(func() {
				<-start
				gens[i], errs[i] = st.PutRegistration(c, w, true)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: writers %d and %d both won", round, winner, i)
				}
				winner = i
				if gens[i] != r.Gen+1 {
					t.Errorf("round %d: the winner got gen %d, want %d", round, gens[i], r.Gen+1)
				}
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("round %d: writer %d: %v, want success or ErrConflict", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no conditional write won (%v)", round, errs)
		}
		got := getRegistration(t, b, r.Token)
		if want := fmt.Sprintf("writer-%d", winner); got.CallID != want || got.Gen != r.Gen+1 {
			t.Fatalf("round %d: stored %q at gen %d, want %q at gen %d", round, got.CallID, got.Gen, want, r.Gen+1)
		}
		r = got
	}

	// Unconditional writers each get their own generation.
	gens := make([]uint64, writers)
	var wg sync.WaitGroup
	for i := range writers {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			gen, err := st.PutRegistration(c, r, false)
			if err != nil {
				t.Errorf("unconditional writer %d: %v", i, err)
			}
			gens[i] = gen
		})
	}
	wg.Wait()
	slices.Sort(gens)
	for i, g := range gens {
		if want := r.Gen + 1 + uint64(i); g != want {
			t.Errorf("unconditional writers got gens %d, want %d..%d", gens, r.Gen+1, r.Gen+writers)
			break
		}
	}
	if got := getRegistration(t, a, r.Token); got.Gen != r.Gen+writers {
		t.Errorf("gen after %d unconditional writes = %d, want %d", writers, got.Gen, r.Gen+writers)
	}
}

func (s *suite) testRegistrationBinarySafe(t *testing.T) {
	st := s.open(t, NodeA)
	base := time.Now().Truncate(time.Second)
	// Tokens, AORs, instances and states chosen to collide under naive key,
	// index or field schemes, and bytes JSON cannot carry as strings.
	var rs []store.Registration
	for i, p := range []struct{ token, aor, instance, state string }{
		{"a\x00b", "sip:\xffodd@example.com", "i\x00\xff", "st\x00"},
		{"a", "sip:a", "i", store.RegActive},
		{"a\x00", "sip:a\x00", "i\x00", store.RegActive},
		{"\x00\x01", "sip:a\x00\x01b", "\x00\x01", "\x00\x01"},
		{"b\x00\x01", "sip:a\x00\x01b", "i", store.RegActive},
		{"{reg}", "sip:{brace}@x", "{i}", "{reg}"},
		{"x}:y", "sip:x}:y@x", "data", "gen"},
		{"*?[]\\", "sip:a*?[]\\@x", "ix", "put"},
		{"ü📱\xc3\x28", "sip:ünïcødé@例え.jp", "nöde", "st\xff"},
		{"\xff\xff", "\xff", "\xff", store.RegBackingOff},
		{"reg:{reg}:a", "sip:a", "x", store.RegBackingOff},
	} {
		r := RegistrationFixture(p.token, p.aor, p.instance, base.Add(-time.Duration(20-i)*time.Second))
		r.State = p.state
		rs = append(rs, putRegistration(t, st, r, true))
	}
	sorted := slices.Clone(rs)
	store.SortRegistrations(sorted)
	checkRegistrationList(t, "ListRegistrations(all)", listRegistrations(t, st, store.RegistrationFilter{}), sorted...)
	counts := map[string]int{}
	for _, r := range rs {
		checkRegistration(t, fmt.Sprintf("Registration(%q)", r.Token), getRegistration(t, st, r.Token), r)
		var want []store.Registration
		for _, o := range sorted {
			if o.AOR == r.AOR {
				want = append(want, o)
			}
		}
		checkRegistrationList(t, fmt.Sprintf("ListRegistrations(aor %q)", r.AOR),
			listRegistrations(t, st, store.RegistrationFilter{AOR: r.AOR}), want...)
		counts[r.State]++
	}
	checkCounts(t, "CountRegistrations", st, counts)
	checkRegistrationList(t, "ClaimDue(all)", claimDue(t, st, base, time.Hour, 100), rs...)
	// Conditional writes compare the raw token.
	r := rs[0]
	r.Token = "a\x00c"
	if gen, err := st.PutRegistration(ctx(t), r, true); !errors.Is(err, store.ErrConflict) {
		t.Errorf("conditional put of %q at gen 1 = %d, %v; want ErrConflict (the record of %q has gen 1)", r.Token, gen, err, rs[0].Token)
	}
	for _, r := range rs {
		if err := st.DeleteRegistration(ctx(t), r.Token); err != nil {
			t.Errorf("DeleteRegistration(%q): %v", r.Token, err)
		}
	}
	checkRegistrationList(t, "ListRegistrations after deleting all", listRegistrations(t, st, store.RegistrationFilter{}))
	checkRegistrationList(t, "ClaimDue after deleting all", claimDue(t, st, base.Add(2*time.Hour), time.Hour, 100))
	checkCounts(t, "CountRegistrations after deleting all", st, nil)
}

func (s *suite) testRegistrationRestart(t *testing.T) {
	st := s.open(t, NodeA)
	base := time.Now().Truncate(time.Second)
	r := putRegistration(t, st, RegistrationFixture("tok-restart", "sip:gus@example.com", "d", base), false)
	r = putRegistration(t, st, r, true)
	checkRegistrationList(t, "ClaimDue before closing", claimDue(t, st, base, time.Hour, 10), r)
	acct := AccountFixture("sip:gus@example.com", base)
	putAccount(t, st, acct)
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	st = s.open(t, NodeA)
	checkRegistration(t, "Registration after reopening", getRegistration(t, st, r.Token), r)
	checkCounts(t, "CountRegistrations after reopening", st, map[string]int{store.RegActive: 1})
	checkRegistrationList(t, "ClaimDue within the lease after reopening", claimDue(t, st, base.Add(time.Minute), time.Hour, 10))
	checkRegistrationList(t, "ClaimDue after the lease after reopening", claimDue(t, st, base.Add(time.Hour), time.Hour, 10), r)
	checkAccount(t, "Account after reopening", getAccount(t, st, acct.AOR), acct)
}

// AccountFixture returns a fully populated account of aor updated at
// updated; its Sealed holds every byte value.
func AccountFixture(aor string, updated time.Time) store.Account {
	sealed := make([]byte, 0, 256+12)
	sealed = append(sealed, "nonce-12byte"...)
	for c := range 256 {
		sealed = append(sealed, byte(c))
	}
	return store.Account{
		AOR:        aor,
		KeyID:      "k2025",
		Sealed:     sealed,
		Realms:     []string{"", "pbx.example.com"},
		Algorithms: []string{"MD5", "SHA-256"},
		Updated:    updated,
	}
}

// normalizeAccount makes accounts comparable with reflect.DeepEqual.
func normalizeAccount(a store.Account) store.Account {
	a.Updated = a.Updated.UTC()
	if len(a.Sealed) == 0 {
		a.Sealed = nil
	}
	if len(a.Realms) == 0 {
		a.Realms = nil
	}
	if len(a.Algorithms) == 0 {
		a.Algorithms = nil
	}
	return a
}

func checkAccount(t *testing.T, what string, got, want store.Account) {
	t.Helper()
	if g, w := normalizeAccount(got), normalizeAccount(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %+q\nwant %+q", what, g, w)
	}
}

func putAccount(t *testing.T, st store.Store, a store.Account) {
	t.Helper()
	if err := st.PutAccount(ctx(t), a); err != nil {
		t.Fatalf("PutAccount(%q): %v", a.AOR, err)
	}
}

func getAccount(t *testing.T, st store.Store, aor string) store.Account {
	t.Helper()
	a, err := st.Account(ctx(t), aor)
	if err != nil {
		t.Fatalf("Account(%q): %v", aor, err)
	}
	return a
}

func listAccounts(t *testing.T, st store.Store) []store.Account {
	t.Helper()
	as, err := st.ListAccounts(ctx(t))
	if err != nil {
		t.Fatalf("ListAccounts: %v", err)
	}
	return as
}

func checkAccountList(t *testing.T, what string, got []store.Account, want ...store.Account) {
	t.Helper()
	aors := func(as []store.Account) []string {
		out := []string{}
		for _, a := range as {
			out = append(out, a.AOR)
		}
		return out
	}
	if !reflect.DeepEqual(aors(got), aors(want)) {
		t.Errorf("%s: aors %q, want %q", what, aors(got), aors(want))
		return
	}
	for i := range got {
		checkAccount(t, fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
	}
}

func (s *suite) testAccounts(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	checkAccountList(t, "ListAccounts with none", listAccounts(t, a))
	for _, aor := range []string{"sip:alice@example.com", ""} {
		if got, err := a.Account(ctx(t), aor); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Account(%q) = %+q, %v; want ErrNotFound", aor, got, err)
		}
	}

	var accts []store.Account
	// AORs chosen to collide under naive schemes; bytes JSON cannot carry.
	for i, aor := range []string{"sip:zed@example.com", "sip:alice@example.com", "sip:a", "sip:a\x00",
		"\xff", "sip:{acct}@x", "sip:ünïcødé@例え.jp", "sip:a\x00\x01b"} {
		ac := AccountFixture(aor, now.Add(time.Duration(i)*time.Second))
		if i == 1 {
			ac.Realms, ac.Algorithms = nil, nil
		}
		st := a
		if i%2 == 1 {
			st = b
		}
		putAccount(t, st, ac)
		accts = append(accts, ac)
	}
	sorted := slices.Clone(accts)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].AOR < sorted[j].AOR })
	checkAccountList(t, "ListAccounts", listAccounts(t, b), sorted...)
	for _, ac := range accts {
		checkAccount(t, fmt.Sprintf("Account(%q)", ac.AOR), getAccount(t, a, ac.AOR), ac)
	}

	// Replacing keeps one account with the new content.
	next := accts[1]
	next.KeyID = "k2026"
	next.Sealed = []byte{0, 1, 2}
	next.Realms = []string{"other.example.com"}
	next.Updated = now.Add(time.Hour)
	putAccount(t, a, next)
	checkAccount(t, "Account after replace", getAccount(t, b, next.AOR), next)
	if got := listAccounts(t, a); len(got) != len(accts) {
		t.Errorf("ListAccounts after replace: %d accounts, want %d", len(got), len(accts))
	}

	for _, aor := range []string{"sip:a", "sip:a\x00"} {
		if err := b.DeleteAccount(ctx(t), aor); err != nil {
			t.Fatalf("DeleteAccount(%q): %v", aor, err)
		}
		if got, err := a.Account(ctx(t), aor); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Account(%q) after delete = %+q, %v; want ErrNotFound", aor, got, err)
		}
	}
	for _, aor := range []string{"sip:a", "unknown", ""} {
		if err := a.DeleteAccount(ctx(t), aor); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteAccount(%q): %v, want ErrNotFound", aor, err)
		}
	}
	var left []store.Account
	for _, ac := range sorted {
		switch ac.AOR {
		case "sip:a", "sip:a\x00":
		case next.AOR:
			left = append(left, next)
		default:
			left = append(left, ac)
		}
	}
	checkAccountList(t, "ListAccounts after deletes", listAccounts(t, a), left...)
	if err := a.PutAccount(ctx(t), AccountFixture("", now)); err == nil {
		t.Error("PutAccount with an empty AOR succeeded")
	}
}

// sortedCounts lists counts as "state=n" pairs sorted by state, for a
// failure message.
func sortedCounts(counts map[string]int) []string {
	out := make([]string, 0, len(counts))
	for state, n := range counts {
		out = append(out, fmt.Sprintf("%s=%d", state, n))
	}
	sort.Strings(out)
	return out
}
