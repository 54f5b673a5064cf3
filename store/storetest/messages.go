package storetest

import (
	"crypto/rand"
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

// MessageFixture returns a stored message for aor, received at received,
// expiring at expires and pending for the given device instances, so that
// a round trip through a store exercises every field. Its Request holds
// every byte value.
func MessageFixture(id, aor string, received, expires time.Time, pending ...string) store.StoredMessage {
	req := []byte("MESSAGE " + aor + " SIP/2.0\r\nCall-ID: " + id +
		"\r\nCSeq: 1 MESSAGE\r\nContent-Type: application/octet-stream\r\n\r\n")
	for c := range 256 {
		req = append(req, byte(c))
	}
	return store.StoredMessage{
		ID:       id,
		AOR:      aor,
		Received: received,
		Expires:  expires,
		Request:  req,
		Sender:   "sip:bob@example.com",
		Pending:  pending,
	}
}

// normalizeMessage makes messages comparable with reflect.DeepEqual: times
// lose their monotonic reading and location, empty lists are nil.
func normalizeMessage(m store.StoredMessage) store.StoredMessage {
	m.Received = m.Received.UTC()
	m.Expires = m.Expires.UTC()
	if len(m.Pending) == 0 {
		m.Pending = nil
	}
	if len(m.Delivered) == 0 {
		m.Delivered = nil
	}
	if len(m.Request) == 0 {
		m.Request = nil
	}
	return m
}

// describeMessage prints a message for a failure message, strings quoted
// and the request shortened.
func describeMessage(m store.StoredMessage) string {
	m = normalizeMessage(m)
	req := m.Request
	if len(req) > 48 {
		req = req[:48]
	}
	return fmt.Sprintf("{ID:%q AOR:%q Received:%s Expires:%s Sender:%q Pending:%q Delivered:%q Attempts:%d Request(%d bytes):%q…}",
		m.ID, m.AOR, m.Received.Format(time.RFC3339Nano), m.Expires.Format(time.RFC3339Nano), m.Sender,
		m.Pending, m.Delivered, m.Attempts, len(m.Request), req)
}

func checkMessage(t *testing.T, what string, got, want store.StoredMessage) {
	t.Helper()
	if !reflect.DeepEqual(normalizeMessage(got), normalizeMessage(want)) {
		t.Errorf("%s:\n got %s\nwant %s", what, describeMessage(got), describeMessage(want))
	}
}

// checkMessageList compares a listing with want, in order.
func checkMessageList(t *testing.T, what string, got []store.StoredMessage, want ...store.StoredMessage) {
	t.Helper()
	ids := func(ms []store.StoredMessage) []string {
		out := []string{}
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}
	if !reflect.DeepEqual(ids(got), ids(want)) {
		t.Errorf("%s: ids %q, want %q", what, ids(got), ids(want))
		return
	}
	for i := range got {
		checkMessage(t, fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
	}
}

func putMessage(t *testing.T, st store.Store, m store.StoredMessage) bool {
	t.Helper()
	created, err := st.PutMessage(ctx(t), m)
	if err != nil {
		t.Fatalf("PutMessage(%q): %v", m.ID, err)
	}
	return created
}

func getMessage(t *testing.T, st store.Store, id string) store.StoredMessage {
	t.Helper()
	m, err := st.Message(ctx(t), id)
	if err != nil {
		t.Fatalf("Message(%q): %v", id, err)
	}
	return m
}

func listMessages(t *testing.T, st store.Store, f store.MessageFilter) []store.StoredMessage {
	t.Helper()
	ms, err := st.ListMessages(ctx(t), f)
	if err != nil {
		t.Fatalf("ListMessages(%+v): %v", f, err)
	}
	return ms
}

func messagesFor(t *testing.T, st store.Store, aor, instance string) []store.StoredMessage {
	t.Helper()
	ms, err := st.MessagesFor(ctx(t), aor, instance, 0)
	if err != nil {
		t.Fatalf("MessagesFor(%q, %q): %v", aor, instance, err)
	}
	return ms
}

func acknowledge(t *testing.T, st store.Store, id, instance string) int {
	t.Helper()
	n, err := st.Acknowledge(ctx(t), id, instance)
	if err != nil {
		t.Fatalf("Acknowledge(%q, %q): %v", id, instance, err)
	}
	return n
}

func addPending(t *testing.T, st store.Store, id, instance string) {
	t.Helper()
	if err := st.AddPending(ctx(t), id, instance); err != nil {
		t.Fatalf("AddPending(%q, %q): %v", id, instance, err)
	}
}

func expectMessageGone(t *testing.T, st store.Store, id string) {
	t.Helper()
	if m, err := st.Message(ctx(t), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message(%q) = %s, %v; want ErrNotFound", id, describeMessage(m), err)
	}
}

func (s *suite) testMessagePutDuplicate(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	const alice = "sip:alice@example.com"
	m := MessageFixture("call-1;tag-1;1", alice, now.Add(-time.Second), now.Add(time.Hour), "dev-1", "dev-2")
	if !putMessage(t, a, m) {
		t.Fatal("first PutMessage reported a duplicate")
	}
	checkMessage(t, "Message (same node)", getMessage(t, a, m.ID), m)
	checkMessage(t, "Message (other node)", getMessage(t, b, m.ID), m)

	// A retransmission or a PBX retry maps to the same ID: nothing stored,
	// whatever it carries.
	dup := MessageFixture(m.ID, alice, now, now.Add(2*time.Hour), "dev-3")
	dup.Request = []byte("MESSAGE sip:other SIP/2.0\r\n\r\nretry")
	dup.Sender = "sip:mallory@example.com"
	for _, st := range []store.Store{a, b} {
		if putMessage(t, st, dup) {
			t.Error("PutMessage of a duplicate reported created")
		}
	}
	checkMessage(t, "Message after duplicates", getMessage(t, b, m.ID), m)
	checkMessageList(t, "ListMessages(aor) after duplicates", listMessages(t, a, store.MessageFilter{AOR: alice}), m)
	checkMessageList(t, "ListMessages(all) after duplicates", listMessages(t, b, store.MessageFilter{}), m)

	// Delivered and Attempts given at the put are kept as given; a
	// duplicate instance is stored once.
	m2 := MessageFixture("call-2;tag-2;7", alice, now, now.Add(time.Hour), "dev-2", "dev-3", "dev-2")
	m2.Delivered = []string{"dev-1"}
	m2.Attempts = 3
	m2.Sender = ""
	putMessage(t, b, m2)
	want2 := m2
	want2.Pending = []string{"dev-2", "dev-3"}
	checkMessage(t, "Message with Delivered and Attempts", getMessage(t, a, m2.ID), want2)

	expectMessageGone(t, a, "unknown")
	for _, bad := range []store.StoredMessage{
		MessageFixture("", alice, now, now.Add(time.Hour), "dev-1"),
		MessageFixture("no-aor", "", now, now.Add(time.Hour), "dev-1"),
		MessageFixture("no-pending", alice, now, now.Add(time.Hour)),
		MessageFixture("empty-instance", alice, now, now.Add(time.Hour), "dev-1", ""),
	} {
		if created, err := a.PutMessage(ctx(t), bad); err == nil {
			t.Errorf("PutMessage(id %q, aor %q, pending %q) = %v, nil; want an error", bad.ID, bad.AOR, bad.Pending, created)
		}
	}
	for _, id := range []string{"no-aor", "no-pending", "empty-instance"} {
		expectMessageGone(t, b, id)
	}
}

func (s *suite) testMessageDuplicateRace(t *testing.T) {
	a, b, _ := s.nodes(t)
	const callers = 10
	c := ctx(t)
	now := time.Now()
	for r := range 5 {
		id := fmt.Sprintf("race-%d", r)
		created := make([]bool, callers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range callers {
			st := a
			if i%2 == 1 {
				st = b
			}
			m := MessageFixture(id, "sip:race@example.com", now, now.Add(time.Hour), "dev-1")
			m.Sender = fmt.Sprintf("sip:caller-%d@example.com", i)
			wg.Go(func() {
				<-start
				ok, err := st.PutMessage(c, m)
				if err != nil {
					t.Errorf("PutMessage (caller %d): %v", i, err)
				}
				created[i] = ok
			})
		}
		close(start)
		wg.Wait()
		winners := []int{}
		for i, ok := range created {
			if ok {
				winners = append(winners, i)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d puts of one ID created it (callers %v), want exactly 1", r, len(winners), winners)
		}
		got := getMessage(t, b, id)
		if want := fmt.Sprintf("sip:caller-%d@example.com", winners[0]); got.Sender != want {
			t.Errorf("round %d: stored copy from %q, but %q was told it created it", r, got.Sender, want)
		}
	}
	if got := listMessages(t, a, store.MessageFilter{AOR: "sip:race@example.com"}); len(got) != 5 {
		t.Errorf("ListMessages after racing duplicates: %d messages, want 5", len(got))
	}
}

func (s *suite) testMessageOrder(t *testing.T) {
	a, b, _ := s.nodes(t)
	// A whole second, so that the sub-millisecond offsets below share one
	// millisecond.
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	until := time.Now().Add(time.Hour)
	const alice, bob = "sip:alice@example.com", "sip:bob@example.com"
	mz := MessageFixture("z", alice, t0, until, "dev-1")
	m0 := MessageFixture("0", alice, t0.Add(time.Second), until, "dev-1")
	ma := MessageFixture("a", alice, t0.Add(time.Second), until, "dev-1") // same Received: by ID
	mb := MessageFixture("b", alice, t0.Add(2*time.Second), until, "dev-1")
	// Within one millisecond, arrival order differs from ID order.
	x1 := MessageFixture("x1", alice, t0.Add(3*time.Second+900*time.Microsecond), until, "dev-1")
	x2 := MessageFixture("x2", alice, t0.Add(3*time.Second+100*time.Microsecond), until, "dev-1")
	other := MessageFixture("other", bob, t0.Add(1500*time.Millisecond), until, "dev-9")
	for i, m := range []store.StoredMessage{mb, x1, ma, other, mz, x2, m0} {
		st := a
		if i%2 == 1 {
			st = b
		}
		putMessage(t, st, m)
	}
	checkMessageList(t, "ListMessages(aor)", listMessages(t, b, store.MessageFilter{AOR: alice}), mz, m0, ma, mb, x2, x1)
	checkMessageList(t, "ListMessages(all)", listMessages(t, a, store.MessageFilter{}), mz, m0, ma, other, mb, x2, x1)
	checkMessageList(t, "MessagesFor", messagesFor(t, a, alice, "dev-1"), mz, m0, ma, mb, x2, x1)
	for _, tc := range []struct {
		f    store.MessageFilter
		want []store.StoredMessage
	}{
		{store.MessageFilter{AOR: alice, Limit: 1}, []store.StoredMessage{mz}},
		{store.MessageFilter{AOR: alice, Limit: 2}, []store.StoredMessage{mz, m0}},
		{store.MessageFilter{AOR: alice, Limit: 5}, []store.StoredMessage{mz, m0, ma, mb, x2}},
		{store.MessageFilter{AOR: alice, Limit: 100}, []store.StoredMessage{mz, m0, ma, mb, x2, x1}},
		{store.MessageFilter{Limit: 4}, []store.StoredMessage{mz, m0, ma, other}},
		{store.MessageFilter{Limit: 6}, []store.StoredMessage{mz, m0, ma, other, mb, x2}},
		{store.MessageFilter{AOR: "sip:alice@example.co"}, nil},
		{store.MessageFilter{AOR: "sip:nobody@example.com", Limit: 3}, nil},
	} {
		checkMessageList(t, fmt.Sprintf("ListMessages(%+v)", tc.f), listMessages(t, a, tc.f), tc.want...)
	}
}

func (s *suite) testMessagesFor(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	until := now.Add(time.Hour)
	const alice, bob = "sip:alice@example.com", "sip:bob@example.com"
	m4 := MessageFixture("m4", alice, now.Add(-4*time.Second), until, "d1")
	m1 := MessageFixture("m1", alice, now.Add(-3*time.Second), until, "d1", "d2")
	m2 := MessageFixture("m2", alice, now.Add(-2*time.Second), until, "d2")
	m3 := MessageFixture("m3", alice, now.Add(-time.Second), now.Add(-time.Millisecond), "d1") // expired
	m5 := MessageFixture("m5", bob, now, until, "d1")
	for _, m := range []store.StoredMessage{m1, m2, m3, m4, m5} {
		putMessage(t, a, m)
	}
	for _, tc := range []struct {
		aor, instance string
		want          []store.StoredMessage
	}{
		{alice, "d1", []store.StoredMessage{m4, m1}},
		{alice, "d2", []store.StoredMessage{m1, m2}},
		{alice, "d3", nil},
		{alice, "d", nil},
		{alice, "", nil},
		{bob, "d1", []store.StoredMessage{m5}},
		{bob, "d2", nil},
		{"sip:carol@example.com", "d1", nil},
	} {
		checkMessageList(t, fmt.Sprintf("MessagesFor(%q, %q)", tc.aor, tc.instance),
			messagesFor(t, b, tc.aor, tc.instance), tc.want...)
	}
	// A limit returns the first ones in arrival order, skipping the
	// expired and the other devices' messages.
	for limit, want := range map[int][]store.StoredMessage{1: {m1}, 2: {m1, m2}, 3: {m1, m2}} {
		got, err := b.MessagesFor(ctx(t), alice, "d2", limit)
		if err != nil {
			t.Fatalf("MessagesFor(d2, limit %d): %v", limit, err)
		}
		checkMessageList(t, fmt.Sprintf("MessagesFor(d2, limit %d)", limit), got, want...)
	}
	// A device that took a message no longer gets it; a device added
	// later does.
	if n := acknowledge(t, b, m1.ID, "d1"); n != 1 {
		t.Errorf("Acknowledge(m1, d1) = %d remaining, want 1", n)
	}
	checkMessageList(t, "MessagesFor(d1) after its ack", messagesFor(t, a, alice, "d1"), m4)
	addPending(t, a, m2.ID, "d3")
	m2.Pending = []string{"d2", "d3"}
	checkMessageList(t, "MessagesFor(d3) after AddPending", messagesFor(t, b, alice, "d3"), m2)
}

func (s *suite) testMessageAcknowledge(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	m := MessageFixture("ack-1", "sip:ack@example.com", now, now.Add(time.Hour), "d1", "d2", "d3")
	putMessage(t, a, m)

	steps := []struct {
		st        store.Store
		instance  string
		remaining int
		pending   []string
		delivered []string
	}{
		{b, "d2", 2, []string{"d1", "d3"}, []string{"d2"}},
		{a, "d2", 2, []string{"d1", "d3"}, []string{"d2"}},      // again: nothing changes
		{a, "unknown", 2, []string{"d1", "d3"}, []string{"d2"}}, // not a target: nothing changes
		{a, "", 2, []string{"d1", "d3"}, []string{"d2"}},
		{a, "d1", 1, []string{"d3"}, []string{"d2", "d1"}},
	}
	for _, step := range steps {
		if n := acknowledge(t, step.st, m.ID, step.instance); n != step.remaining {
			t.Errorf("Acknowledge(%q) = %d remaining, want %d", step.instance, n, step.remaining)
		}
		want := m
		want.Pending, want.Delivered = step.pending, step.delivered
		checkMessage(t, fmt.Sprintf("Message after Acknowledge(%q)", step.instance), getMessage(t, b, m.ID), want)
	}
	for _, st := range []store.Store{a, b} {
		if err := st.CountAttempt(ctx(t), m.ID); err != nil {
			t.Fatalf("CountAttempt: %v", err)
		}
	}
	if got := getMessage(t, a, m.ID); got.Attempts != 2 {
		t.Errorf("Attempts = %d after two CountAttempt, want 2", got.Attempts)
	}
	// The last device: the message is gone.
	if n := acknowledge(t, a, m.ID, "d3"); n != 0 {
		t.Errorf("last Acknowledge = %d remaining, want 0", n)
	}
	expectMessageGone(t, b, m.ID)
	checkMessageList(t, "ListMessages after the last ack", listMessages(t, b, store.MessageFilter{}))
	checkMessageList(t, "ListMessages(expired) after the last ack", listMessages(t, b, store.MessageFilter{Expired: true}))
	checkMessageList(t, "MessagesFor after the last ack", messagesFor(t, b, m.AOR, "d3"))
	for _, id := range []string{m.ID, "unknown"} {
		if n, err := b.Acknowledge(ctx(t), id, "d3"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Acknowledge(%q) = %d, %v; want ErrNotFound", id, n, err)
		}
		if err := b.AddPending(ctx(t), id, "d4"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("AddPending(%q): %v, want ErrNotFound", id, err)
		}
		if err := b.CountAttempt(ctx(t), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("CountAttempt(%q): %v, want ErrNotFound", id, err)
		}
		if err := b.DeleteMessage(ctx(t), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteMessage(%q): %v, want ErrNotFound", id, err)
		}
	}
	// The ID is free again: a new put stores it.
	if !putMessage(t, a, m) {
		t.Error("PutMessage after the message was delivered reported a duplicate")
	}

	// DeleteMessage removes a message whatever is pending.
	d := MessageFixture("del-1", m.AOR, now, now.Add(time.Hour), "d1")
	putMessage(t, a, d)
	if err := b.DeleteMessage(ctx(t), d.ID); err != nil {
		t.Fatalf("DeleteMessage: %v", err)
	}
	expectMessageGone(t, a, d.ID)
	checkMessageList(t, "MessagesFor after DeleteMessage", messagesFor(t, a, d.AOR, "d1"), m)
	checkMessageList(t, "ListMessages after DeleteMessage", listMessages(t, a, store.MessageFilter{AOR: d.AOR}), m)
}

func (s *suite) testMessageAcknowledgeRace(t *testing.T) {
	a, b, _ := s.nodes(t)
	c := ctx(t)
	now := time.Now()
	type result struct {
		n   int
		err error
	}
	race := func(id string, acks ...struct {
		st       store.Store
		instance string
	}) []result {
		out := make([]result, len(acks))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, ack := range acks {
			wg.Go(func() {
				<-start
				n, err := ack.st.Acknowledge(c, id, ack.instance)
				out[i] = result{n, err}
			})
		}
		close(start)
		wg.Wait()
		return out
	}
	type ack = struct {
		st       store.Store
		instance string
	}
	for r := range 20 {
		// Two devices of three, on two nodes at once: both recorded.
		id := fmt.Sprintf("race3-%d", r)
		putMessage(t, a, MessageFixture(id, "sip:race@example.com", now, now.Add(time.Hour), "d1", "d2", "d3"))
		res := race(id, ack{a, "d1"}, ack{b, "d2"})
		got := []int{}
		for _, x := range res {
			if x.err != nil {
				t.Fatalf("round %d: Acknowledge: %v", r, x.err)
			}
			got = append(got, x.n)
		}
		sort.Ints(got)
		if !slices.Equal(got, []int{1, 2}) {
			t.Errorf("round %d: racing acks of two of three devices returned %v remaining, want 1 and 2", r, got)
		}
		m := getMessage(t, b, id)
		delivered := slices.Clone(m.Delivered)
		sort.Strings(delivered)
		if !slices.Equal(m.Pending, []string{"d3"}) || !slices.Equal(delivered, []string{"d1", "d2"}) {
			t.Errorf("round %d: after racing acks Pending %q, Delivered %q; want [d3] and both of d1, d2", r, m.Pending, m.Delivered)
		}

		// The last two devices at once: exactly one ack deletes it.
		id = fmt.Sprintf("race2-%d", r)
		putMessage(t, a, MessageFixture(id, "sip:race@example.com", now, now.Add(time.Hour), "d1", "d2"))
		res = race(id, ack{a, "d1"}, ack{b, "d2"})
		got = got[:0]
		for _, x := range res {
			if x.err != nil {
				t.Fatalf("round %d: Acknowledge of the last two: %v", r, x.err)
			}
			got = append(got, x.n)
		}
		sort.Ints(got)
		if !slices.Equal(got, []int{0, 1}) {
			t.Errorf("round %d: racing acks of the last two devices returned %v remaining, want 0 and 1", r, got)
		}
		expectMessageGone(t, a, id)

		// The same last device acknowledged by two nodes: deleted once, the
		// other finds nothing.
		id = fmt.Sprintf("race1-%d", r)
		putMessage(t, a, MessageFixture(id, "sip:race@example.com", now, now.Add(time.Hour), "d1"))
		res = race(id, ack{a, "d1"}, ack{b, "d1"})
		zero, gone := 0, 0
		for _, x := range res {
			switch {
			case x.err == nil && x.n == 0:
				zero++
			case errors.Is(x.err, store.ErrNotFound):
				gone++
			default:
				t.Errorf("round %d: racing acks of one device: %d, %v", r, x.n, x.err)
			}
		}
		if zero != 1 || gone != 1 {
			t.Errorf("round %d: racing acks of one device: %d deleted it, %d found nothing; want 1 and 1", r, zero, gone)
		}
		expectMessageGone(t, b, id)
	}
}

func (s *suite) testMessageAddPending(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	m := MessageFixture("late-1", "sip:late@example.com", now, now.Add(time.Hour), "d1")
	putMessage(t, a, m)
	check := func(what string, pending, delivered []string) {
		t.Helper()
		want := m
		want.Pending, want.Delivered = pending, delivered
		checkMessage(t, what, getMessage(t, a, m.ID), want)
	}
	addPending(t, b, m.ID, "d2")
	check("after AddPending(d2)", []string{"d1", "d2"}, nil)
	addPending(t, a, m.ID, "d1")
	addPending(t, b, m.ID, "d2")
	check("after AddPending of pending devices", []string{"d1", "d2"}, nil)
	acknowledge(t, a, m.ID, "d1")
	addPending(t, b, m.ID, "d1")
	check("after AddPending of a delivered device", []string{"d2"}, []string{"d1"})
	addPending(t, a, m.ID, "d3")
	check("after AddPending(d3)", []string{"d2", "d3"}, []string{"d1"})
	if err := a.AddPending(ctx(t), m.ID, ""); err == nil {
		t.Error("AddPending of an empty instance succeeded")
	}
	check("after AddPending(\"\")", []string{"d2", "d3"}, []string{"d1"})
	if n := acknowledge(t, b, m.ID, "d2"); n != 1 {
		t.Errorf("Acknowledge(d2) = %d remaining, want 1 (d3 was added)", n)
	}
}

func (s *suite) testMessageExpiry(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	const alice, bob = "sip:alice@example.com", "sip:bob@example.com"
	old := MessageFixture("old", alice, now.Add(-time.Hour), now.Add(-time.Second), "d1")
	old2 := MessageFixture("old2", bob, now.Add(-2*time.Hour), now.Add(-time.Minute), "d1")
	soon := MessageFixture("soon", alice, now.Add(-time.Minute), now.Add(1500*time.Millisecond), "d1")
	live := MessageFixture("live", alice, now, now.Add(time.Hour), "d1")
	for _, m := range []store.StoredMessage{live, old, soon, old2} {
		putMessage(t, a, m)
	}
	checkMessageList(t, "ListMessages(live)", listMessages(t, b, store.MessageFilter{}), soon, live)
	checkMessageList(t, "ListMessages(aor, live)", listMessages(t, b, store.MessageFilter{AOR: alice}), soon, live)
	checkMessageList(t, "ListMessages(expired)", listMessages(t, b, store.MessageFilter{Expired: true}), old2, old)
	checkMessageList(t, "ListMessages(expired, limit 1)", listMessages(t, b, store.MessageFilter{Expired: true, Limit: 1}), old2)
	checkMessageList(t, "ListMessages(aor, expired)", listMessages(t, b, store.MessageFilter{AOR: alice, Expired: true}), old)
	checkMessageList(t, "MessagesFor", messagesFor(t, b, alice, "d1"), soon, live)
	checkMessageList(t, "MessagesFor(bob)", messagesFor(t, b, bob, "d1"))
	// An expired message is still there for the sweeper: readable,
	// countable, deletable; a duplicate of it stores nothing.
	checkMessage(t, "Message(expired)", getMessage(t, b, old.ID), old)
	if putMessage(t, b, MessageFixture(old.ID, alice, now, now.Add(time.Hour), "d1")) {
		t.Error("PutMessage of an expired message's ID reported created")
	}
	if err := b.CountAttempt(ctx(t), old.ID); err != nil {
		t.Errorf("CountAttempt(expired): %v", err)
	}
	old.Attempts = 1

	eventually(t, func() string {
		got, err := b.ListMessages(ctx(t), store.MessageFilter{Expired: true})
		if err != nil {
			return fmt.Sprintf("ListMessages(expired): %v", err)
		}
		if len(got) != 3 {
			return fmt.Sprintf("ListMessages(expired) returns %d messages, want 3", len(got))
		}
		return ""
	})
	if d := time.Since(now); d < 1400*time.Millisecond {
		t.Errorf("message expired after %s, before its Expires (1.5s)", d)
	}
	checkMessageList(t, "ListMessages(expired) later", listMessages(t, a, store.MessageFilter{Expired: true}), old2, old, soon)
	checkMessageList(t, "ListMessages(live) later", listMessages(t, a, store.MessageFilter{}), live)
	checkMessageList(t, "MessagesFor later", messagesFor(t, a, alice, "d1"), live)
	// Nothing forgets them but the caller (the embedded test store sweeps
	// every 200ms).
	time.Sleep(500 * time.Millisecond)
	for _, m := range []store.StoredMessage{old, old2, soon} {
		checkMessage(t, "expired Message later", getMessage(t, b, m.ID), m)
	}
	for _, m := range []store.StoredMessage{old, old2, soon} {
		if err := a.DeleteMessage(ctx(t), m.ID); err != nil {
			t.Errorf("DeleteMessage(%q): %v", m.ID, err)
		}
	}
	checkMessageList(t, "ListMessages(expired) after the sweep", listMessages(t, b, store.MessageFilter{Expired: true}))
	checkMessageList(t, "ListMessages(live) after the sweep", listMessages(t, b, store.MessageFilter{}), live)
}

func (s *suite) testMessageBinarySafe(t *testing.T) {
	st := s.open(t, NodeA)
	now := time.Now()
	until := now.Add(time.Hour)
	big := make([]byte, 64<<10)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	// IDs, AORs, instances and senders chosen to collide under naive key
	// or field schemes, and bytes JSON cannot carry as strings.
	var msgs []store.StoredMessage
	for i, p := range []struct{ id, aor, instance, sender string }{
		{"a\x00b", "sip:\xffodd@example.com", "i\x00\xff", "sip:\xfe@x"},
		{"a", "sip:a@x", "i", "sip:a@x"},
		{"a\x00", "sip:a@x\x00", "i\x00", "s\x00"},
		{"{msg}", "sip:{brace}@x", "{i}", "{s}"},
		{"x}:y", "sip:x}:y@x", "p:x", "d:y"},
		{"*?[]\\", "sip:a*?[]\\@x", "aor", "seq"},
		{"ü📱\xc3\x28", "sip:ünïcødé@例え.jp", "npending", "attempts"},
		{"msgs", "sip:msgs@x", "d:i", "data"},
	} {
		m := MessageFixture(p.id, p.aor, now.Add(time.Duration(i)*time.Second), until, p.instance, p.instance+"-2")
		m.Sender = p.sender
		if i == 0 {
			m.Request = big
		}
		msgs = append(msgs, m)
	}
	for _, m := range msgs {
		putMessage(t, st, m)
	}
	checkMessageList(t, "ListMessages(all)", listMessages(t, st, store.MessageFilter{}), msgs...)
	for _, m := range msgs {
		checkMessage(t, fmt.Sprintf("Message(%q)", m.ID), getMessage(t, st, m.ID), m)
		checkMessageList(t, fmt.Sprintf("ListMessages(aor %q)", m.AOR), listMessages(t, st, store.MessageFilter{AOR: m.AOR}), m)
		checkMessageList(t, fmt.Sprintf("MessagesFor(%q, %q)", m.AOR, m.Pending[0]), messagesFor(t, st, m.AOR, m.Pending[0]), m)
	}
	for _, m := range msgs {
		if n := acknowledge(t, st, m.ID, m.Pending[0]); n != 1 {
			t.Errorf("Acknowledge(%q, %q) = %d remaining, want 1", m.ID, m.Pending[0], n)
		}
		addPending(t, st, m.ID, m.Pending[0]+"\x00")
		want := m
		want.Pending = []string{m.Pending[1], m.Pending[0] + "\x00"}
		want.Delivered = []string{m.Pending[0]}
		checkMessage(t, fmt.Sprintf("Message(%q) after ack and AddPending", m.ID), getMessage(t, st, m.ID), want)
		checkMessageList(t, fmt.Sprintf("MessagesFor(%q, %q) after its ack", m.AOR, m.Pending[0]), messagesFor(t, st, m.AOR, m.Pending[0]))
	}
	for _, m := range msgs {
		if err := st.DeleteMessage(ctx(t), m.ID); err != nil {
			t.Errorf("DeleteMessage(%q): %v", m.ID, err)
		}
	}
	checkMessageList(t, "ListMessages after deleting all", listMessages(t, st, store.MessageFilter{}))
}

func (s *suite) testMessageRestart(t *testing.T) {
	st := s.open(t, NodeA)
	now := time.Now()
	m := MessageFixture("restart-1", "sip:gus@example.com", now, now.Add(time.Hour), "d1", "d2")
	putMessage(t, st, m)
	acknowledge(t, st, m.ID, "d1")
	if err := st.CountAttempt(ctx(t), m.ID); err != nil {
		t.Fatalf("CountAttempt: %v", err)
	}
	const lease = "deliver:sip:gus@example.com:d2"
	if ok, err := st.Lease(ctx(t), lease, NodeA, time.Hour); err != nil || !ok {
		t.Fatalf("Lease = %v, %v; want true", ok, err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	st = s.open(t, NodeA)
	want := m
	want.Pending, want.Delivered, want.Attempts = []string{"d2"}, []string{"d1"}, 1
	checkMessage(t, "Message after reopening", getMessage(t, st, m.ID), want)
	checkMessageList(t, "MessagesFor after reopening", messagesFor(t, st, m.AOR, "d2"), want)
	if created := putMessage(t, st, m); created {
		t.Error("PutMessage after reopening reported created for a stored ID")
	}
	if ok, err := st.Lease(ctx(t), lease, NodeB, time.Hour); err != nil || ok {
		t.Errorf("Lease by another node after reopening = %v, %v; want false", ok, err)
	}
	if ok, err := st.Lease(ctx(t), lease, NodeA, time.Hour); err != nil || !ok {
		t.Errorf("Lease by its holder after reopening = %v, %v; want true", ok, err)
	}
}

func (s *suite) testLease(t *testing.T) {
	a, b, _ := s.nodes(t)
	lease := func(st store.Store, key, node string, ttl time.Duration) bool {
		t.Helper()
		ok, err := st.Lease(ctx(t), key, node, ttl)
		if err != nil {
			t.Fatalf("Lease(%q, %q, %s): %v", key, node, ttl, err)
		}
		return ok
	}
	release := func(st store.Store, key, node string) {
		t.Helper()
		if err := st.ReleaseLease(ctx(t), key, node); err != nil {
			t.Fatalf("ReleaseLease(%q, %q): %v", key, node, err)
		}
	}
	const k = "deliver:sip:alice@example.com:dev-1"
	if !lease(a, k, "node-a", time.Hour) {
		t.Fatal("Lease of a free key = false")
	}
	if lease(b, k, "node-b", time.Hour) {
		t.Fatal("Lease held by another node = true")
	}
	if !lease(b, k, "node-a", time.Hour) {
		t.Error("Lease renewed by its holder (through another store) = false")
	}
	for _, other := range []string{k + "x", "deliver:sip:alice@example.com:dev-", k + "\x00", "{" + k + "}"} {
		if !lease(b, other, "node-b", time.Hour) {
			t.Errorf("Lease(%q) = false while only %q is held", other, k)
		}
	}
	if lease(a, k, "node-a\x00", time.Hour) || lease(a, k, "node-", time.Hour) {
		t.Error("Lease by a node whose name only resembles the holder's = true")
	}
	release(b, k, "node-b") // not the holder: nothing
	if lease(b, k, "node-b", time.Hour) {
		t.Error("Lease = true after a release by a node that did not hold it")
	}
	release(a, k, "node-a")
	if !lease(b, k, "node-b", time.Hour) {
		t.Error("Lease = false after the holder released it")
	}
	release(a, "never-taken", "node-a")

	// Taken over once the ttl has passed.
	const ttl = 600 * time.Millisecond
	const k2 = "deliver:sip:bob@example.com:dev-1"
	start := time.Now()
	if !lease(a, k2, "node-a", ttl) {
		t.Fatal("Lease of a free key = false")
	}
	if lease(b, k2, "node-b", time.Hour) {
		t.Fatal("Lease held by another node = true")
	}
	eventually(t, func() string {
		if !lease(b, k2, "node-b", time.Hour) {
			return "Lease still refused after the holder's ttl"
		}
		return ""
	})
	if d := time.Since(start); d < ttl-100*time.Millisecond {
		t.Errorf("lease taken over after %s, before its ttl %s", d, ttl)
	}
	if lease(a, k2, "node-a", ttl) {
		t.Error("the former holder took the lease back from the new holder")
	}

	// A renewal extends the lease.
	const k3 = "deliver:sip:carol@example.com:dev-1"
	if !lease(a, k3, "node-a", time.Second) {
		t.Fatal("Lease of a free key = false")
	}
	time.Sleep(600 * time.Millisecond)
	if !lease(a, k3, "node-a", time.Second) {
		t.Fatal("renewal = false")
	}
	time.Sleep(600 * time.Millisecond)
	if lease(b, k3, "node-b", time.Hour) {
		t.Error("Lease taken over after the first ttl although the holder renewed it")
	}

	// Racing nodes: exactly one takes it.
	c := ctx(t)
	won := make([]bool, 10)
	startRace := make(chan struct{})
	var wg sync.WaitGroup
	for i := range won {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			<-startRace
			ok, err := st.Lease(c, "race", fmt.Sprintf("node-%d", i), time.Hour)
			if err != nil {
				t.Errorf("Lease (node %d): %v", i, err)
			}
			won[i] = ok
		})
	}
	close(startRace)
	wg.Wait()
	if n := len(slices.DeleteFunc(slices.Clone(won), func(ok bool) bool { return !ok })); n != 1 {
		t.Errorf("%d of %d racing nodes took one lease, want 1", n, len(won))
	}

	for _, bad := range []struct {
		key, node string
		ttl       time.Duration
	}{{"", "node-a", time.Second}, {"k", "", time.Second}, {"k", "node-a", 0}, {"k", "node-a", -time.Second}} {
		if ok, err := a.Lease(ctx(t), bad.key, bad.node, bad.ttl); err == nil {
			t.Errorf("Lease(%q, %q, %s) = %v, nil; want an error", bad.key, bad.node, bad.ttl, ok)
		}
	}
}
