package fcm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/push/fcm"
	"github.com/sipwake/sipwake/push/pushtest"
)

const wait = 5 * time.Second

type setup struct {
	fake   *pushtest.FCM
	caFile string
	creds  map[string]string // project id → credentials file
}

func newSetup(t *testing.T, projects ...string) *setup {
	t.Helper()
	ca := pushtest.NewCA(t)
	s := &setup{fake: pushtest.NewFCM(t, ca), caFile: ca.WriteFile(t), creds: map[string]string{}}
	for _, p := range projects {
		s.creds[p] = s.fake.WriteServiceAccount(t, p)
	}
	return s
}

func (s *setup) options(projects ...string) fcm.Options {
	o := fcm.Options{Endpoint: s.fake.Endpoint, CAFile: s.caFile, Timeout: 3 * time.Second}
	for _, p := range projects {
		o.Projects = append(o.Projects, fcm.Project{ProjectID: p, CredentialsFile: s.creds[p]})
	}
	return o
}

func newNotifier(t *testing.T, o fcm.Options) *fcm.Notifier {
	t.Helper()
	n, err := fcm.New(o)
	if err != nil {
		t.Fatalf("fcm.New: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func note(project, token string) *push.Notification {
	return &push.Notification{
		Target: push.Target{Provider: "fcm", Token: token, Param: project},
		Type:   push.TypeData,
		Payload: push.Payload{Event: push.EventCall, CallID: "call-1@pbx", AOR: "sip:1001@pbx.test",
			FromURI: "sip:1002@pbx.test", FromName: "Bob"},
		Expiration: time.Now().Add(30 * time.Second),
		CollapseID: push.CollapseID("call-1@pbx"),
	}
}

func TestMessage(t *testing.T) {
	s := newSetup(t, "proj-a")
	n := newNotifier(t, s.options("proj-a"))
	res, err := n.Notify(ctx(t), note("proj-a", "reg-token-1"))
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if res.Status != 200 || !strings.HasPrefix(res.ID, "projects/proj-a/messages/") {
		t.Errorf("result %+v", res)
	}
	r := s.fake.WaitRequests(t, 1, wait)[0]
	m := r.Message
	if r.ProjectID != "proj-a" || m.Token != "reg-token-1" || r.Status != 200 {
		t.Errorf("project %q token %q status %d", r.ProjectID, m.Token, r.Status)
	}
	if m.Notification != nil || m.Android == nil || m.Android.Notification != nil || m.APNs != nil {
		t.Errorf("not a data-only android message: %s", r.Body)
	}
	want := map[string]string{
		"sipwake.event": "call", "sipwake.call_id": "call-1@pbx", "sipwake.uuid": push.UUIDFromCallID("call-1@pbx"),
		"sipwake.aor": "sip:1001@pbx.test", "sipwake.from_uri": "sip:1002@pbx.test", "sipwake.from_name": "Bob",
	}
	if fmt.Sprint(m.Data) != fmt.Sprint(want) {
		t.Errorf("data = %v, want %v", m.Data, want)
	}
	if m.Android.Priority != "HIGH" || m.Android.CollapseKey != push.CollapseID("call-1@pbx") {
		t.Errorf("android = %+v", m.Android)
	}
	ttl, err := strconv.Atoi(strings.TrimSuffix(m.Android.TTL, "s"))
	if err != nil || ttl > 30 || ttl < 25 {
		t.Errorf("ttl = %q, want at most the 30 s left", m.Android.TTL)
	}

	// No expiration: no ttl (FCM's default); an alert's text is data too.
	alert := note("proj-a", "reg-token-2")
	alert.Type, alert.Expiration, alert.CollapseID = push.TypeAlert, time.Time{}, ""
	alert.Payload = push.Payload{Event: push.EventMessage, FromName: "Alice"}
	alert.Alert = &push.Alert{Title: "Alice", Body: "hello"}
	if _, err := n.Notify(ctx(t), alert); err != nil {
		t.Fatal(err)
	}
	m = s.fake.WaitRequests(t, 2, wait)[1].Message
	if m.Android.TTL != "" || m.Android.CollapseKey != "" {
		t.Errorf("android = %+v, want no ttl nor collapse_key", m.Android)
	}
	if m.Data["sipwake.alert_title"] != "Alice" || m.Data["sipwake.alert_body"] != "hello" || m.Data["sipwake.event"] != "message" {
		t.Errorf("data = %v", m.Data)
	}
}

func TestTTL(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		exp  time.Time
		want string
	}{
		{now.Add(30 * time.Second), "30s"},
		{now.Add(29*time.Second + 999*time.Millisecond), "29s"},
		{now.Add(500 * time.Millisecond), "0s"},
		{now.Add(-time.Minute), "0s"},
		{now.Add(4 * 7 * 24 * time.Hour), "2419200s"},
	} {
		if got := fcm.TTL(tc.exp, now); got != tc.want {
			t.Errorf("TTL(%v) = %s, want %s", tc.exp.Sub(now), got, tc.want)
		}
	}
}

func TestProjectRouting(t *testing.T) {
	s := newSetup(t, "proj-a", "proj-b")
	n := newNotifier(t, s.options("proj-a", "proj-b"))
	for _, p := range []string{"proj-a", "proj-b", "proj-a"} {
		if _, err := n.Notify(ctx(t), note(p, "tok-"+p)); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	rs := s.fake.WaitRequests(t, 3, wait)
	for i, want := range []string{"proj-a", "proj-b", "proj-a"} {
		if rs[i].ProjectID != want || rs[i].Message.Token != "tok-"+want {
			t.Errorf("push %d went to %s with token %s, want %s", i, rs[i].ProjectID, rs[i].Message.Token, want)
		}
	}
	if rs[0].Bearer == rs[1].Bearer || rs[0].Bearer != rs[2].Bearer {
		t.Errorf("each project should use its own access token, reused")
	}
	for _, p := range []string{"proj-c", ""} {
		_, err := n.Notify(ctx(t), note(p, "tok"))
		var pe *push.Error
		if !errors.As(err, &pe) || pe.Reason != push.ReasonNoProvider || pe.Permanent {
			t.Errorf("project %q: err = %v, want a non-permanent no_provider", p, err)
		}
	}
	if got := len(s.fake.Requests()); got != 3 {
		t.Errorf("fake got %d requests, want 3", got)
	}
	// With one project, a target without pn-param goes to it.
	one := newNotifier(t, s.options("proj-b"))
	if _, err := one.Notify(ctx(t), note("", "tok-x")); err != nil {
		t.Fatal(err)
	}
	if r := s.fake.WaitRequests(t, 4, wait)[3]; r.ProjectID != "proj-b" {
		t.Errorf("went to %s, want proj-b", r.ProjectID)
	}
	// An apns target is not for this notifier.
	apple := note("proj-a", "tok")
	apple.Target.Provider = "apns"
	if _, err := n.Notify(ctx(t), apple); push.ReasonOf(err) != push.ReasonNoProvider {
		t.Errorf("apns target: %v", err)
	}
}

func TestAccessTokenReused(t *testing.T) {
	s := newSetup(t, "proj-a")
	n := newNotifier(t, s.options("proj-a"))
	const pushes = 25
	var wg sync.WaitGroup
	for i := range pushes {
		wg.Go(func() {
			if _, err := n.Notify(ctx(t), note("proj-a", fmt.Sprintf("tok-%d", i))); err != nil {
				t.Errorf("Notify: %v", err)
			}
		})
	}
	wg.Wait()
	rs := s.fake.WaitRequests(t, pushes, wait)
	if got := s.fake.TokenRequests(); got != 1 {
		t.Errorf("%d pushes made %d token requests, want 1", pushes, got)
	}
	for _, r := range rs {
		if r.Bearer != rs[0].Bearer {
			t.Fatalf("pushes carried different access tokens")
		}
	}

	// Tokens that expire within oauth2's 10 s margin are never reused.
	s2 := newSetup(t, "proj-a")
	s2.fake.SetTokenLifetime(5 * time.Second)
	short := newNotifier(t, s2.options("proj-a"))
	for range 3 {
		if _, err := short.Notify(ctx(t), note("proj-a", "tok")); err != nil {
			t.Fatal(err)
		}
	}
	if got := s2.fake.TokensIssued(); got != 3 {
		t.Errorf("short-lived tokens: %d issued for 3 pushes, want 3", got)
	}
}

func TestRevokedAccessTokenReplaced(t *testing.T) {
	s := newSetup(t, "proj-a")
	n := newNotifier(t, s.options("proj-a"))
	if _, err := n.Notify(ctx(t), note("proj-a", "tok")); err != nil {
		t.Fatal(err)
	}
	s.fake.RevokeTokens()
	_, err := n.Notify(ctx(t), note("proj-a", "tok"))
	var pe *push.Error
	if !errors.As(err, &pe) || pe.Reason != push.ReasonAuth || pe.Status != 401 || pe.Permanent {
		t.Fatalf("revoked token: err = %v, want auth 401", err)
	}
	if _, err := n.Notify(ctx(t), note("proj-a", "tok")); err != nil {
		t.Fatalf("after a 401 a new token should be fetched: %v", err)
	}
	if got := s.fake.TokensIssued(); got != 2 {
		t.Errorf("tokens issued = %d, want 2", got)
	}
}

func TestErrorClassification(t *testing.T) {
	s := newSetup(t, "proj-a")
	n := newNotifier(t, s.options("proj-a"))
	tests := []struct {
		name       string
		reply      pushtest.Reply
		reason     string
		permanent  bool
		retryAfter time.Duration
	}{
		{"unregistered", pushtest.FCMUnregistered, push.ReasonUnregistered, true, 0},
		{"unregistered 400", pushtest.Reply{Status: 400, Reason: "UNREGISTERED"}, push.ReasonUnregistered, true, 0},
		{"invalid token field", pushtest.FCMInvalidToken, push.ReasonBadToken, true, 0},
		{"invalid token message", pushtest.Reply{Status: 400, Reason: "INVALID_ARGUMENT", Message: "The registration token is not a valid FCM registration token"}, push.ReasonBadToken, true, 0},
		{"invalid other argument", pushtest.FCMInvalidArgument, push.ReasonBadRequest, false, 0},
		{"sender id mismatch", pushtest.FCMSenderIDMismatch, push.ReasonTopicMismatch, true, 0},
		{"quota", pushtest.FCMQuotaExceeded, push.ReasonRateLimited, false, 30 * time.Second},
		{"unavailable", pushtest.Reply{Status: 503, Reason: "UNAVAILABLE", RetryAfter: 12 * time.Second}, push.ReasonServerError, false, 12 * time.Second},
		{"internal", pushtest.FCMInternal, push.ReasonServerError, false, 0},
		{"third party auth", pushtest.FCMThirdPartyAuthErr, push.ReasonAuth, false, 0},
		{"permission denied", pushtest.Reply{Status: 403}, push.ReasonAuth, false, 0},
		{"unauthenticated", pushtest.Reply{Status: 401}, push.ReasonAuth, false, 0},
		{"bare 502", pushtest.Reply{Status: 502}, push.ReasonServerError, false, 0},
		{"not found without code", pushtest.Reply{Status: 404}, push.ReasonBadRequest, false, 0},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := fmt.Sprintf("tok-%d", i)
			s.fake.ReplyToken(tok, tc.reply)
			res, err := n.Notify(ctx(t), note("proj-a", tok))
			var pe *push.Error
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *push.Error", err)
			}
			if pe.Reason != tc.reason || pe.Permanent != tc.permanent || pe.RetryAfter != tc.retryAfter {
				t.Errorf("got %s permanent %v retry-after %v, want %s %v %v", pe.Reason, pe.Permanent, pe.RetryAfter,
					tc.reason, tc.permanent, tc.retryAfter)
			}
			if pe.Status != tc.reply.Status || res.Status != tc.reply.Status || pe.Provider != "fcm" {
				t.Errorf("status %d/%d provider %s", pe.Status, res.Status, pe.Provider)
			}
			if tc.reply.Reason != "" && pe.Detail != tc.reply.Reason {
				t.Errorf("detail %q, want %q", pe.Detail, tc.reply.Reason)
			}
		})
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	s := newSetup(t, "proj-a")
	for _, tc := range []struct {
		reply  pushtest.Reply
		reason string
	}{
		{pushtest.Reply{Status: 400, Reason: "invalid_grant", Message: "Invalid JWT Signature."}, push.ReasonAuth},
		{pushtest.Reply{Status: 401, Reason: "invalid_client"}, push.ReasonAuth},
		{pushtest.Reply{Status: 503, Reason: "temporarily_unavailable", RetryAfter: 4 * time.Second}, push.ReasonServerError},
		{pushtest.Reply{Status: 429, Reason: "rate_limit_exceeded"}, push.ReasonRateLimited},
	} {
		s.fake.ReplyOAuth(tc.reply)
		n := newNotifier(t, s.options("proj-a"))
		_, err := n.Notify(ctx(t), note("proj-a", "tok"))
		var pe *push.Error
		if !errors.As(err, &pe) || pe.Reason != tc.reason || pe.Permanent || pe.Status != tc.reply.Status {
			t.Errorf("token endpoint %d %s: err = %v, want %s", tc.reply.Status, tc.reply.Reason, err, tc.reason)
		} else if tc.reply.RetryAfter != 0 && pe.RetryAfter != tc.reply.RetryAfter {
			t.Errorf("retry-after %v, want %v", pe.RetryAfter, tc.reply.RetryAfter)
		}
	}
	if got := len(s.fake.Requests()); got != 0 {
		t.Errorf("messages sent without an access token: %d", got)
	}
	s.fake.ReplyOAuth(pushtest.Reply{})
	if _, err := newNotifier(t, s.options("proj-a")).Notify(ctx(t), note("proj-a", "tok")); err != nil {
		t.Errorf("after the token endpoint recovered: %v", err)
	}
	// A token endpoint we do not trust (another fake, another CA).
	other := pushtest.NewFCM(t, nil).WriteServiceAccount(t, "proj-a")
	o := s.options()
	o.Projects = []fcm.Project{{ProjectID: "proj-a", CredentialsFile: other}}
	if _, err := newNotifier(t, o).Notify(ctx(t), note("proj-a", "tok")); push.ReasonOf(err) != push.ReasonNetwork {
		t.Errorf("untrusted token endpoint: err = %v, want network", err)
	}
	// A key the token endpoint does not know: the assertion is refused.
	o.Projects[0].CredentialsFile = rewrite(t, other, func(m map[string]any) { m["token_uri"] = s.fake.TokenURL })
	if _, err := newNotifier(t, o).Notify(ctx(t), note("proj-a", "tok")); push.ReasonOf(err) != push.ReasonAuth {
		t.Errorf("unknown service account: err = %v, want auth", err)
	}
}

// rewrite copies a credentials file with edit applied.
func rewrite(t *testing.T, path string, edit func(map[string]any)) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "edited.json")
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCAFileCoversTokenEndpoint(t *testing.T) {
	s := newSetup(t, "proj-a")
	o := s.options("proj-a")
	o.CAFile = ""
	_, err := newNotifier(t, o).Notify(ctx(t), note("proj-a", "tok"))
	if push.ReasonOf(err) != push.ReasonNetwork || s.fake.TokenRequests() != 0 {
		t.Errorf("without CAFile: err = %v, token requests %d; want a certificate (network) error", err, s.fake.TokenRequests())
	}
}

func TestTimeouts(t *testing.T) {
	s := newSetup(t, "proj-a")
	o := s.options("proj-a")
	o.Timeout = 300 * time.Millisecond
	n := newNotifier(t, o)
	s.fake.ReplyAll(pushtest.Reply{Hang: true})
	start := time.Now()
	if _, err := n.Notify(ctx(t), note("proj-a", "tok")); push.ReasonOf(err) != push.ReasonTimeout {
		t.Errorf("hanging FCM: err = %v, want timeout", err)
	}
	s.fake.ReplyOAuth(pushtest.Reply{Status: 500, Hang: true})
	if _, err := newNotifier(t, o).Notify(ctx(t), note("proj-a", "tok")); push.ReasonOf(err) != push.ReasonTimeout {
		t.Errorf("hanging token endpoint: err = %v, want timeout", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("took %v with 300ms timeouts", d)
	}
}

func TestRefusedBeforeSending(t *testing.T) {
	s := newSetup(t, "proj-a")
	n := newNotifier(t, s.options("proj-a"))
	big := note("proj-a", "tok")
	big.Payload.FromName = strings.Repeat("x", 4100)
	noTok := note("proj-a", "")
	for _, tc := range []struct {
		note   *push.Notification
		reason string
	}{{big, push.ReasonPayloadTooLong}, {noTok, push.ReasonBadRequest}, {nil, push.ReasonBadRequest}} {
		if _, err := n.Notify(ctx(t), tc.note); push.ReasonOf(err) != tc.reason {
			t.Errorf("err = %v, want %s", err, tc.reason)
		}
	}
	if len(s.fake.Requests()) != 0 || s.fake.TokenRequests() != 0 {
		t.Errorf("refused pushes reached FCM")
	}
}

func TestNewErrors(t *testing.T) {
	s := newSetup(t, "proj-a")
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notSA := write("user.json", `{"type":"authorized_user","client_email":"a@b","private_key":"x"}`)
	badKey := write("badkey.json", `{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`)
	garbage := write("garbage.json", `{`)
	noProject := rewrite(t, s.creds["proj-a"], func(m map[string]any) { delete(m, "project_id") })
	for _, tc := range []struct {
		name string
		opts fcm.Options
		want string
	}{
		{"no projects", fcm.Options{}, "no projects"},
		{"no credentials", fcm.Options{Projects: []fcm.Project{{ProjectID: "p"}}}, "credentials_file is required"},
		{"missing file", fcm.Options{Projects: []fcm.Project{{ProjectID: "p", CredentialsFile: "/nonexistent.json"}}}, "credentials_file"},
		{"not json", fcm.Options{Projects: []fcm.Project{{ProjectID: "p", CredentialsFile: garbage}}}, "credentials_file"},
		{"not a service account", fcm.Options{Projects: []fcm.Project{{ProjectID: "p", CredentialsFile: notSA}}}, "service_account"},
		{"bad key", fcm.Options{Projects: []fcm.Project{{ProjectID: "p", CredentialsFile: badKey}}}, "private_key"},
		{"no project id", fcm.Options{Projects: []fcm.Project{{CredentialsFile: noProject}}}, "no project_id"},
		{"twice", fcm.Options{Projects: []fcm.Project{{CredentialsFile: s.creds["proj-a"]}, {ProjectID: "proj-a", CredentialsFile: s.creds["proj-a"]}}}, "twice"},
		{"bad endpoint", fcm.Options{Endpoint: "fcm.googleapis.com", Projects: []fcm.Project{{CredentialsFile: s.creds["proj-a"]}}}, "endpoint"},
		{"missing ca", fcm.Options{CAFile: "/nonexistent", Projects: []fcm.Project{{CredentialsFile: s.creds["proj-a"]}}}, "ca file"},
	} {
		_, err := fcm.New(tc.opts)
		if err == nil || !strings.HasPrefix(err.Error(), "fcm: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want an fcm error about %q", tc.name, err, tc.want)
		}
	}
	// The project id may come from the credentials file alone.
	n := newNotifier(t, fcm.Options{Endpoint: s.fake.Endpoint, CAFile: s.caFile,
		Projects: []fcm.Project{{CredentialsFile: s.creds["proj-a"]}}})
	if _, err := n.Notify(ctx(t), note("proj-a", "tok")); err != nil {
		t.Errorf("project id from the file: %v", err)
	}
}
