package embedded_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/embedded"
	"github.com/sipwake/sipwake/store/storetest"
)

// TestRegistrationIndexes: puts, claims, moves between AORs and states and
// deletes keep exactly one schedule entry, one AOR index entry and one
// state count per record, and leave nothing behind.
func TestRegistrationIndexes(t *testing.T) {
	s := open(t, embedded.Options{Path: filepath.Join(t.TempDir(), "s.db"), SweepInterval: -1})
	ctx := t.Context()
	base := time.Now().Truncate(time.Second)
	check := func(what string, regs, due, byAOR, states int) {
		t.Helper()
		r, d, a, st, _, err := s.RegistrationCounts()
		if err != nil || r != regs || d != due || a != byAOR || st != states {
			t.Errorf("%s: %d records, %d schedule, %d aor index, %d state keys (%v); want %d, %d, %d, %d",
				what, r, d, a, st, err, regs, due, byAOR, states)
		}
	}
	var rs []store.Registration
	for i := range 3 {
		r := storetest.RegistrationFixture(fmt.Sprintf("t%d", i), "sip:ix@example.com", "d", base.Add(time.Duration(i)*time.Second))
		gen, err := s.PutRegistration(ctx, r, false)
		if err != nil {
			t.Fatal(err)
		}
		r.Gen = gen
		rs = append(rs, r)
	}
	check("after puts", 3, 3, 3, 1)
	if got, err := s.ClaimDue(ctx, base.Add(time.Minute), time.Hour, 2); err != nil || len(got) != 2 {
		t.Fatalf("ClaimDue = %d records, %v; want 2", len(got), err)
	}
	check("after a claim", 3, 3, 3, 1)
	moved := rs[0]
	moved.AOR, moved.State, moved.Due = "sip:other@example.com", store.RegBackingOff, base.Add(-time.Hour)
	if _, err := s.PutRegistration(ctx, moved, true); err != nil {
		t.Fatal(err)
	}
	check("after a move", 3, 3, 3, 2)
	for _, r := range rs {
		if err := s.DeleteRegistration(ctx, r.Token); err != nil {
			t.Fatal(err)
		}
	}
	check("after deletes", 0, 0, 0, 0)
	// A time before 1970 (the zero time) is due at once, not lost.
	z := storetest.RegistrationFixture("zero", "sip:ix@example.com", "d", time.Time{})
	if _, err := s.PutRegistration(ctx, z, false); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ClaimDue(ctx, base, time.Hour, 10); err != nil || len(got) != 1 || !got[0].Due.IsZero() {
		t.Errorf("ClaimDue of a zero Due = %d records, %v; want it, Due unchanged", len(got), err)
	}
	check("after a zero Due", 1, 1, 1, 1)
}
