package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/store"
)

// HeldFixture returns a fully populated held call owned by node, received
// at received and held until deadline, so that a round trip through a
// store exercises every field. Its Request holds every byte value.
func HeldFixture(id, aor, node string, received, deadline time.Time) store.HeldCall {
	req := []byte("INVITE sip:" + id + "@192.0.2.1 SIP/2.0\r\nCall-ID: " + id + "\r\n\r\n")
	for c := range 256 {
		req = append(req, byte(c))
	}
	return store.HeldCall{
		ID:        id,
		CallID:    "call-" + id,
		AOR:       aor,
		Node:      node,
		Received:  received,
		Deadline:  deadline,
		Instances: []string{"<urn:uuid:00000000-0000-4000-8000-000000000001>", "voip-" + id},
		Source:    "203.0.113.5:5060",
		Transport: "udp",
		Request:   req,
	}
}

// normalizeHeld makes held calls comparable with reflect.DeepEqual.
func normalizeHeld(h store.HeldCall) store.HeldCall {
	h.Received = h.Received.UTC()
	h.Deadline = h.Deadline.UTC()
	return h
}

// describeHeld prints a held call for a failure message, strings quoted.
func describeHeld(h store.HeldCall) string {
	h = normalizeHeld(h)
	return fmt.Sprintf("{ID:%q CallID:%q AOR:%q Node:%q Received:%s Deadline:%s Instances:%q Source:%q Transport:%q Request:%q Cancelled:%v}",
		h.ID, h.CallID, h.AOR, h.Node, h.Received.Format(time.RFC3339Nano), h.Deadline.Format(time.RFC3339Nano),
		h.Instances, h.Source, h.Transport, h.Request, h.Cancelled)
}

func checkHeld(t *testing.T, what string, got, want store.HeldCall) {
	t.Helper()
	if !reflect.DeepEqual(normalizeHeld(got), normalizeHeld(want)) {
		t.Errorf("%s:\n got %s\nwant %s", what, describeHeld(got), describeHeld(want))
	}
}

// checkHeldList compares a ListHeld result with want, in order.
func checkHeldList(t *testing.T, what string, got []store.HeldCall, want ...store.HeldCall) {
	t.Helper()
	ids := func(hs []store.HeldCall) []string {
		out := []string{}
		for _, h := range hs {
			out = append(out, h.ID)
		}
		return out
	}
	if !reflect.DeepEqual(ids(got), ids(want)) {
		t.Errorf("%s: ids %q, want %q", what, ids(got), ids(want))
		return
	}
	for i := range got {
		checkHeld(t, fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
	}
}

func putHeld(t *testing.T, st store.Store, h store.HeldCall) {
	t.Helper()
	if err := st.PutHeld(ctx(t), h); err != nil {
		t.Fatalf("PutHeld(%q): %v", h.ID, err)
	}
}

func listHeld(t *testing.T, st store.Store, f store.HeldFilter) []store.HeldCall {
	t.Helper()
	hs, err := st.ListHeld(ctx(t), f)
	if err != nil {
		t.Fatalf("ListHeld(%+v): %v", f, err)
	}
	return hs
}

func (s *suite) testHeldPutList(t *testing.T) {
	a, b, _ := s.nodes(t)
	t0 := time.Now().Add(-5 * time.Second)
	until := time.Now().Add(time.Hour)
	const alice, bob = "sip:alice@example.com", "sip:bob@example.com"
	h1 := HeldFixture("c1;z9hG4bK1", alice, "node-a", t0.Add(2*time.Second), until)
	h2 := HeldFixture("c2;z9hG4bK2", bob, "node-a", t0, until)
	h3 := HeldFixture("c3;z9hG4bK3", alice, "node-c", t0.Add(time.Second), until)
	// Same Received as h3: ordered by ID.
	h4 := HeldFixture("c0;z9hG4bK4", alice, "node-a", t0.Add(time.Second), until)
	h4.Cancelled = true
	h4.Instances, h4.Request = nil, nil
	putHeld(t, a, h1)
	putHeld(t, b, h2)
	putHeld(t, a, h3)
	putHeld(t, b, h4)

	for _, st := range []store.Store{a, b} {
		checkHeldList(t, "ListHeld(all)", listHeld(t, st, store.HeldFilter{}), h2, h4, h3, h1)
	}
	tests := []struct {
		name string
		f    store.HeldFilter
		want []store.HeldCall
	}{
		{"aor", store.HeldFilter{AOR: alice}, []store.HeldCall{h4, h3, h1}},
		{"node", store.HeldFilter{Node: "node-a"}, []store.HeldCall{h2, h4, h1}},
		{"aor and node", store.HeldFilter{AOR: alice, Node: "node-c"}, []store.HeldCall{h3}},
		{"aor and other node", store.HeldFilter{AOR: bob, Node: "node-c"}, nil},
		{"unknown aor", store.HeldFilter{AOR: "sip:nobody@example.com"}, nil},
		{"aor prefix is not a match", store.HeldFilter{AOR: "sip:alice"}, nil},
		{"node prefix is not a match", store.HeldFilter{Node: "node"}, nil},
	}
	for _, tc := range tests {
		checkHeldList(t, "ListHeld "+tc.name, listHeld(t, b, tc.f), tc.want...)
	}

	// Replacing keeps one record with the new content.
	h1b := h1
	h1b.Cancelled = true
	h1b.Deadline = until.Add(time.Minute)
	h1b.Instances = []string{"only-one"}
	h1b.Request = []byte("INVITE sip:x SIP/2.0\r\n\r\n")
	putHeld(t, b, h1b)
	checkHeldList(t, "ListHeld after replace", listHeld(t, a, store.HeldFilter{AOR: alice}), h4, h3, h1b)

	if err := a.PutHeld(ctx(t), HeldFixture("", alice, "node-a", t0, until)); err == nil {
		t.Error("PutHeld with an empty ID succeeded")
	}
}

func (s *suite) testHeldBinarySafe(t *testing.T) {
	st := s.open(t, NodeA)
	t0 := time.Now().Add(-time.Minute)
	until := time.Now().Add(time.Hour)
	// IDs, AORs and nodes chosen to collide under naive key schemes, and
	// bytes JSON cannot carry as strings: the store keeps these three (and
	// Request) byte for byte.
	var calls []store.HeldCall
	for i, p := range []struct{ id, aor, node string }{
		{"a\x00b", "sip:\xffodd@example.com", "n\x00\xff"},
		{"a", "sip:a@x", "n"},
		{"a\x00", "sip:a@x\x00", "n\x00"},
		{"{held}", "sip:{brace}@x", "{n}"},
		{"x}:y", "sip:x}:y@x", "}"},
		{"*?[]\\", "sip:a*?[]\\@x", "*"},
		{"ü📱\xc3\x28", "sip:ünïcødé@例え.jp", "nöde"},
	} {
		h := HeldFixture(p.id, p.aor, p.node, t0.Add(time.Duration(i)*time.Second), until)
		h.CallID = fmt.Sprintf("call-%d", i)
		h.Instances = []string{fmt.Sprintf("inst-%d", i)}
		calls = append(calls, h)
	}
	for _, h := range calls {
		putHeld(t, st, h)
	}
	checkHeldList(t, "ListHeld(all)", listHeld(t, st, store.HeldFilter{}), calls...)
	for _, h := range calls {
		checkHeldList(t, fmt.Sprintf("ListHeld(aor %q, node %q)", h.AOR, h.Node),
			listHeld(t, st, store.HeldFilter{AOR: h.AOR, Node: h.Node}), h)
		got, err := st.ClaimHeld(ctx(t), h.ID, h.Node, h.Node+"\x00")
		if err != nil {
			t.Errorf("ClaimHeld(%q, %q): %v", h.ID, h.Node, err)
			continue
		}
		want := h
		want.Node += "\x00"
		checkHeld(t, "ClaimHeld", got, want)
	}
	for _, h := range calls {
		if err := st.DeleteHeld(ctx(t), h.ID); err != nil {
			t.Errorf("DeleteHeld(%q): %v", h.ID, err)
		}
	}
	checkHeldList(t, "ListHeld after deleting all", listHeld(t, st, store.HeldFilter{}))
}

func (s *suite) testHeldDelete(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	h := HeldFixture("del;z9hG4bK1", "sip:dora@example.com", "node-a", now, now.Add(time.Hour))
	other := HeldFixture("del;z9hG4bK2", "sip:dora@example.com", "node-a", now, now.Add(time.Hour))
	putHeld(t, a, h)
	putHeld(t, a, other)
	if err := b.DeleteHeld(ctx(t), h.ID); err != nil {
		t.Fatalf("DeleteHeld: %v", err)
	}
	checkHeldList(t, "ListHeld after delete", listHeld(t, a, store.HeldFilter{}), other)
	if err := a.DeleteHeld(ctx(t), h.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteHeld: %v, want ErrNotFound", err)
	}
	if err := a.DeleteHeld(ctx(t), "unknown"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteHeld(unknown): %v, want ErrNotFound", err)
	}
	if _, err := a.ClaimHeld(ctx(t), h.ID, "node-a", "node-b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ClaimHeld after delete: %v, want ErrNotFound", err)
	}
}

func (s *suite) testHeldClaim(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	h := HeldFixture("claim;z9hG4bK1", "sip:eve@example.com", "node-a", now, now.Add(time.Hour))
	putHeld(t, a, h)

	got, err := b.ClaimHeld(ctx(t), h.ID, "node-a", "node-b")
	if err != nil {
		t.Fatalf("ClaimHeld: %v", err)
	}
	want := h
	want.Node = "node-b"
	checkHeld(t, "ClaimHeld result", got, want)
	checkHeldList(t, "ListHeld(new owner)", listHeld(t, a, store.HeldFilter{Node: "node-b"}), want)
	checkHeldList(t, "ListHeld(old owner)", listHeld(t, a, store.HeldFilter{Node: "node-a"}))

	// The old owner no longer owns it.
	if got, err := a.ClaimHeld(ctx(t), h.ID, "node-a", "node-c"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("ClaimHeld from the former owner = %q, %v; want ErrConflict", got.Node, err)
	}
	checkHeldList(t, "ListHeld after a refused claim", listHeld(t, b, store.HeldFilter{}), want)
	if _, err := a.ClaimHeld(ctx(t), "unknown", "node-a", "node-b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ClaimHeld(unknown): %v, want ErrNotFound", err)
	}
	// Claiming what one owns changes nothing.
	if got, err := b.ClaimHeld(ctx(t), h.ID, "node-b", "node-b"); err != nil {
		t.Errorf("ClaimHeld by the owner: %v", err)
	} else {
		checkHeld(t, "ClaimHeld by the owner", got, want)
	}
	// The new owner updates the record.
	want.Cancelled = true
	putHeld(t, b, want)
	checkHeldList(t, "ListHeld after the new owner's put", listHeld(t, a, store.HeldFilter{}), want)
}

func (s *suite) testHeldClaimRace(t *testing.T) {
	a, b, _ := s.nodes(t)
	const rounds = 20
	c := ctx(t)
	now := time.Now()
	for r := range rounds {
		h := HeldFixture(fmt.Sprintf("race-%d", r), "sip:race@example.com", "node-dead", now, now.Add(time.Hour))
		putHeld(t, a, h)
		claimers := []struct {
			st store.Store
			to string
		}{{a, "node-x"}, {b, "node-y"}}
		errs := make([]error, len(claimers))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, cl := range claimers {
			wg.Go(func() {
				<-start
				got, err := cl.st.ClaimHeld(c, h.ID, "node-dead", cl.to)
				if err == nil && got.Node != cl.to {
					err = fmt.Errorf("claim returned owner %q, want %q", got.Node, cl.to)
				}
				errs[i] = err
			})
		}
		close(start)
		wg.Wait()
		winner := ""
		for i, err := range errs {
			switch {
			case err == nil:
				if winner != "" {
					t.Fatalf("round %d: both claims won", r)
				}
				winner = claimers[i].to
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("round %d: claim to %q: %v, want success or ErrConflict", r, claimers[i].to, err)
			}
		}
		if winner == "" {
			t.Fatalf("round %d: no claim won (%v)", r, errs)
		}
		owner := ""
		for _, g := range listHeld(t, b, store.HeldFilter{Node: winner}) {
			if g.ID == h.ID {
				owner = g.Node
			}
		}
		if owner != winner {
			t.Fatalf("round %d: %q not listed under the winner %q", r, h.ID, winner)
		}
	}
}

func (s *suite) testHeldExpiry(t *testing.T) {
	a, b, _ := s.nodes(t)
	now := time.Now()
	const aor = "sip:fay@example.com"
	// Forgotten a second ago: never listed, never claimed or deleted.
	gone := HeldFixture("gone", aor, "node-a", now.Add(-2*time.Minute), now.Add(-store.HeldRetention-time.Second))
	// Past its Deadline but within the retention: still kept, until it is
	// forgotten 1.5 s from now.
	soon := HeldFixture("soon", aor, "node-a", now.Add(-time.Minute), now.Add(-store.HeldRetention+1500*time.Millisecond))
	late := HeldFixture("late", aor, "node-a", now.Add(-30*time.Second), now.Add(-10*time.Second))
	keep := HeldFixture("keep", aor, "node-a", now, now.Add(time.Hour))
	for _, h := range []store.HeldCall{gone, soon, late, keep} {
		putHeld(t, a, h)
	}
	checkHeldList(t, "ListHeld at once", listHeld(t, b, store.HeldFilter{}), soon, late, keep)
	if _, err := b.ClaimHeld(ctx(t), gone.ID, "node-a", "node-b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ClaimHeld(forgotten): %v, want ErrNotFound", err)
	}
	if err := b.DeleteHeld(ctx(t), gone.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteHeld(forgotten): %v, want ErrNotFound", err)
	}
	// Replacing a kept call with a forgotten one removes it.
	putHeld(t, a, HeldFixture(late.ID, aor, "node-a", late.Received, now.Add(-2*store.HeldRetention)))
	checkHeldList(t, "ListHeld after replacing with a forgotten call", listHeld(t, b, store.HeldFilter{}), soon, keep)

	eventually(t, func() string {
		got, err := b.ListHeld(ctx(t), store.HeldFilter{AOR: aor})
		if err != nil {
			return fmt.Sprintf("ListHeld: %v", err)
		}
		if len(got) != 1 || got[0].ID != keep.ID {
			return fmt.Sprintf("ListHeld returns %d calls, want only %q", len(got), keep.ID)
		}
		return ""
	})
	if time.Since(now) < 1500*time.Millisecond {
		t.Errorf("held call forgotten after %s, before a minute past its Deadline", time.Since(now))
	}
	if _, err := a.ClaimHeld(ctx(t), soon.ID, "node-a", "node-b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ClaimHeld(forgotten since): %v, want ErrNotFound", err)
	}
	if err := a.DeleteHeld(ctx(t), soon.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteHeld(forgotten since): %v, want ErrNotFound", err)
	}
}

func (s *suite) testHeldRestart(t *testing.T) {
	st := s.open(t, NodeA)
	now := time.Now()
	h := HeldFixture("restart;z9hG4bK1", "sip:gus@example.com", NodeA, now, now.Add(time.Hour))
	putHeld(t, st, h)
	if err := st.Heartbeat(ctx(t), NodeA, time.Hour); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	st = s.open(t, NodeA)
	checkHeldList(t, "ListHeld after reopening", listHeld(t, st, store.HeldFilter{}), h)
	if alive, err := st.NodeAlive(ctx(t), NodeA); err != nil || !alive {
		t.Errorf("NodeAlive after reopening = %v, %v; want true", alive, err)
	}
}

func (s *suite) testNodeHeartbeat(t *testing.T) {
	a, b, _ := s.nodes(t)
	alive := func(st store.Store, node string) bool {
		t.Helper()
		ok, err := st.NodeAlive(ctx(t), node)
		if err != nil {
			t.Fatalf("NodeAlive(%q): %v", node, err)
		}
		return ok
	}
	heartbeat := func(st store.Store, node string, ttl time.Duration) {
		t.Helper()
		if err := st.Heartbeat(ctx(t), node, ttl); err != nil {
			t.Fatalf("Heartbeat(%q, %s): %v", node, ttl, err)
		}
	}
	for _, node := range []string{"node-x", "", "node-x\x00"} {
		if alive(b, node) {
			t.Errorf("NodeAlive(%q) before any heartbeat = true", node)
		}
	}
	const ttl = 1500 * time.Millisecond
	start := time.Now()
	heartbeat(a, "node-x", ttl)
	heartbeat(a, "{n}\x00", time.Hour)
	if !alive(b, "node-x") || !alive(a, "node-x") {
		t.Fatal("NodeAlive right after Heartbeat = false")
	}
	if !alive(b, "{n}\x00") {
		t.Error("NodeAlive of a node with braces and NUL = false")
	}
	for _, other := range []string{"node-", "node-x ", "node-x\x00", "{n}"} {
		if alive(b, other) {
			t.Errorf("NodeAlive(%q) = true after another node's heartbeat", other)
		}
	}
	eventually(t, func() string {
		if alive(b, "node-x") {
			return "NodeAlive still true after the heartbeat's ttl"
		}
		return ""
	})
	if d := time.Since(start); d < ttl-100*time.Millisecond {
		t.Errorf("node dead after %s, before its ttl %s", d, ttl)
	}
	// A renewed heartbeat extends the life.
	heartbeat(a, "node-y", 300*time.Millisecond)
	heartbeat(b, "node-y", time.Hour)
	time.Sleep(600 * time.Millisecond)
	if !alive(a, "node-y") {
		t.Error("NodeAlive after a renewed heartbeat = false")
	}
	for _, bad := range []struct {
		node string
		ttl  time.Duration
	}{{"node-z", 0}, {"node-z", -time.Second}, {"", time.Second}} {
		if err := a.Heartbeat(ctx(t), bad.node, bad.ttl); err == nil {
			t.Errorf("Heartbeat(%q, %s) succeeded, want an error", bad.node, bad.ttl)
		}
	}
}
