package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipwake/sipwake/store"
)

// OpenFunc opens a store for the node nodeID within test t.
//
// Every store opened under the same t must see the same data (they stand
// for several nodes sharing one backend), and stores opened under different
// tests must not share data (the suite runs its tests in parallel). The
// function closes the store in t.Cleanup; the suite may close a store
// itself before, so Close must be idempotent. A store opened under t after
// the suite closed the previous one stands for a restarted node: it must
// see the data too (for a file-backed store, open the same file for the
// same t).
type OpenFunc func(t *testing.T, nodeID string) store.Store

// Options adapts the suite to a backend's capabilities.
type Options struct {
	// SingleNode says the backend serves one node only (the embedded
	// store): the tests that need a second node (events seen by another
	// node, racing writers on two nodes) then run with both roles on one
	// store, and expect that store's node id in events. The suite does not
	// pretend a single-node backend is shared.
	SingleNode bool
}

// Node ids the suite opens stores with.
const (
	NodeA = "node-a"
	NodeB = "node-b"
)

// waitFor is the deadline for anything the suite polls or waits for.
const waitFor = 10 * time.Second

// Run runs the conformance suite against a multi-node backend.
func Run(t *testing.T, open func(t *testing.T, nodeID string) store.Store) {
	t.Helper()
	RunWithOptions(t, open, Options{})
}

// RunWithOptions runs the conformance suite with the given capabilities.
func RunWithOptions(t *testing.T, open OpenFunc, opt Options) {
	t.Helper()
	s := &suite{open: open, opt: opt}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"PutGetReplace", s.testPutGetReplace},
		{"OldestFirst", s.testOldestFirst},
		{"MaxBindings", s.testMaxBindings},
		{"SameTokenOtherInstance", s.testSameToken},
		{"Expiry", s.testExpiry},
		{"Delete", s.testDelete},
		{"BindingByToken", s.testBindingByToken},
		{"ListBindings", s.testListBindings},
		{"CountBindings", s.testCountBindings},
		{"BinarySafeKeys", s.testBinarySafe},
		{"EventsOtherNode", s.testEvents},
		{"EventNoMessages", s.testEventNoMessages},
		{"ConcurrentPutMax", s.testConcurrentPut},
		{"ConcurrentChurnMax", s.testConcurrentChurn},
		{"SubscribeCancel", s.testSubscribeCancel},
		{"Close", s.testClose},
		{"Ping", s.testPing},
		{"Secret", s.testSecret},
		{"SecretRestart", s.testSecretRestart},
		{"SecretConcurrentCreate", s.testSecretRace},
		{"ClearPush", s.testClearPush},
		{"ClearPushStaleToken", s.testClearPushStale},
		{"ClearPushEvents", s.testClearPushEvents},
		{"Publish", s.testPublish},
		{"HeldPutList", s.testHeldPutList},
		{"HeldBinarySafe", s.testHeldBinarySafe},
		{"HeldDelete", s.testHeldDelete},
		{"HeldClaim", s.testHeldClaim},
		{"HeldClaimRace", s.testHeldClaimRace},
		{"HeldExpiry", s.testHeldExpiry},
		{"HeldRestart", s.testHeldRestart},
		{"NodeHeartbeat", s.testNodeHeartbeat},
		{"MessagePutDuplicate", s.testMessagePutDuplicate},
		{"MessageDuplicateRace", s.testMessageDuplicateRace},
		{"MessageOrder", s.testMessageOrder},
		{"MessagesFor", s.testMessagesFor},
		{"MessageAcknowledge", s.testMessageAcknowledge},
		{"MessageAcknowledgeRace", s.testMessageAcknowledgeRace},
		{"MessageAddPending", s.testMessageAddPending},
		{"MessageExpiry", s.testMessageExpiry},
		{"MessageBinarySafe", s.testMessageBinarySafe},
		{"MessageRestart", s.testMessageRestart},
		{"Lease", s.testLease},
		{"RegistrationPutGet", s.testRegistrationPutGet},
		{"RegistrationGen", s.testRegistrationGen},
		{"RegistrationList", s.testRegistrationList},
		{"RegistrationDelete", s.testRegistrationDelete},
		{"RegistrationClaimDue", s.testClaimDue},
		{"RegistrationClaimDueRace", s.testClaimDueRace},
		{"RegistrationCount", s.testRegistrationCount},
		{"RegistrationConditionalRace", s.testRegistrationConditionalRace},
		{"RegistrationBinarySafe", s.testRegistrationBinarySafe},
		{"RegistrationRestart", s.testRegistrationRestart},
		{"Accounts", s.testAccounts},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct {
	open OpenFunc
	opt  Options
}

// nodes opens the store of node A and of node B; for a single-node backend
// both are the same store of node A.
func (s *suite) nodes(t *testing.T) (a, b store.Store, nodeB string) {
	t.Helper()
	a = s.open(t, NodeA)
	if s.opt.SingleNode {
		return a, a, NodeA
	}
	return a, s.open(t, NodeB), NodeB
}

// ctx returns a context for one test step.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	return c
}

// Fixture returns a fully populated binding, expiring ttl from now, so that
// a round trip through a store exercises every field.
func Fixture(aor, instance, token string, ttl time.Duration) store.Binding {
	now := time.Now()
	return store.Binding{
		AOR:         aor,
		Instance:    instance,
		SIPInstance: "<urn:uuid:00000000-0000-4000-8000-000000000001>",
		RegID:       1,
		Contact:     "sip:alice@192.0.2.10:5062;transport=tcp",
		Source:      "192.0.2.10:5062",
		Transport:   "tcp",
		Flow:        store.Flow{Node: NodeA, Conn: "192.0.2.10:5062", NodeURI: "sip:192.0.2.1:5060;transport=tcp"},
		Push: &store.PushTarget{
			Provider: "apns",
			Token:    "voip-" + token,
			Param:    "ABCDE12345.com.example.phone.voip",
			PURR:     "purr-1",
			Types:    []string{"voip", "remote"},
			Tokens:   map[string]string{"voip": "voip-" + token, "remote": "remote-" + token},
			Legacy:   map[string]string{"pn-silent": "1", "pn-timeout": "0"},
		},
		Token:     token,
		Expires:   now.Add(ttl),
		Upstream:  store.Upstream{CallID: "call-" + token, CSeq: 7, Expires: now.Add(ttl + time.Minute)},
		UserAgent: "Example Phone/1.0",
		LastSeen:  now,
	}
}

// normalize makes bindings comparable with reflect.DeepEqual: times lose
// their monotonic reading and location.
func normalize(b store.Binding) store.Binding {
	b.Expires = b.Expires.UTC()
	b.LastSeen = b.LastSeen.UTC()
	b.Upstream.Expires = b.Upstream.Expires.UTC()
	return b
}

func sameBinding(got, want store.Binding) bool {
	return reflect.DeepEqual(normalize(got), normalize(want))
}

func checkBinding(t *testing.T, what string, got, want store.Binding) {
	t.Helper()
	if !sameBinding(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, normalize(got), normalize(want))
	}
}

// put stores b and fails the test on error; it returns whether a live
// binding was replaced.
func put(t *testing.T, st store.Store, b store.Binding, max int) bool {
	t.Helper()
	replaced, err := st.PutBinding(ctx(t), b, max)
	if err != nil {
		t.Fatalf("PutBinding(%q, %q, max %d): %v", b.AOR, b.Instance, max, err)
	}
	return replaced
}

// instances lists the instances of bs in order.
func instances(bs []store.Binding) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Instance
	}
	return out
}

func bindings(t *testing.T, st store.Store, aor string) []store.Binding {
	t.Helper()
	bs, err := st.Bindings(ctx(t), aor)
	if err != nil {
		t.Fatalf("Bindings(%q): %v", aor, err)
	}
	return bs
}

func checkInstances(t *testing.T, what string, bs []store.Binding, want ...string) {
	t.Helper()
	got := instances(bs)
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: instances %q, want %q", what, got, want)
	}
}

func checkNotFoundByToken(t *testing.T, st store.Store, token string) {
	t.Helper()
	b, err := st.BindingByToken(ctx(t), token)
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("BindingByToken(%q) = %q/%q, %v; want ErrNotFound", token, b.AOR, b.Instance, err)
	}
}

// eventually polls cond until it returns "" or the deadline passes, then
// fails with cond's last complaint.
func eventually(t *testing.T, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", waitFor, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *suite) testPutGetReplace(t *testing.T) {
	st := s.open(t, NodeA)
	const aor = "sip:alice@example.com"
	b1 := Fixture(aor, "dev-1", "tok-1", time.Hour)
	if put(t, st, b1, 10) {
		t.Fatal("first put reported a replaced binding")
	}
	got := bindings(t, st, aor)
	if len(got) != 1 {
		t.Fatalf("Bindings after first put: %d bindings, want 1", len(got))
	}
	checkBinding(t, "stored binding", got[0], b1)
	if got[0].Flow.NodeURI != b1.Flow.NodeURI {
		t.Errorf("stored Flow.NodeURI = %q, want %q", got[0].Flow.NodeURI, b1.Flow.NodeURI)
	}

	// Same instance: replaced, old token unlinked.
	b1b := Fixture(aor, "dev-1", "tok-1b", 2*time.Hour)
	b1b.Contact = "sip:alice@192.0.2.11:5070;transport=tls"
	b1b.Transport = "tls"
	b1b.Push = nil
	if !put(t, st, b1b, 10) {
		t.Fatal("replacing put reported no replaced binding")
	}
	got = bindings(t, st, aor)
	if len(got) != 1 {
		t.Fatalf("Bindings after replace: %d bindings, want 1", len(got))
	}
	checkBinding(t, "replaced binding", got[0], b1b)
	checkNotFoundByToken(t, st, "tok-1")
	if b, err := st.BindingByToken(ctx(t), "tok-1b"); err != nil {
		t.Errorf("BindingByToken(new token): %v", err)
	} else {
		checkBinding(t, "BindingByToken(new token)", b, b1b)
	}

	// Another instance adds a binding.
	b2 := Fixture(aor, "dev-2", "tok-2", time.Hour)
	b2.LastSeen = b1b.LastSeen.Add(time.Second)
	if put(t, st, b2, 10) {
		t.Fatal("put of a second instance reported a replaced binding")
	}
	checkInstances(t, "Bindings after second instance", bindings(t, st, aor), "dev-1", "dev-2")
	// Other AORs are unaffected.
	checkInstances(t, "Bindings of another AOR", bindings(t, st, "sip:bob@example.com"))
}

func (s *suite) testOldestFirst(t *testing.T) {
	st := s.open(t, NodeA)
	const aor = "sip:carol@example.com"
	t0 := time.Now().Add(-time.Minute)
	for i, tc := range []struct {
		inst string
		seen time.Duration
	}{{"c", 2 * time.Second}, {"a", 0}, {"b", time.Second}, {"d", time.Second}} {
		b := Fixture(aor, tc.inst, fmt.Sprintf("tok-%d", i), time.Hour)
		b.LastSeen = t0.Add(tc.seen)
		put(t, st, b, 0)
	}
	// LastSeen ascending, ties by instance.
	checkInstances(t, "Bindings order", bindings(t, st, aor), "a", "b", "d", "c")
}

func (s *suite) testMaxBindings(t *testing.T) {
	tests := []struct {
		name string
		max  int
		// existing instances, put in order with max 0.
		existing []string
		put      store.Binding
		wantErr  error
		want     []string // instances after, sorted
	}{
		{"under max", 3, []string{"a"}, Fixture("", "b", "tok-b", time.Hour), nil, []string{"a", "b"}},
		{"at max new instance", 2, []string{"a", "b"}, Fixture("", "c", "tok-c", time.Hour), store.ErrTooManyBindings, []string{"a", "b"}},
		{"over max new instance", 1, []string{"a", "b"}, Fixture("", "c", "tok-c", time.Hour), store.ErrTooManyBindings, []string{"a", "b"}},
		{"at max replace", 2, []string{"a", "b"}, Fixture("", "a", "tok-a2", time.Hour), nil, []string{"a", "b"}},
		{"over max replace (max lowered)", 1, []string{"a", "b"}, Fixture("", "b", "tok-b2", time.Hour), nil, []string{"a", "b"}},
		{"at max same token drops old", 2, []string{"a", "b"}, Fixture("", "c", "tok-a", time.Hour), nil, []string{"b", "c"}},
		{"zero means no limit", 0, []string{"a", "b", "c", "d", "e"}, Fixture("", "f", "tok-f", time.Hour), nil, []string{"a", "b", "c", "d", "e", "f"}},
		{"one", 1, nil, Fixture("", "a", "tok-a", time.Hour), nil, []string{"a"}},
	}
	st := s.open(t, NodeA)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			aor := fmt.Sprintf("sip:max%d@example.com", i)
			for _, inst := range tc.existing {
				put(t, st, Fixture(aor, inst, "tok-"+inst, time.Hour), 0)
			}
			b := tc.put
			b.AOR = aor
			replaced, err := st.PutBinding(ctx(t), b, tc.max)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("PutBinding: %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if replaced {
					t.Error("failed PutBinding reported a replaced binding")
				}
				checkNotFoundByToken(t, st, b.Token)
			}
			got := instances(bindings(t, st, aor))
			sort.Strings(got)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("instances after: %q, want %q", got, tc.want)
			}
		})
	}
}

func (s *suite) testSameToken(t *testing.T) {
	st := s.open(t, NodeA)
	const aor = "sip:dave@example.com"
	put(t, st, Fixture(aor, "old-install", "tok-shared", time.Hour), 10)
	put(t, st, Fixture(aor, "other", "tok-other", time.Hour), 10)
	nb := Fixture(aor, "new-install", "tok-shared", time.Hour)
	if put(t, st, nb, 10) {
		t.Error("put reported a replaced binding (another instance is dropped, not replaced)")
	}
	got := instances(bindings(t, st, aor))
	sort.Strings(got)
	if want := []string{"new-install", "other"}; !reflect.DeepEqual(got, want) {
		t.Errorf("instances %q, want %q", got, want)
	}
	b, err := st.BindingByToken(ctx(t), "tok-shared")
	if err != nil {
		t.Fatalf("BindingByToken: %v", err)
	}
	checkBinding(t, "BindingByToken(shared token)", b, nb)
	if err := st.DeleteBinding(ctx(t), aor, "old-install"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteBinding(dropped instance): %v, want ErrNotFound", err)
	}
	// An empty token matches nothing.
	put(t, st, Fixture(aor, "no-token-1", "", time.Hour), 10)
	put(t, st, Fixture(aor, "no-token-2", "", time.Hour), 10)
	if n := len(bindings(t, st, aor)); n != 4 {
		t.Errorf("after two token-less puts: %d bindings, want 4", n)
	}
	checkNotFoundByToken(t, st, "")
}

func (s *suite) testExpiry(t *testing.T) {
	st := s.open(t, NodeA)
	const aor = "sip:erin@example.com"
	short := Fixture(aor, "short", "tok-short", 1500*time.Millisecond)
	long := Fixture(aor, "long", "tok-long", time.Hour)
	past := Fixture(aor, "past", "tok-past", -time.Second)
	put(t, st, short, 2)
	put(t, st, long, 2)
	// A binding put already expired is never returned and does not count.
	put(t, st, past, 0)
	checkNotFoundByToken(t, st, "tok-past")

	got := instances(bindings(t, st, aor))
	sort.Strings(got)
	if want := []string{"long", "short"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("before expiry: instances %q, want %q", got, want)
	}
	if _, err := st.BindingByToken(ctx(t), "tok-short"); err != nil {
		t.Fatalf("BindingByToken before expiry: %v", err)
	}

	eventually(t, func() string {
		if got := instances(bindings(t, st, aor)); !reflect.DeepEqual(got, []string{"long"}) {
			return fmt.Sprintf("Bindings: instances %q, want only %q", got, "long")
		}
		return ""
	})
	if !time.Now().After(short.Expires) {
		t.Fatalf("short binding gone before its expiry %s", short.Expires)
	}
	checkNotFoundByToken(t, st, "tok-short")
	all, err := st.ListBindings(ctx(t), store.ListOptions{})
	if err != nil {
		t.Fatalf("ListBindings: %v", err)
	}
	checkInstances(t, "ListBindings after expiry", all, "long")
	if err := st.DeleteBinding(ctx(t), aor, "short"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteBinding(expired): %v, want ErrNotFound", err)
	}
	// Expired bindings do not count toward the limit, and re-registering
	// an expired instance replaces nothing.
	again := Fixture(aor, "short", "tok-short-2", time.Hour)
	replaced, err := st.PutBinding(ctx(t), again, 2)
	if err != nil {
		t.Fatalf("PutBinding after expiry with max 2: %v", err)
	}
	if replaced {
		t.Error("PutBinding over an expired instance reported a replaced binding")
	}
}

func (s *suite) testDelete(t *testing.T) {
	st := s.open(t, NodeA)
	const aor = "sip:frank@example.com"
	put(t, st, Fixture(aor, "a", "tok-a", time.Hour), 0)
	put(t, st, Fixture(aor, "b", "tok-b", time.Hour), 0)
	put(t, st, Fixture(aor, "c", "tok-c", time.Hour), 0)
	put(t, st, Fixture("sip:other@example.com", "a", "tok-o", time.Hour), 0)

	if err := st.DeleteBinding(ctx(t), aor, "a"); err != nil {
		t.Fatalf("DeleteBinding: %v", err)
	}
	if err := st.DeleteBinding(ctx(t), aor, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteBinding: %v, want ErrNotFound", err)
	}
	if err := st.DeleteBinding(ctx(t), "sip:nobody@example.com", "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteBinding(unknown AOR): %v, want ErrNotFound", err)
	}
	checkNotFoundByToken(t, st, "tok-a")
	got := instances(bindings(t, st, aor))
	sort.Strings(got)
	if want := []string{"b", "c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after DeleteBinding: instances %q, want %q", got, want)
	}

	n, err := st.DeleteAOR(ctx(t), aor)
	if err != nil || n != 2 {
		t.Fatalf("DeleteAOR = %d, %v; want 2, nil", n, err)
	}
	checkInstances(t, "after DeleteAOR", bindings(t, st, aor))
	checkNotFoundByToken(t, st, "tok-b")
	checkNotFoundByToken(t, st, "tok-c")
	if n, err := st.DeleteAOR(ctx(t), aor); err != nil || n != 0 {
		t.Errorf("second DeleteAOR = %d, %v; want 0, nil", n, err)
	}
	checkInstances(t, "other AOR after DeleteAOR", bindings(t, st, "sip:other@example.com"), "a")
	// The AOR works again after being emptied.
	put(t, st, Fixture(aor, "d", "tok-d", time.Hour), 1)
	checkInstances(t, "after re-register", bindings(t, st, aor), "d")
}

func (s *suite) testBindingByToken(t *testing.T) {
	st := s.open(t, NodeA)
	b1 := Fixture("sip:gina@example.com", "a", "tok-g1", time.Hour)
	b2 := Fixture("sip:hank@example.com", "a", "tok-h1", time.Hour)
	put(t, st, b1, 0)
	put(t, st, b2, 0)
	for _, want := range []store.Binding{b1, b2} {
		got, err := st.BindingByToken(ctx(t), want.Token)
		if err != nil {
			t.Errorf("BindingByToken(%q): %v", want.Token, err)
			continue
		}
		checkBinding(t, "BindingByToken", got, want)
	}
	for _, tok := range []string{"tok-unknown", "", "tok-g", "tok-g1 "} {
		checkNotFoundByToken(t, st, tok)
	}
}

// testCountBindings: live bindings counted by provider, "" without a
// push target; expired ones are not counted, a cleared push target moves
// its binding to "".
func (s *suite) testCountBindings(t *testing.T) {
	st := s.open(t, NodeA)
	count := func(want map[string]int) {
		t.Helper()
		got, err := st.CountBindings(ctx(t))
		if err != nil {
			t.Fatalf("CountBindings: %v", err)
		}
		if !maps.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("CountBindings = %v, want %v", got, want)
		}
	}
	count(map[string]int{})
	fcm := Fixture("sip:bob@example.com", "b1", "tok-b1", time.Hour)
	fcm.Push = &store.PushTarget{Provider: "fcm", Token: "fcm-token", Param: "project-1"}
	bare := Fixture("sip:bob@example.com", "b2", "tok-b2", time.Hour)
	bare.Push = nil
	// A string field that looks like a push target is not one.
	bare.UserAgent = `"push":{"provider":"apns"`
	for _, b := range []store.Binding{
		Fixture("sip:amy@example.com", "a1", "tok-a1", time.Hour),
		Fixture("sip:amy@example.com", "a2", "tok-a2", time.Hour),
		Fixture("sip:cy@example.com", "c1", "tok-c1", time.Hour),
		Fixture("sip:cy@example.com", "expired", "tok-exp", -time.Second),
		fcm, bare,
	} {
		put(t, st, b, 0)
	}
	count(map[string]int{"apns": 3, "fcm": 1, "": 1})
	if ok, err := st.ClearPush(ctx(t), "sip:cy@example.com", "c1", "voip-tok-c1"); err != nil || !ok {
		t.Fatalf("ClearPush: %v, %v", ok, err)
	}
	if err := st.DeleteBinding(ctx(t), "sip:amy@example.com", "a2"); err != nil {
		t.Fatalf("DeleteBinding: %v", err)
	}
	count(map[string]int{"apns": 1, "fcm": 1, "": 2})
}

func (s *suite) testListBindings(t *testing.T) {
	st := s.open(t, NodeA)
	// Inserted out of order; one expired binding must never show.
	for _, p := range [][2]string{
		{"sip:zed@example.com", "b"}, {"sip:amy@example.com", "c"}, {"sip:mo@example.com", "a"},
		{"sip:amy@example.com", "a"}, {"sip:zed@example.com", "a"}, {"sip:amy@example.com", "b"},
	} {
		put(t, st, Fixture(p[0], p[1], p[0]+"/"+p[1], time.Hour), 0)
	}
	put(t, st, Fixture("sip:amy@example.com", "expired", "tok-exp", -time.Second), 0)
	all := []string{
		"sip:amy@example.com/a", "sip:amy@example.com/b", "sip:amy@example.com/c",
		"sip:mo@example.com/a", "sip:zed@example.com/a", "sip:zed@example.com/b",
	}
	tests := []struct {
		name string
		opt  store.ListOptions
		want []string
	}{
		{"all", store.ListOptions{}, all},
		{"limit", store.ListOptions{Limit: 2}, all[:2]},
		{"limit above count", store.ListOptions{Limit: 100}, all},
		{"aor", store.ListOptions{AOR: "sip:amy@example.com"}, all[:3]},
		{"aor and limit", store.ListOptions{AOR: "sip:zed@example.com", Limit: 1}, all[4:5]},
		{"unknown aor", store.ListOptions{AOR: "sip:nobody@example.com"}, nil},
		{"aor prefix is not a match", store.ListOptions{AOR: "sip:amy"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bs, err := st.ListBindings(ctx(t), tc.opt)
			if err != nil {
				t.Fatalf("ListBindings(%+v): %v", tc.opt, err)
			}
			var got []string
			for _, b := range bs {
				got = append(got, b.AOR+"/"+b.Instance)
				if b.Token != b.AOR+"/"+b.Instance {
					t.Errorf("binding %q/%q has token %q: fields mixed up", b.AOR, b.Instance, b.Token)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ListBindings(%+v):\n got %q\nwant %q", tc.opt, got, tc.want)
			}
		})
	}
}

func (s *suite) testBinarySafe(t *testing.T) {
	st := s.open(t, NodeA)
	// Pairs chosen to collide under naive key schemes: separators inside
	// the AOR or instance, NUL, prefixes, hash-tag braces, glob characters,
	// percent-escapes next to what they escape.
	pairs := []struct{ aor, inst string }{
		{"sip:a%00b@example.com", "<urn:uuid:6fd0e1c2-0000-4000-8000-000000000001>"},
		{"sip:a\x00b@example.com", "inst\x00with-nul"},
		{"sip:a b@example.com", "inst with spaces"},
		{"sip:ünïcødé@例え.jp", "📱 device"},
		{"sip:a", "b:c"},
		{"sip:a:b", "c"},
		{"sip:a", "\x00"},
		{"sip:a\x00", "x"},
		{"sip:ab", "c"},
		{"sip:x}:y", "z"},
		{"sip:x", "y}:z"},
		{"sip:{brace}@x", "{i}"},
		{"sip:%7B@x", "i"},
		{"sip:{@x", "i"},
		{"sip:a*?[]\\@x", "*"},
		{"sip:tab\t@x", "line\nbreak"},
	}
	byAOR := map[string][]string{}
	for i, p := range pairs {
		b := Fixture(p.aor, p.inst, fmt.Sprintf("tok-bin-%d", i), time.Hour)
		put(t, st, b, 0)
		byAOR[p.aor] = append(byAOR[p.aor], p.inst)
	}
	for i, p := range pairs {
		got, err := st.BindingByToken(ctx(t), fmt.Sprintf("tok-bin-%d", i))
		if err != nil {
			t.Errorf("BindingByToken for %q/%q: %v", p.aor, p.inst, err)
			continue
		}
		if got.AOR != p.aor || got.Instance != p.inst {
			t.Errorf("BindingByToken: got %q/%q, want %q/%q", got.AOR, got.Instance, p.aor, p.inst)
		}
	}
	for aor, want := range byAOR {
		got := instances(bindings(t, st, aor))
		sort.Strings(got)
		sort.Strings(want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Bindings(%q): instances %q, want %q", aor, got, want)
		}
	}
	all, err := st.ListBindings(ctx(t), store.ListOptions{})
	if err != nil {
		t.Fatalf("ListBindings: %v", err)
	}
	if len(all) != len(pairs) {
		t.Errorf("ListBindings: %d bindings, want %d", len(all), len(pairs))
	}
	if !sort.SliceIsSorted(all, func(i, j int) bool {
		if all[i].AOR != all[j].AOR {
			return all[i].AOR < all[j].AOR
		}
		return all[i].Instance < all[j].Instance
	}) {
		t.Errorf("ListBindings not sorted by AOR then instance: %q", instances(all))
	}
	for _, p := range pairs {
		if err := st.DeleteBinding(ctx(t), p.aor, p.inst); err != nil {
			t.Errorf("DeleteBinding(%q, %q): %v", p.aor, p.inst, err)
		}
	}
	if all, err := st.ListBindings(ctx(t), store.ListOptions{}); err != nil || len(all) != 0 {
		t.Errorf("ListBindings after deleting all: %d bindings, %v", len(all), err)
	}
}

// expectEvent reads the next event from ch and compares it with want.
func expectEvent(t *testing.T, ch <-chan store.Event, want store.Event) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("subscription closed, want event %+v", want)
		}
		// NoMessages is a hint a store may give or not;
		// testEventNoMessages checks it is never wrong.
		ev.NoMessages = want.NoMessages
		if ev != want {
			t.Fatalf("event %+v, want %+v", ev, want)
		}
	case <-time.After(waitFor):
		t.Fatalf("no event after %s, want %+v", waitFor, want)
	}
}

// testEventNoMessages: a put event never says "no messages" while a
// message for the AOR is stored (subscribers then skip the delivery that
// the device's registration must start); other AORs' messages do not
// count.
func (s *suite) testEventNoMessages(t *testing.T) {
	a, _, _ := s.nodes(t)
	events, err := a.Subscribe(t.Context())
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	const aor, other = "sip:nell@example.com", "sip:otto@example.com"
	put := func(inst string) store.Event {
		t.Helper()
		if _, err := a.PutBinding(ctx(t), Fixture(aor, inst, "tok-"+inst, time.Hour), 0); err != nil {
			t.Fatalf("PutBinding: %v", err)
		}
		select {
		case ev := <-events:
			if ev.Kind != store.EventBindingPut || ev.Instance != inst {
				t.Fatalf("event %+v, want the put of %s", ev, inst)
			}
			return ev
		case <-time.After(waitFor):
			t.Fatalf("no event after %s for the put of %s", waitFor, inst)
		}
		return store.Event{}
	}
	put("d1")
	now := time.Now()
	if _, err := a.PutMessage(ctx(t), MessageFixture("m-other", other, now, now.Add(time.Hour), "x")); err != nil {
		t.Fatalf("PutMessage: %v", err)
	}
	put("d2")
	if _, err := a.PutMessage(ctx(t), MessageFixture("m-1", aor, now, now.Add(time.Hour), "d1")); err != nil {
		t.Fatalf("PutMessage: %v", err)
	}
	if ev := put("d1"); ev.NoMessages {
		t.Fatalf("put event %+v says no messages while one waits for the AOR", ev)
	}
	if ev := put("d3"); ev.NoMessages {
		t.Fatalf("put event %+v (another device) says no messages while one waits for the AOR", ev)
	}
}

func (s *suite) testEvents(t *testing.T) {
	a, b, nodeB := s.nodes(t)
	onB, err := b.Subscribe(t.Context())
	if err != nil {
		t.Fatalf("Subscribe on second node: %v", err)
	}
	onA, err := a.Subscribe(t.Context())
	if err != nil {
		t.Fatalf("Subscribe on first node: %v", err)
	}
	const aor = "sip:ivy@example.com"
	ev := func(kind store.EventKind, inst, node string) store.Event {
		return store.Event{Kind: kind, AOR: aor, Instance: inst, Node: node}
	}
	// Each step completes before the next starts, so both subscribers see
	// the events in this order.
	steps := []struct {
		name string
		do   func() error
		want []store.Event
	}{
		{"put on A", func() error {
			_, err := a.PutBinding(ctx(t), Fixture(aor, "i1", "tok-1", time.Hour), 2)
			return err
		}, []store.Event{ev(store.EventBindingPut, "i1", NodeA)}},
		{"replace on A", func() error {
			_, err := a.PutBinding(ctx(t), Fixture(aor, "i1", "tok-1", 2*time.Hour), 2)
			return err
		}, []store.Event{ev(store.EventBindingPut, "i1", NodeA)}},
		{"put on B", func() error {
			_, err := b.PutBinding(ctx(t), Fixture(aor, "i2", "tok-2", time.Hour), 2)
			return err
		}, []store.Event{ev(store.EventBindingPut, "i2", nodeB)}},
		{"refused put: no event", func() error {
			_, err := a.PutBinding(ctx(t), Fixture(aor, "i3", "tok-3", time.Hour), 2)
			if !errors.Is(err, store.ErrTooManyBindings) {
				return fmt.Errorf("got %v, want ErrTooManyBindings", err)
			}
			return nil
		}, nil},
		{"same token drops i1", func() error {
			_, err := a.PutBinding(ctx(t), Fixture(aor, "i4", "tok-1", time.Hour), 2)
			return err
		}, []store.Event{ev(store.EventBindingDeleted, "i1", NodeA), ev(store.EventBindingPut, "i4", NodeA)}},
		{"delete on A", func() error { return a.DeleteBinding(ctx(t), aor, "i4") },
			[]store.Event{ev(store.EventBindingDeleted, "i4", NodeA)}},
		{"absent delete: no event", func() error {
			if err := a.DeleteBinding(ctx(t), aor, "i4"); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("got %v, want ErrNotFound", err)
			}
			return nil
		}, nil},
		{"delete AOR on B", func() error {
			_, err := b.DeleteAOR(ctx(t), aor)
			return err
		}, []store.Event{ev(store.EventBindingDeleted, "i2", nodeB)}},
		{"marker", func() error {
			_, err := a.PutBinding(ctx(t), Fixture(aor, "end", "tok-end", time.Hour), 0)
			return err
		}, []store.Event{ev(store.EventBindingPut, "end", NodeA)}},
	}
	for _, step := range steps {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		for _, want := range step.want {
			expectEvent(t, onB, want)
			if !s.opt.SingleNode {
				expectEvent(t, onA, want)
			}
		}
	}
	if s.opt.SingleNode {
		// onA and onB are two subscribers of one store: both see all.
		for _, step := range steps {
			for _, want := range step.want {
				expectEvent(t, onA, want)
			}
		}
	}
}

func (s *suite) testClearPush(t *testing.T) {
	a, b, _ := s.nodes(t)
	const aor = "sip:lena@example.com"
	bd := Fixture(aor, "dev", "tok", time.Hour)
	put(t, a, bd, 0)
	clear := func(st store.Store, aor, inst, token string) (bool, error) {
		t.Helper()
		return st.ClearPush(ctx(t), aor, inst, token)
	}
	for _, tok := range []string{"voip-other", "", "tok", "remote-tok", "voip-to", "voip-tok "} {
		if ok, err := clear(b, aor, "dev", tok); ok || err != nil {
			t.Errorf("ClearPush(token %q) = %v, %v; want false, nil (stored token is %q)", tok, ok, err, bd.Push.Token)
		}
	}
	checkBinding(t, "binding after non-matching ClearPush", bindings(t, a, aor)[0], bd)

	if ok, err := clear(b, aor, "dev", bd.Push.Token); !ok || err != nil {
		t.Fatalf("ClearPush(stored token) = %v, %v; want true, nil", ok, err)
	}
	want := bd
	want.Push = nil
	for _, st := range []store.Store{a, b} {
		got := bindings(t, st, aor)
		if len(got) != 1 {
			t.Fatalf("Bindings after ClearPush: %d bindings, want 1", len(got))
		}
		checkBinding(t, "binding after ClearPush (only Push cleared)", got[0], want)
		// The contact token still leads to it.
		if got, err := st.BindingByToken(ctx(t), bd.Token); err != nil {
			t.Errorf("BindingByToken after ClearPush: %v", err)
		} else {
			checkBinding(t, "BindingByToken after ClearPush", got, want)
		}
	}
	if ok, err := clear(a, aor, "dev", bd.Push.Token); ok || err != nil {
		t.Errorf("second ClearPush = %v, %v; want false, nil", ok, err)
	}

	noPush := Fixture(aor, "nopush", "tok-np", time.Hour)
	noPush.Push = nil
	put(t, a, noPush, 0)
	if ok, err := clear(a, aor, "nopush", ""); ok || err != nil {
		t.Errorf("ClearPush of a binding without push = %v, %v; want false, nil", ok, err)
	}
	put(t, a, Fixture(aor, "past", "tok-past", -time.Second), 0)
	for _, tc := range []struct{ aor, inst, token string }{
		{aor, "absent", "voip-tok"},
		{"sip:nobody@example.com", "dev", "voip-tok"},
		{aor, "past", "voip-tok-past"},
		{"sip:lena@example.co", "dev", "voip-tok"},
	} {
		if ok, err := clear(b, tc.aor, tc.inst, tc.token); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ClearPush(%q, %q) = %v, %v; want ErrNotFound", tc.aor, tc.inst, ok, err)
		}
	}
	// The binding still expires when it did.
	if got := bindings(t, a, aor); len(got) != 2 || !got[0].Expires.Equal(bd.Expires) {
		t.Errorf("after ClearPush: %d bindings, first expires %v, want 2 and %v", len(got), got[0].Expires, bd.Expires)
	}
}

func (s *suite) testClearPushStale(t *testing.T) {
	a, b, _ := s.nodes(t)
	const aor = "sip:mia@example.com"
	put(t, a, Fixture(aor, "dev", "old", time.Hour), 0)
	// A fresh REGISTER stores a new push token; then the push sent to the
	// old one fails permanently.
	fresh := Fixture(aor, "dev", "new", time.Hour)
	put(t, b, fresh, 0)
	if ok, err := a.ClearPush(ctx(t), aor, "dev", "voip-old"); ok || err != nil {
		t.Errorf("ClearPush(stale token) = %v, %v; want false, nil", ok, err)
	}
	checkBinding(t, "binding after ClearPush with a stale token", bindings(t, b, aor)[0], fresh)

	// The same, racing: whatever the order, the new token survives.
	const rounds = 20
	c := ctx(t)
	for r := range rounds {
		inst := fmt.Sprintf("race-%d", r)
		old := Fixture(aor, inst, "old-"+inst, time.Hour)
		put(t, a, old, 0)
		next := Fixture(aor, inst, "new-"+inst, time.Hour)
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			if _, err := a.ClearPush(c, aor, inst, old.Push.Token); err != nil {
				t.Errorf("round %d: ClearPush: %v", r, err)
			}
		})
		wg.Go(func() {
			<-start
			if _, err := b.PutBinding(c, next, 0); err != nil {
				t.Errorf("round %d: PutBinding: %v", r, err)
			}
		})
		close(start)
		wg.Wait()
		for _, got := range bindings(t, a, aor) {
			if got.Instance == inst {
				checkBinding(t, fmt.Sprintf("round %d: binding after racing ClearPush and PutBinding", r), got, next)
			}
		}
	}
}

func (s *suite) testClearPushEvents(t *testing.T) {
	a, b, nodeB := s.nodes(t)
	onB, err := b.Subscribe(t.Context())
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	const aor = "sip:nia@example.com"
	bd := Fixture(aor, "dev", "tok", time.Hour)
	put(t, b, bd, 0)
	expectEvent(t, onB, store.Event{Kind: store.EventBindingPut, AOR: aor, Instance: "dev", Node: nodeB})
	if ok, err := a.ClearPush(ctx(t), aor, "dev", "voip-other"); ok || err != nil {
		t.Fatalf("ClearPush(other token) = %v, %v", ok, err)
	}
	if ok, err := a.ClearPush(ctx(t), aor, "dev", bd.Push.Token); !ok || err != nil {
		t.Fatalf("ClearPush = %v, %v", ok, err)
	}
	// Only the ClearPush that changed the binding published.
	expectEvent(t, onB, store.Event{Kind: store.EventBindingPut, AOR: aor, Instance: "dev", Node: NodeA})
	if ok, err := a.ClearPush(ctx(t), aor, "dev", bd.Push.Token); ok || err != nil {
		t.Fatalf("second ClearPush = %v, %v", ok, err)
	}
	put(t, a, Fixture(aor, "marker", "tok-m", time.Hour), 0)
	expectEvent(t, onB, store.Event{Kind: store.EventBindingPut, AOR: aor, Instance: "marker", Node: NodeA})
}

func (s *suite) testPublish(t *testing.T) {
	a, b, nodeB := s.nodes(t)
	var subs []<-chan store.Event
	for _, st := range []store.Store{a, a, b} {
		ch, err := st.Subscribe(t.Context())
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		subs = append(subs, ch)
	}
	events := []struct {
		from store.Store
		ev   store.Event
	}{
		{a, store.Event{Kind: store.EventHeldCancelled, AOR: "sip:olga@example.com", Key: "call-1;z9hG4bK1", Node: NodeA}},
		{b, store.Event{Kind: store.EventHeldCancelled, Key: "call-2;z9hG4bK2", Node: nodeB}},
		{a, store.Event{Kind: store.EventBindingPut, AOR: "sip:olga@example.com", Instance: "dev", Node: NodeA}},
		{b, store.Event{Kind: "custom", Key: "k", Node: "elsewhere"}},
	}
	for _, e := range events {
		if err := e.from.Publish(ctx(t), e.ev); err != nil {
			t.Fatalf("Publish(%+v): %v", e.ev, err)
		}
		// Every subscriber, the publisher's own included, receives it as
		// published.
		for _, ch := range subs {
			expectEvent(t, ch, e.ev)
		}
	}
}

func (s *suite) testConcurrentPut(t *testing.T) {
	a, b, _ := s.nodes(t)
	const (
		aor     = "sip:race@example.com"
		writers = 20
		max     = 5
	)
	c := ctx(t)
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			<-start
			inst := fmt.Sprintf("dev-%02d", i)
			_, err := st.PutBinding(c, Fixture(aor, inst, "tok-"+inst, time.Hour), max)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrTooManyBindings):
				refused.Add(1)
			default:
				t.Errorf("PutBinding(%s): %v", inst, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok.Load() != max || refused.Load() != writers-max {
		t.Errorf("%d puts succeeded and %d were refused, want %d and %d", ok.Load(), refused.Load(), max, writers-max)
	}
	for _, st := range []store.Store{a, b} {
		if n := len(bindings(t, st, aor)); n != max {
			t.Errorf("after the race: %d bindings, want %d", n, max)
		}
	}
}

func (s *suite) testConcurrentChurn(t *testing.T) {
	a, b, _ := s.nodes(t)
	const (
		aor     = "sip:churn@example.com"
		writers = 20
		rounds  = 10
		max     = 5
	)
	c := ctx(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var over atomic.Int32
	// A reader checks the limit holds at every moment it looks.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			bs, err := b.Bindings(c, aor)
			if err != nil {
				t.Errorf("Bindings during churn: %v", err)
				return
			}
			if len(bs) > max {
				over.Add(1)
			}
		}
	}()
	var ok atomic.Int32
	for i := range writers {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			inst := fmt.Sprintf("dev-%02d", i)
			for r := range rounds {
				tok := fmt.Sprintf("tok-%s-%d", inst, r)
				_, err := st.PutBinding(c, Fixture(aor, inst, tok, time.Hour), max)
				if errors.Is(err, store.ErrTooManyBindings) {
					continue
				}
				if err != nil {
					t.Errorf("PutBinding(%s): %v", inst, err)
					return
				}
				ok.Add(1)
				if err := st.DeleteBinding(c, aor, inst); err != nil {
					t.Errorf("DeleteBinding(%s): %v", inst, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-readerDone
	if over.Load() > 0 {
		t.Errorf("a reader saw more than %d bindings %d times", max, over.Load())
	}
	if ok.Load() == 0 {
		t.Error("no put ever succeeded")
	}
	if n := len(bindings(t, a, aor)); n != 0 {
		t.Errorf("after churn: %d bindings left, want 0", n)
	}
}

// expectClosed waits for ch to be closed, draining events.
func expectClosed(t *testing.T, ch <-chan store.Event, what string) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("%s: subscription channel still open after %s", what, waitFor)
		}
	}
}

func (s *suite) testSubscribeCancel(t *testing.T) {
	a, b, _ := s.nodes(t)
	sctx, cancel := context.WithCancel(t.Context())
	ch, err := b.Subscribe(sctx)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	put(t, a, Fixture("sip:jo@example.com", "a", "tok-a", time.Hour), 0)
	cancel()
	expectClosed(t, ch, "after cancel")
	// Writers are unaffected by a subscriber that went away.
	put(t, a, Fixture("sip:jo@example.com", "b", "tok-b", time.Hour), 0)
	put(t, b, Fixture("sip:jo@example.com", "c", "tok-c", time.Hour), 0)
}

func (s *suite) testClose(t *testing.T) {
	st := s.open(t, NodeA)
	ch, err := st.Subscribe(t.Context())
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	put(t, st, Fixture("sip:kim@example.com", "a", "tok-a", time.Hour), 0)
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	expectClosed(t, ch, "after Close")
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	checks := []struct {
		name string
		err  error
	}{
		{"Ping", st.Ping(ctx(t))},
		{"PutBinding", func() error {
			_, err := st.PutBinding(ctx(t), Fixture("sip:kim@example.com", "b", "tok-b", time.Hour), 0)
			return err
		}()},
		{"Bindings", func() error { _, err := st.Bindings(ctx(t), "sip:kim@example.com"); return err }()},
		{"BindingByToken", func() error { _, err := st.BindingByToken(ctx(t), "tok-a"); return err }()},
		{"Subscribe", func() error { _, err := st.Subscribe(ctx(t)); return err }()},
		{"Secret", func() error { _, err := st.Secret(ctx(t), "s", 32); return err }()},
		{"ClearPush", func() error { _, err := st.ClearPush(ctx(t), "sip:kim@example.com", "a", "voip-tok-a"); return err }()},
		{"Publish", st.Publish(ctx(t), store.Event{Kind: store.EventHeldCancelled, Key: "k", Node: NodeA})},
		{"PutHeld", st.PutHeld(ctx(t), HeldFixture("h", "sip:kim@example.com", NodeA, time.Now(), time.Now().Add(time.Hour)))},
		{"DeleteHeld", st.DeleteHeld(ctx(t), "h")},
		{"ListHeld", func() error { _, err := st.ListHeld(ctx(t), store.HeldFilter{}); return err }()},
		{"ClaimHeld", func() error { _, err := st.ClaimHeld(ctx(t), "h", NodeA, NodeB); return err }()},
		{"Heartbeat", st.Heartbeat(ctx(t), NodeA, time.Minute)},
		{"NodeAlive", func() error { _, err := st.NodeAlive(ctx(t), NodeA); return err }()},
		{"PutMessage", func() error {
			_, err := st.PutMessage(ctx(t), MessageFixture("m", "sip:kim@example.com", time.Now(), time.Now().Add(time.Hour), "a"))
			return err
		}()},
		{"Message", func() error { _, err := st.Message(ctx(t), "m"); return err }()},
		{"ListMessages", func() error { _, err := st.ListMessages(ctx(t), store.MessageFilter{}); return err }()},
		{"MessagesFor", func() error { _, err := st.MessagesFor(ctx(t), "sip:kim@example.com", "a", 0); return err }()},
		{"Acknowledge", func() error { _, err := st.Acknowledge(ctx(t), "m", "a"); return err }()},
		{"AddPending", st.AddPending(ctx(t), "m", "b")},
		{"CountAttempt", st.CountAttempt(ctx(t), "m")},
		{"DeleteMessage", st.DeleteMessage(ctx(t), "m")},
		{"Lease", func() error { _, err := st.Lease(ctx(t), "k", NodeA, time.Minute); return err }()},
		{"ReleaseLease", st.ReleaseLease(ctx(t), "k", NodeA)},
		{"PutRegistration", func() error {
			_, err := st.PutRegistration(ctx(t), RegistrationFixture("r", "sip:kim@example.com", "a", time.Now()), false)
			return err
		}()},
		{"Registration", func() error { _, err := st.Registration(ctx(t), "r"); return err }()},
		{"DeleteRegistration", st.DeleteRegistration(ctx(t), "r")},
		{"ListRegistrations", func() error { _, err := st.ListRegistrations(ctx(t), store.RegistrationFilter{}); return err }()},
		{"ClaimDue", func() error { _, err := st.ClaimDue(ctx(t), time.Now(), time.Minute, 10); return err }()},
		{"CountRegistrations", func() error { _, err := st.CountRegistrations(ctx(t)); return err }()},
		{"PutAccount", st.PutAccount(ctx(t), AccountFixture("sip:kim@example.com", time.Now()))},
		{"Account", func() error { _, err := st.Account(ctx(t), "sip:kim@example.com"); return err }()},
		{"DeleteAccount", st.DeleteAccount(ctx(t), "sip:kim@example.com")},
		{"ListAccounts", func() error { _, err := st.ListAccounts(ctx(t)); return err }()},
	}
	for _, c := range checks {
		if !errors.Is(c.err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", c.name, c.err)
		}
	}
}

func (s *suite) testPing(t *testing.T) {
	st := s.open(t, NodeA)
	if err := st.Ping(ctx(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// secret calls Secret and fails the test on error.
func secret(t *testing.T, st store.Store, name string, n int) []byte {
	t.Helper()
	v, err := st.Secret(ctx(t), name, n)
	if err != nil {
		t.Fatalf("Secret(%q, %d): %v", name, n, err)
	}
	return v
}

func (s *suite) testSecret(t *testing.T) {
	a, b, _ := s.nodes(t)
	const n = 32
	v := secret(t, a, "binding-token", n)
	if len(v) != n {
		t.Fatalf("new secret has %d bytes, want %d", len(v), n)
	}
	if bytes.Equal(v, make([]byte, n)) {
		t.Fatal("new secret is all zero bytes")
	}
	if again := secret(t, a, "binding-token", n); !bytes.Equal(again, v) {
		t.Errorf("second Secret on the same node = %x, want %x", again, v)
	}
	if other := secret(t, b, "binding-token", n); !bytes.Equal(other, v) {
		t.Errorf("Secret on the second node = %x, want %x", other, v)
	}
	// The caller may keep and change what it got.
	got := secret(t, a, "binding-token", n)
	got[0] ^= 0xff
	if again := secret(t, a, "binding-token", n); !bytes.Equal(again, v) {
		t.Errorf("Secret after the caller changed its copy = %x, want %x", again, v)
	}
	// An existing secret is returned as stored, whatever size is asked.
	for _, m := range []int{16, 64} {
		if got := secret(t, b, "binding-token", m); !bytes.Equal(got, v) {
			t.Errorf("Secret(n=%d) of a %d-byte secret = %x, want the stored %x", m, n, got, v)
		}
	}
	// Names are distinct secrets, compared as raw bytes.
	seen := map[string]string{string(v): "binding-token"}
	for _, name := range []string{"flow-token", "Binding-token", "binding-token\x00", "{binding-token}", "ü/*?"} {
		w := secret(t, a, name, 64)
		if len(w) != 64 {
			t.Errorf("Secret(%q, 64) has %d bytes", name, len(w))
		}
		if prev, dup := seen[string(w)]; dup {
			t.Errorf("secrets %q and %q are equal", prev, name)
		}
		seen[string(w)] = name
		if got := secret(t, b, name, 64); !bytes.Equal(got, w) {
			t.Errorf("Secret(%q) on the second node differs", name)
		}
	}
	for _, bad := range []struct {
		name string
		n    int
	}{{"", 32}, {"x", 0}, {"x", -1}} {
		if w, err := a.Secret(ctx(t), bad.name, bad.n); err == nil {
			t.Errorf("Secret(%q, %d) = %x, want an error", bad.name, bad.n, w)
		}
	}
}

func (s *suite) testSecretRestart(t *testing.T) {
	st := s.open(t, NodeA)
	v := secret(t, st, "flow-token", 32)
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	st = s.open(t, NodeA)
	if got := secret(t, st, "flow-token", 32); !bytes.Equal(got, v) {
		t.Errorf("Secret after reopening = %x, want %x", got, v)
	}
}

func (s *suite) testSecretRace(t *testing.T) {
	a, b, _ := s.nodes(t)
	const (
		callers = 10
		n       = 32
	)
	c := ctx(t)
	got := make([][]byte, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			<-start
			v, err := st.Secret(c, "race", n)
			if err != nil {
				t.Errorf("Secret (caller %d): %v", i, err)
				return
			}
			got[i] = v
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, v := range got {
		if len(v) != n || !bytes.Equal(v, got[0]) {
			t.Errorf("caller %d got %x, caller 0 got %x: concurrent first calls disagree", i, v, got[0])
		}
	}
	if v := secret(t, a, "race", n); !bytes.Equal(v, got[0]) {
		t.Errorf("Secret after the race = %x, want %x", v, got[0])
	}
}
