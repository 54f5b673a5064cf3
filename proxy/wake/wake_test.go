package wake

import (
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
)

func parse(t *testing.T, raw string) *sip.Request {
	t.Helper()
	m, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return m.(*sip.Request)
}

const invite = "INVITE sip:tok@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-1\r\n" +
	"From: \"Alice\" <sip:1002@pbx.test>;tag=a\r\nTo: <sip:1001@pbx.test>\r\n" +
	"Call-ID: call-1\r\nCSeq: 1 INVITE\r\n%sContent-Length: 0\r\n\r\n"

func TestPushAllowed(t *testing.T) {
	for _, tc := range []struct {
		extra string
		want  bool
	}{
		{"", true},
		{"Priority: urgent\r\n", true},
		{"Priority: non-urgent\r\n", false},
		{"Priority:  Non-Urgent \r\n", false},
		{"Replaces: abc;to-tag=1;from-tag=2\r\n", false},
	} {
		req := parse(t, fmt.Sprintf(invite, tc.extra))
		if got := pushAllowed(req); got != tc.want {
			t.Errorf("%q: pushAllowed = %v, want %v", tc.extra, got, tc.want)
		}
	}
}

// TestNotification: the push kind follows the device and the event; a
// VoIP push is only ever for an incoming call.
func TestNotification(t *testing.T) {
	w := &Wake{cfg: Config{IncludeCaller: true}}
	c := &call{w: w, aor: "sip:1001@pbx.test", callID: "call-1", fromURI: "sip:1002@pbx.test", fromName: "Alice",
		deadline: time.Now().Add(30 * time.Second)}
	voip := &store.PushTarget{Provider: "apns", Token: "v", Param: "T.com.x.voip", Types: []string{registrar.PushTypeVoIP}}
	both := &store.PushTarget{Provider: "apns", Token: "v", Param: "T.com.x", Types: []string{registrar.PushTypeVoIP, registrar.PushTypeRemote},
		Tokens: map[string]string{"voip": "v", "remote": "r"}}
	remote := &store.PushTarget{Provider: "apns.dev", Token: "r", Param: "T.com.x", Types: []string{registrar.PushTypeRemote}}
	fcm := &store.PushTarget{Provider: "fcm", Token: "f", Param: "proj", Types: []string{registrar.PushTypeData}}
	for _, tc := range []struct {
		name string
		t    *store.PushTarget
		ev   push.Event
		want push.Type
		err  bool
	}{
		{"voip call", voip, push.EventCall, push.TypeVoIP, false},
		{"voip-only missed", voip, push.EventCallMissed, "", true},
		{"both call", both, push.EventCall, push.TypeVoIP, false},
		{"both missed", both, push.EventCallMissed, push.TypeAlert, false},
		{"remote call", remote, push.EventCall, push.TypeAlert, false},
		{"fcm call", fcm, push.EventCall, push.TypeData, false},
		{"fcm cancel", fcm, push.EventCallCancelled, push.TypeData, false},
	} {
		n, err := c.notification(&store.Binding{Push: tc.t}, tc.ev)
		if tc.err {
			if err == nil {
				t.Errorf("%s: no error, got a %s push", tc.name, n.Type)
			}
			continue
		}
		if err != nil || n.Type != tc.want {
			t.Errorf("%s: type %v err %v, want %s", tc.name, n, err, tc.want)
			continue
		}
		if n.Type == push.TypeVoIP && tc.ev != push.EventCall {
			t.Errorf("%s: VoIP push for %s", tc.name, tc.ev)
		}
		f := n.Payload.Fields()
		if f["event"] != string(tc.ev) || f["call_id"] != "call-1" || f["from_name"] != "Alice" || n.CollapseID != push.CollapseID("call-1") {
			t.Errorf("%s: payload %v collapse %q", tc.name, f, n.CollapseID)
		}
		if tc.ev == push.EventCall && !n.Expiration.Equal(c.deadline) {
			t.Errorf("%s: expiration %v, want the hold deadline", tc.name, n.Expiration)
		}
	}
	w.cfg.IncludeCaller = false
	n, _ := c.notification(&store.Binding{Push: fcm}, push.EventCall)
	if f := n.Payload.Fields(); f["from_uri"] != "" || f["from_name"] != "" {
		t.Errorf("caller in the push with include_caller off: %v", f)
	}
}

func TestBackoff(t *testing.T) {
	for n := 1; n <= 10; n++ {
		want := 250 * time.Millisecond << min(n-1, 5)
		if want > 8*time.Second {
			want = 8 * time.Second
		}
		for i := 0; i < 50; i++ {
			if d := backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

// TestKeepBest: RFC 3261 §16.7 step 6, the lowest class wins and a
// received answer beats one made here.
func TestKeepBest(t *testing.T) {
	req := parse(t, fmt.Sprintf(invite, ""))
	res := func(code int) *sip.Response { return sip.NewResponseFromRequest(req, code, "x", nil) }
	c := &call{}
	c.keepBest(res(408), true)
	c.keepBest(res(503), false)
	if c.best.StatusCode != 503 || c.bestLocal {
		t.Fatalf("a received 503 should beat a local 408: %d", c.best.StatusCode)
	}
	c.keepBest(res(486), false)
	c.keepBest(res(500), false)
	if c.best.StatusCode != 486 {
		t.Fatalf("best %d, want 486", c.best.StatusCode)
	}
	c.keepBest(res(302), false)
	if c.best.StatusCode != 302 {
		t.Fatalf("best %d, want 302", c.best.StatusCode)
	}
}

func TestHeldIDMatchesCancel(t *testing.T) {
	inv := parse(t, fmt.Sprintf(invite, ""))
	cancel := parse(t, "CANCEL sip:tok@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-1\r\n"+
		"From: <sip:1002@pbx.test>;tag=a\r\nTo: <sip:1001@pbx.test>\r\nCall-ID: call-1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n")
	if heldID(inv) != heldID(cancel) || heldID(inv) != "call-1|z9hG4bK-1" {
		t.Fatalf("INVITE %q, CANCEL %q", heldID(inv), heldID(cancel))
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("no store accepted")
	}
	for _, cfg := range []Config{
		{CallerFeedback: "181"},
		{NoAnswerStatus: 200},
		{CancelledDelivery: "ring"},
	} {
		cfg.Store = fakeStore{}
		if _, err := New(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

type fakeStore struct{ Store }
