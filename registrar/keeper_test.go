package registrar

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/store"
)

func testRegistrar(t *testing.T, cfg Config) *Registrar {
	t.Helper()
	r, err := New(cfg, nopStore{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// nopStore satisfies store.Store for tests of pure scheduling logic.
type nopStore struct{ store.Store }

func TestRefreshIntervalAroundTwoThirds(t *testing.T) {
	for range 1000 {
		d := refreshInterval(60 * time.Second)
		if d < 38*time.Second || d > 42*time.Second {
			t.Fatalf("refresh after %s for a 60s grant, want 40s ± 5%%", d)
		}
	}
}

// The first refresh after a device's REGISTER is spread over most of the
// period: 1,000 devices registering at once refresh at most about twice
// the average rate in any second.
func TestFirstRefreshSpreads(t *testing.T) {
	const n = 1000
	perSecond := map[int]int{}
	for range n {
		d := firstRefresh(60 * time.Second)
		if d < 5*time.Second || d > 45*time.Second {
			t.Fatalf("first refresh after %s, want within [5s, 45s]", d)
		}
		perSecond[int(d/time.Second)]++
	}
	avg := float64(n) / 40
	for s, c := range perSecond {
		if float64(c) > 2*avg {
			t.Errorf("second %d has %d first refreshes, average %.1f", s, c, avg)
		}
	}
}

func TestBackOff(t *testing.T) {
	r := testRegistrar(t, Config{})
	now := time.Now()
	reg := store.Registration{}
	var last time.Duration
	for i := 1; i <= 12; i++ {
		r.backOff(&reg, 0, now)
		d := reg.RefreshAt.Sub(now)
		want := min(2*time.Second<<(i-1), maxBackoff)
		if d < want/2 || d > want {
			t.Fatalf("failure %d: retry after %s, want within [%s, %s]", i, d, want/2, want)
		}
		if reg.State != store.RegBackingOff || reg.Failures != i {
			t.Fatalf("state %s failures %d", reg.State, reg.Failures)
		}
		last = d
	}
	if last > maxBackoff {
		t.Fatalf("backoff %s over the cap", last)
	}
	// Retry-After wins, with up to a quarter of it added.
	r.backOff(&reg, 30*time.Second, now)
	if d := reg.RefreshAt.Sub(now); d < 30*time.Second || d > 37500*time.Millisecond {
		t.Fatalf("retry after %s with Retry-After 30", d)
	}
}

func TestRetryAfter(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"120": 2 * time.Minute, "5 (maintenance)": 5 * time.Second, "18000;duration=3600": time.Hour, // capped
		"x": 0, "-1": 0, "999999": time.Hour,
	} {
		res := sip.NewResponse(503, "Service Unavailable")
		res.AppendHeader(sip.NewHeader("Retry-After", v))
		if got := retryAfter(res); got != want {
			t.Errorf("Retry-After %q = %s, want %s", v, got, want)
		}
	}
}

func TestPushAtAndNextDue(t *testing.T) {
	r := testRegistrar(t, Config{RefreshPush: true, Pusher: nopPusher{}, RefreshBefore: 130 * time.Second,
		RefreshPushInterval: 5 * time.Minute, InactivityTimeout: time.Hour})
	now := time.Now()
	// Pass-through device with a 60 s registration: push a third before.
	reg := store.Registration{LastSeen: now, DeviceExpires: now.Add(60 * time.Second), State: store.RegPushOnly}
	if at := r.pushAt(reg); at.Sub(now) != 40*time.Second {
		t.Fatalf("push at +%s, want +40s", at.Sub(now))
	}
	if due := r.nextDue(reg); due.Sub(now) != 40*time.Second {
		t.Fatalf("due at +%s", due.Sub(now))
	}
	// Pushed already: not again within the interval, so only the expiry.
	reg.LastPush = now.Add(39 * time.Second)
	if at := r.pushAt(reg); !at.IsZero() {
		t.Fatalf("second push at +%s within the interval", at.Sub(now))
	}
	if due := r.nextDue(reg); !due.Equal(reg.DeviceExpires) {
		t.Fatalf("due %s, want the device expiry", due.Sub(now))
	}
	// On-behalf, a day-long device registration: the refresh comes first;
	// needing login, only inactivity and pushes count.
	reg = store.Registration{OnBehalf: true, State: store.RegActive, LastSeen: now, DeviceExpires: now.Add(24 * time.Hour),
		RefreshAt: now.Add(40 * time.Second)}
	if due := r.nextDue(reg); !due.Equal(reg.RefreshAt) {
		t.Fatalf("due +%s, want the refresh", due.Sub(now))
	}
	reg.State = store.RegNeedsLogin
	if due := r.nextDue(reg); due.Sub(now) != time.Hour {
		t.Fatalf("needs_login due +%s, want the inactivity timeout", due.Sub(now))
	}
	// 130 s before a day-long registration lapses.
	if m := r.margin(24 * time.Hour); m != 130*time.Second {
		t.Fatalf("margin %s", m)
	}
}

type nopPusher struct{}

func (nopPusher) Send(*push.Notification, func(push.Result, error)) error { return nil }

func TestEnded(t *testing.T) {
	r := testRegistrar(t, Config{InactivityTimeout: time.Hour})
	now := time.Now()
	live := store.Binding{Expires: now.Add(time.Minute), Push: &store.PushTarget{Provider: "fcm", Token: "t"}}
	noPush := store.Binding{Expires: now.Add(time.Minute)}
	for _, tc := range []struct {
		name string
		reg  store.Registration
		bs   []store.Binding
		want string
	}{
		{"live", store.Registration{Instance: "d", OnBehalf: true, LastSeen: now, DeviceExpires: now.Add(time.Minute)}, []store.Binding{live}, ""},
		{"inactive", store.Registration{Instance: "d", OnBehalf: true, LastSeen: now.Add(-time.Hour), DeviceExpires: now.Add(time.Minute)}, []store.Binding{live}, "inactivity"},
		{"inactivity only on behalf", store.Registration{Instance: "d", LastSeen: now.Add(-time.Hour), DeviceExpires: now.Add(time.Minute)}, []store.Binding{live}, ""},
		{"binding removed", store.Registration{Instance: "d", OnBehalf: true, LastSeen: now, DeviceExpires: now.Add(time.Minute)}, nil, "removed"},
		{"expired", store.Registration{Instance: "d", OnBehalf: true, LastSeen: now, DeviceExpires: now.Add(-time.Second)}, nil, "expired"},
		{"push gone", store.Registration{Instance: "d", OnBehalf: true, LastSeen: now, DeviceExpires: now.Add(time.Minute)}, []store.Binding{noPush}, "no_push"},
		{"shared lives with its last device", store.Registration{OnBehalf: true, LastSeen: now, DeviceExpires: now.Add(-time.Second)},
			[]store.Binding{noPush, live}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := tc.reg
			if got := r.ended(&reg, tc.bs, now); got != tc.want {
				t.Fatalf("ended = %q, want %q", got, tc.want)
			}
		})
	}
}
