package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
	"github.com/sipwake/sipwake/push/pushtest"
)

// The hold used by the wake tests: short, so "never woken" ends quickly.
const testHold = 6 * time.Second

// Push parameters of the test devices.
const (
	iosToken     = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	iosParams    = ";pn-provider=apns;pn-prid=" + iosToken + ";pn-param=TEAMTEST01.com.example.phone.voip"
	iosTopic     = "com.example.phone.voip"
	androidToken = "fcm-token-0123456789abcdef:APA91bHxyz"
	fcmProject   = "sipwake-test"
	androidParms = ";pn-provider=fcm;pn-prid=" + androidToken + ";pn-param=" + fcmProject
	// The Linphone legacy form of an iOS VoIP device.
	legacyToken  = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	legacyParams = ";pn-type=apple;pn-tok=" + legacyToken + ";app-id=com.example.legacy.voip.prod"
	// An iOS device with a VoIP and a remote (alert) token.
	iosRemoteToken = "99aa88bb77cc66dd55ee44ff33aa22bb11cc00dd99aa88bb77cc66dd55ee44ff"
	iosBoth        = ";pn-provider=apns;pn-prid=" + iosRemoteToken + ":remote&" + iosToken + ":voip;pn-param=TEAMTEST01.com.example.phone.remote&voip"
)

// wakeEnv is a PBX, fake APNs and FCM, and sipwake configured for them.
type wakeEnv struct {
	kam  *testpeers.Kamailio
	sw   *running
	apns *pushtest.APNs
	fcm  *pushtest.FCM
}

func startWakeEnv(t *testing.T, mutate func(*Config)) *wakeEnv {
	t.Helper()
	return startWakeEnvWith(t, testpeers.KamailioOptions{}, mutate)
}

// startWakeEnvWith is startWakeEnv with a PBX started with kopts.
func startWakeEnvWith(t *testing.T, kopts testpeers.KamailioOptions, mutate func(*Config)) *wakeEnv {
	t.Helper()
	ca := pushtest.NewCA(t)
	e := &wakeEnv{kam: startPBX(t, kopts), apns: pushtest.NewAPNs(t, ca), fcm: pushtest.NewFCM(t, ca)}
	cfg := e2eConfig(t, e.kam, t.TempDir())
	cfg.Push.CAFile = ca.WriteFile(t)
	cfg.Push.APNs.KeyFile = e.apns.WriteKey(t)
	cfg.Push.APNs.KeyID, cfg.Push.APNs.TeamID = e.apns.KeyID, e.apns.TeamID
	cfg.Push.APNs.URL, cfg.Push.APNs.SandboxURL = e.apns.URL, e.apns.URL
	cfg.Push.FCM.Projects = []FCMProject{{ProjectID: fcmProject, CredentialsFile: e.fcm.WriteServiceAccount(t, fcmProject)}}
	cfg.Push.FCM.Endpoint = e.fcm.Endpoint
	cfg.Wake.InviteHoldTimeout = testHold
	if mutate != nil {
		mutate(cfg)
	}
	e.sw = startDaemon(t, cfg)
	return e
}

// sleepDevice registers user through sipwake over TCP with push
// parameters, then drops the connection as a suspended app does.
func (e *wakeEnv) sleepDevice(t *testing.T, user, params string) {
	t.Helper()
	ua := proxytest.DialTCP(t, "", e.sw.TCP)
	cseq := 0
	if res := rawRegister(t, ua, e.sw.TCP, user, "pw"+user, params+"|", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("%s: register: %d %s", user, res.StatusCode, res.Reason)
	}
	ua.Close()
}

// wakeDevice registers user again from a new connection (the woken app),
// through the PBX's challenge, and returns the UA.
func (e *wakeEnv) wakeDevice(t *testing.T, user, params string) *proxytest.UA {
	t.Helper()
	ua := proxytest.DialTCP(t, "", e.sw.TCP)
	cseq := 10
	if res := rawRegister(t, ua, e.sw.TCP, user, "pw"+user, params+"|", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("%s: wake-up register: %d %s", user, res.StatusCode, res.Reason)
	}
	return ua
}

// call starts PBX user 1002 calling user through the PBX.
func (e *wakeEnv) call(t *testing.T, user string, timeout time.Duration) *testpeers.SIPp {
	t.Helper()
	e.kam.RemoveContacts(t, "1002")
	port := pbxUser(t, e.kam, "1002")
	s, err := testpeers.StartSIPp(t, e2eCtx(t, timeout+10*time.Second), testpeers.SIPpOptions{
		Scenario:  "uac_call.xml",
		Remote:    e.kam.UDPAddr,
		LocalPort: port,
		Auth:      [2]string{"1002", "pw1002"},
		Keys:      testpeers.CallKeys("1002", user, "pbx.test"),
		Pause:     callHold,
		Timeout:   timeout,
	})
	if err != nil {
		t.Fatalf("call to %s: %v", user, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("caller trace:\n%s", tail(s.Messages(), 80))
		}
	})
	return s
}

// answer plays the callee on a woken device: 180, 200, then the ACK, the
// caller's re-INVITE and its BYE.
func answer(t *testing.T, ua *proxytest.UA, addr string) *sip.Request {
	t.Helper()
	inv := ua.ExpectRequest(10*time.Second, sip.INVITE)
	finishCall(t, ua, addr, inv)
	return inv
}

// finishCall answers inv (180, 200), then takes the ACK, the caller's
// re-INVITE and its BYE.
func finishCall(t *testing.T, ua *proxytest.UA, addr string, inv *sip.Request) {
	t.Helper()
	contact := "Contact: <sip:dev@" + ua.Addr() + ">"
	if ua.Network() != "udp" {
		contact = "Contact: <sip:dev@" + ua.Addr() + ";transport=" + ua.Network() + ">"
	}
	ua.Reply(addr, inv, 180, "Ringing", contact)
	// A person answers a little later: a 200 right behind the 180 can
	// overtake it inside a multi-process PBX, which the caller's scenario
	// would take as an error.
	time.Sleep(100 * time.Millisecond)
	ua.Reply(addr, inv, 200, "OK", contact)
	ua.ExpectRequest(5*time.Second, sip.ACK)
	// The caller's scenario re-INVITEs once, then hangs up.
	for deadline := time.Now().Add(15 * time.Second); ; {
		m, err := ua.Recv(time.Until(deadline))
		if err != nil {
			t.Fatalf("device: no BYE: %v", err)
		}
		r, ok := m.(*sip.Request)
		if !ok {
			continue
		}
		switch r.Method {
		case sip.INVITE:
			ua.Reply(addr, r, 200, "OK", contact)
		case sip.ACK:
		case sip.BYE:
			ua.Reply(addr, r, 200, "OK")
			return
		default:
			t.Fatalf("device: unexpected %s", r.Method)
		}
	}
}

// noMore checks that the device receives no other request for a while.
func noMore(t *testing.T, ua *proxytest.UA, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		m, err := ua.Recv(time.Until(deadline))
		if err != nil {
			return
		}
		if r, ok := m.(*sip.Request); ok {
			t.Errorf("device got an unexpected %s", r.Method)
		}
	}
}

// TestE2EWakeIOS: a sleeping iOS device is pushed once (VoIP, right topic,
// priority, expiration, collapse id, payload), registers through the
// PBX's challenge, gets exactly one INVITE and takes the call.
func TestE2EWakeIOS(t *testing.T) {
	for _, tc := range []struct {
		name, params, token, topic string
	}{
		{"rfc8599", iosParams, iosToken, iosTopic},
		{"linphone-legacy", legacyParams, legacyToken, "com.example.legacy.voip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startWakeEnv(t, nil)
			e.sleepDevice(t, "1001", tc.params)
			sent := time.Now()
			caller := e.call(t, "1001", 20*time.Second)

			pushes := e.apns.WaitRequests(t, 1, 5*time.Second)
			p := pushes[0]
			if p.Token != tc.token || p.PushType() != "voip" || p.Topic() != tc.topic || p.Priority() != "10" {
				t.Fatalf("push: token %s type %q topic %q priority %q", push6(p.Token), p.PushType(), p.Topic(), p.Priority())
			}
			exp, _ := strconv.ParseInt(p.Expiration(), 10, 64)
			if exp == 0 || time.Unix(exp, 0).After(sent.Add(testHold+2*time.Second)) {
				t.Errorf("apns-expiration %q is not within the hold", p.Expiration())
			}
			sw := p.Sipwake()
			if sw["event"] != "call" || sw["aor"] != "sip:1001@pbx.test" || sw["call_id"] == "" || sw["uuid"] == "" ||
				!strings.Contains(sw["from_uri"].(string), "1002") || p.CollapseID() == "" {
				t.Errorf("payload %v collapse %q", sw, p.CollapseID())
			}

			dev := e.wakeDevice(t, "1001", tc.params)
			inv := answer(t, dev, e.sw.TCP)
			if inv.CallID().Value() != sw["call_id"] {
				t.Errorf("INVITE Call-ID %q, push call_id %v", inv.CallID().Value(), sw["call_id"])
			}
			res := waitSIPp(t, "caller", caller)
			expectLines(t, "caller", res.Messages, "SIP/2.0 180", "SIP/2.0 200 OK")
			noMore(t, dev, time.Second)
			if n := len(e.apns.Requests()); n != 1 {
				t.Errorf("APNs got %d pushes, want 1", n)
			}
		})
	}
}

func push6(tok string) string {
	if len(tok) > 6 {
		return "…" + tok[len(tok)-6:]
	}
	return tok
}

// TestE2EWakeAndroid: the same for an Android device woken through FCM: a
// data-only, high-priority message whose TTL stays within the hold.
func TestE2EWakeAndroid(t *testing.T) {
	e := startWakeEnv(t, nil)
	e.sleepDevice(t, "1001", androidParms)
	caller := e.call(t, "1001", 20*time.Second)

	p := e.fcm.WaitRequests(t, 1, 5*time.Second)[0]
	m := p.Message
	if p.ProjectID != fcmProject || m.Token != androidToken || m.Android == nil || m.Android.Priority != "HIGH" {
		t.Fatalf("fcm push: project %q token %s android %+v", p.ProjectID, push6(m.Token), m.Android)
	}
	ttl, err := time.ParseDuration(m.Android.TTL)
	if err != nil || ttl <= 0 || ttl > testHold+time.Second {
		t.Errorf("android.ttl %q is not within the hold %v", m.Android.TTL, testHold)
	}
	if len(m.Notification) != 0 && string(m.Notification) != "null" {
		t.Errorf("push has a notification block (want data only): %s", m.Notification)
	}
	if m.Data["sipwake.event"] != "call" || m.Data["sipwake.aor"] != "sip:1001@pbx.test" || m.Data["sipwake.uuid"] == "" {
		t.Errorf("data %v", m.Data)
	}
	dev := e.wakeDevice(t, "1001", androidParms)
	inv := answer(t, dev, e.sw.TCP)
	if inv.CallID().Value() != m.Data["sipwake.call_id"] {
		t.Errorf("INVITE Call-ID %q, push %q", inv.CallID().Value(), m.Data["sipwake.call_id"])
	}
	waitSIPp(t, "caller", caller)
	noMore(t, dev, time.Second)
	if n := len(e.fcm.Requests()); n != 1 {
		t.Errorf("FCM got %d pushes, want 1", n)
	}
}

// TestE2EWakeNeverWoken: nobody registers; the caller gets 480 within the
// hold plus a second, after exactly one call push, and the device gets a
// missed-call push (an alert, never VoIP).
func TestE2EWakeNeverWoken(t *testing.T) {
	e := startWakeEnv(t, nil)
	e.sleepDevice(t, "1001", iosBoth)
	start := time.Now()
	caller := e.call(t, "1001", 20*time.Second)
	e.apns.WaitRequests(t, 1, 5*time.Second)
	// While it is held, the admin API lists it.
	var held struct {
		Calls []struct {
			CallID string `json:"call_id"`
			AOR    string `json:"aor"`
			Pushed int    `json:"pushed"`
		} `json:"calls"`
	}
	adminJSON(t, e.sw, "GET", "/v1/calls/held", "", &held)
	if len(held.Calls) != 1 || held.Calls[0].AOR != "sip:1001@pbx.test" || held.Calls[0].Pushed != 1 {
		t.Errorf("GET /v1/calls/held: %+v", held)
	}
	if err := caller.WaitMessage("SIP/2.0 480", testHold+5*time.Second); err != nil {
		t.Fatalf("no 480 for the caller: %v\n%s", err, caller.Messages())
	}
	if d := time.Since(start); d > testHold+time.Second+2*time.Second {
		// (2 s of slack: the caller's own registration and challenge.)
		t.Errorf("480 after %v, hold is %v", d, testHold)
	}
	caller.Stop()
	reqs := e.apns.WaitRequests(t, 2, 3*time.Second)
	if reqs[0].PushType() != "voip" || reqs[0].Sipwake()["event"] != "call" {
		t.Errorf("first push: %s %v", reqs[0].PushType(), reqs[0].Sipwake())
	}
	if reqs[1].PushType() != "alert" || reqs[1].Sipwake()["event"] != "call_missed" || reqs[1].Topic() != "com.example.phone" {
		t.Errorf("second push: type %s topic %s %v", reqs[1].PushType(), reqs[1].Topic(), reqs[1].Sipwake())
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(e.apns.Requests()); n != 2 {
		t.Errorf("APNs got %d pushes, want 2 (call, missed)", n)
	}
	adminJSON(t, e.sw, "GET", "/v1/calls/held", "", &held)
	if len(held.Calls) != 0 {
		t.Errorf("held calls after the 480: %+v", held)
	}

	// A test push through the admin API reaches the device as an alert.
	var verdict struct {
		Results []struct {
			OK    bool   `json:"ok"`
			Token string `json:"token"`
		} `json:"results"`
	}
	adminJSON(t, e.sw, "POST", "/v1/push/test", `{"aor":"sip:1001@pbx.test"}`, &verdict)
	if len(verdict.Results) != 1 || !verdict.Results[0].OK || strings.Contains(verdict.Results[0].Token, iosRemoteToken) {
		t.Errorf("POST /v1/push/test: %+v", verdict)
	}
	if reqs := e.apns.WaitRequests(t, 3, 3*time.Second); reqs[2].PushType() != "alert" || reqs[2].Token != iosRemoteToken {
		t.Errorf("test push: type %s token %s", reqs[2].PushType(), push6(reqs[2].Token))
	}
}

// adminJSON calls sipwake's admin API and decodes the JSON answer.
func adminJSON(t *testing.T, sw *running, method, path, body string, out any) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+sw.admin.Addr().String()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := http.Client{Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
}

// TestE2EWakeCallerCancel: the caller gives up before the device wakes:
// 487, a push that ends the ringing screen, and an iOS device registering
// inside the window gets the INVITE then the CANCEL, never a call that
// rings on.
func TestE2EWakeCallerCancel(t *testing.T) {
	e := startWakeEnv(t, nil)
	const both = iosBoth
	e.sleepDevice(t, "1001", both)
	port := pbxUser(t, e.kam, "1002")
	res, err := testpeers.RunSIPp(t, e2eCtx(t, 25*time.Second), testpeers.SIPpOptions{
		Scenario:  sippScenario(t, "uac_cancel_auth.xml"),
		Remote:    e.kam.UDPAddr,
		LocalPort: port,
		Auth:      [2]string{"1002", "pw1002"},
		Keys:      testpeers.CallKeys("1002", "1001", "pbx.test"),
		Pause:     500 * time.Millisecond,
		Timeout:   15 * time.Second,
	})
	sippMust(t, "caller cancels while the device wakes", res, err)
	expectLines(t, "caller", res.Messages, "SIP/2.0 180", "CANCEL sip:", "SIP/2.0 487")
	reqs := e.apns.WaitRequests(t, 2, 5*time.Second)
	if reqs[0].PushType() != "voip" || reqs[1].PushType() != "alert" || reqs[1].Sipwake()["event"] != "call_missed" {
		t.Errorf("pushes: %s %v, %s %v", reqs[0].PushType(), reqs[0].Sipwake(), reqs[1].PushType(), reqs[1].Sipwake())
	}

	dev := e.wakeDevice(t, "1001", both)
	inv := dev.ExpectRequest(5*time.Second, sip.INVITE)
	dev.Reply(e.sw.TCP, inv, 180, "Ringing", "Contact: <sip:dev@"+dev.Addr()+";transport=tcp>")
	cancel := dev.ExpectRequest(5*time.Second, sip.CANCEL)
	dev.Reply(e.sw.TCP, cancel, 200, "OK")
	dev.Reply(e.sw.TCP, inv, 487, "Request Terminated")
	dev.ExpectRequest(5*time.Second, sip.ACK)
	noMore(t, dev, time.Second)
}

// TestE2EWakePrune: APNs 410 and FCM UNREGISTERED remove the binding's
// push data and end the call at once; the next call sends no push.
func TestE2EWakePrune(t *testing.T) {
	for _, tc := range []struct {
		name, params string
		dead         func(e *wakeEnv)
		count        func(e *wakeEnv) int
	}{
		{"apns-410", iosParams, func(e *wakeEnv) {
			e.apns.ReplyToken(iosToken, pushtest.Reply{Status: 410, Reason: "Unregistered"})
		}, func(e *wakeEnv) int { return len(e.apns.Requests()) }},
		{"fcm-unregistered", androidParms, func(e *wakeEnv) {
			e.fcm.ReplyToken(androidToken, pushtest.FCMUnregistered)
		}, func(e *wakeEnv) int { return len(e.fcm.Requests()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startWakeEnv(t, nil)
			tc.dead(e)
			e.sleepDevice(t, "1001", tc.params)
			start := time.Now()
			caller := e.call(t, "1001", 15*time.Second)
			if err := caller.WaitMessage("SIP/2.0 480", 5*time.Second); err != nil {
				t.Fatalf("no prompt 480: %v\n%s", err, caller.Messages())
			}
			if d := time.Since(start); d >= testHold {
				t.Errorf("480 after %v: the call waited for the hold", d)
			}
			caller.Stop()
			deadline := time.Now().Add(5 * time.Second)
			for {
				bs := e.sw.bindings(t, "sip:1001@pbx.test")
				if len(bs) == 1 && bs[0].Push == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("push data not removed: %+v", bs)
				}
				time.Sleep(50 * time.Millisecond)
			}
			_, metrics := httpGet(t, "http://"+e.sw.ops.Addr().String()+"/metrics")
			provider, reason := "apns", "unregistered"
			if strings.HasPrefix(tc.name, "fcm") {
				provider = "fcm"
			}
			want := `sipwake_push_tokens_pruned_total{provider="` + provider + `",reason="` + reason + `"} 1`
			if !strings.Contains(metrics, want) || !strings.Contains(metrics, `sipwake_wake_invite_hold_duration_seconds_count{outcome="no_device"} 1`) {
				t.Errorf("metrics lack %s or the no_device hold outcome", want)
			}
			before := tc.count(e)
			again := e.call(t, "1001", 15*time.Second)
			if err := again.WaitMessage("SIP/2.0 480", 5*time.Second); err != nil {
				t.Fatalf("second call: no 480: %v", err)
			}
			again.Stop()
			if n := tc.count(e); n != before {
				t.Errorf("second call sent %d pushes, want none", n-before)
			}
		})
	}
}

// TestE2EWakeRetry: APNs answers 500, then 200: the push is retried and
// the device rings.
func TestE2EWakeRetry(t *testing.T) {
	e := startWakeEnv(t, nil)
	e.apns.ReplyNext(1, pushtest.Reply{Status: 500, Reason: "InternalServerError"})
	e.sleepDevice(t, "1001", iosParams)
	caller := e.call(t, "1001", 20*time.Second)
	reqs := e.apns.WaitRequests(t, 2, 5*time.Second)
	if reqs[0].Status != 500 || reqs[1].Status != 200 || reqs[0].Sipwake()["uuid"] != reqs[1].Sipwake()["uuid"] {
		t.Fatalf("attempts: %d then %d", reqs[0].Status, reqs[1].Status)
	}
	dev := e.wakeDevice(t, "1001", iosParams)
	answer(t, dev, e.sw.TCP)
	waitSIPp(t, "caller", caller)
}

// TestE2EWakeHangingProvider: APNs hangs; a call to an awake device on the
// same node is not delayed by it.
func TestE2EWakeHangingProvider(t *testing.T) {
	e := startWakeEnv(t, nil)
	e.apns.ReplyAll(pushtest.Reply{Hang: true})
	// 1003 sleeps (its push hangs); 1001 is awake, on UDP, without push.
	e.sleepDevice(t, "1003", iosParams)
	hung := e.call(t, "1003", 15*time.Second)
	e.apns.WaitRequests(t, 1, 5*time.Second)
	defer hung.Stop()

	dev := proxytest.NewUDP(t, "")
	cseq := 0
	if res := rawRegister(t, dev, e.sw.UDP, "1001", "pw1001", "|", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("awake device: register: %d", res.StatusCode)
	}
	start := time.Now()
	caller := e.call(t, "1001", 15*time.Second)
	inv := dev.ExpectRequest(5*time.Second, sip.INVITE)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("INVITE to the awake device took %v", d)
	}
	finishCall(t, dev, e.sw.UDP, inv)
	waitSIPp(t, "caller", caller)
}

// TestE2EWakeThreeDevices: one AOR with an awake device on TCP, an iOS
// and an Android device asleep. The awake one rings at once, both
// sleepers are pushed; the Android answers; the others get CANCEL with
// cause 200, and the iOS device, registering afterwards, gets the INVITE
// and at once its CANCEL: nothing rings on.
func TestE2EWakeThreeDevices(t *testing.T) {
	e := startWakeEnv(t, nil)
	e.sleepDevice(t, "1001", iosParams)
	e.sleepDevice(t, "1001", androidParms)
	awake := proxytest.DialTCP(t, "", e.sw.TCP)
	cseq := 0
	if res := rawRegister(t, awake, e.sw.TCP, "1001", "pw1001", "|", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("awake device: register: %d", res.StatusCode)
	}
	e.kam.WaitContacts(t, "1001", 3, e2eWait)

	start := time.Now()
	caller := e.call(t, "1001", 25*time.Second)
	inv := awake.ExpectRequest(5*time.Second, sip.INVITE)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the awake device rang after %v", d)
	}
	awake.Reply(e.sw.TCP, inv, 180, "Ringing", "Contact: <sip:awake@"+awake.Addr()+";transport=tcp>")
	e.apns.WaitRequests(t, 1, 5*time.Second)
	e.fcm.WaitRequests(t, 1, 5*time.Second)

	android := e.wakeDevice(t, "1001", androidParms)
	ainv := android.ExpectRequest(5*time.Second, sip.INVITE)
	acontact := "Contact: <sip:android@" + android.Addr() + ";transport=tcp>"
	android.Reply(e.sw.TCP, ainv, 180, "Ringing", acontact)
	time.Sleep(100 * time.Millisecond)
	android.Reply(e.sw.TCP, ainv, 200, "OK", acontact)
	android.ExpectRequest(5*time.Second, sip.ACK)
	// (SIPp's caller follows one early dialog only; with three it may
	// end the call its own way, which is not what is tested here.)
	defer caller.Stop()

	cancel := awake.ExpectRequest(5*time.Second, sip.CANCEL)
	if r := cancel.GetHeader("Reason"); r == nil || !strings.Contains(r.Value(), "cause=200") {
		t.Errorf("CANCEL to the awake device: Reason %v", r)
	}
	awake.Reply(e.sw.TCP, cancel, 200, "OK")
	awake.Reply(e.sw.TCP, inv, 487, "Request Terminated")
	awake.ExpectRequest(5*time.Second, sip.ACK)

	ios := e.wakeDevice(t, "1001", iosParams)
	late := ios.ExpectRequest(5*time.Second, sip.INVITE)
	ios.Reply(e.sw.TCP, late, 180, "Ringing", "Contact: <sip:ios@"+ios.Addr()+";transport=tcp>")
	lc := ios.ExpectRequest(5*time.Second, sip.CANCEL)
	if r := lc.GetHeader("Reason"); r == nil || !strings.Contains(r.Value(), "cause=200") {
		t.Errorf("CANCEL to the iOS device: Reason %v", r)
	}
	ios.Reply(e.sw.TCP, lc, 200, "OK")
	ios.Reply(e.sw.TCP, late, 487, "Request Terminated")
	ios.ExpectRequest(5*time.Second, sip.ACK)
	noMore(t, awake, 500*time.Millisecond)
	noMore(t, ios, 500*time.Millisecond)
	if n := len(e.apns.Requests()); n != 1 {
		t.Errorf("APNs got %d pushes, want 1", n)
	}
}

// TestE2EWakeAndroidCancel: an Android device still waking when the caller
// cancels gets a call_cancelled data push after the call push.
func TestE2EWakeAndroidCancel(t *testing.T) {
	e := startWakeEnv(t, nil)
	e.sleepDevice(t, "1001", androidParms)
	port := pbxUser(t, e.kam, "1002")
	res, err := testpeers.RunSIPp(t, e2eCtx(t, 25*time.Second), testpeers.SIPpOptions{
		Scenario:  sippScenario(t, "uac_cancel_auth.xml"),
		Remote:    e.kam.UDPAddr,
		LocalPort: port,
		Auth:      [2]string{"1002", "pw1002"},
		Keys:      testpeers.CallKeys("1002", "1001", "pbx.test"),
		Pause:     500 * time.Millisecond,
		Timeout:   15 * time.Second,
	})
	sippMust(t, "caller cancels while the device wakes", res, err)
	reqs := e.fcm.WaitRequests(t, 2, 5*time.Second)
	if reqs[0].Message.Data["sipwake.event"] != "call" || reqs[1].Message.Data["sipwake.event"] != "call_cancelled" ||
		reqs[0].Message.Data["sipwake.uuid"] != reqs[1].Message.Data["sipwake.uuid"] {
		t.Errorf("pushes: %v then %v", reqs[0].Message.Data, reqs[1].Message.Data)
	}
}

// TestE2EWakeAwakeDevice: a push-capable device whose TCP connection is
// still open gets the INVITE at once; ringing within
// wake.awake_push_delay stops its push. A second call it does not answer
// in time is pushed after the delay.
func TestE2EWakeAwakeDevice(t *testing.T) {
	e := startWakeEnv(t, func(c *Config) { c.Wake.AwakePushDelay = time.Second })
	dev := proxytest.DialTCP(t, "", e.sw.TCP)
	cseq := 0
	if res := rawRegister(t, dev, e.sw.TCP, "1001", "pw1001", iosParams+"|", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	caller := e.call(t, "1001", 20*time.Second)
	inv := dev.ExpectRequest(3*time.Second, sip.INVITE)
	time.Sleep(300 * time.Millisecond)
	if n := len(e.apns.Requests()); n != 0 {
		t.Errorf("%d pushes before the delay", n)
	}
	// It stays silent past the delay: now it is pushed, once.
	e.apns.WaitRequests(t, 1, 3*time.Second)
	finishCall(t, dev, e.sw.TCP, inv)
	waitSIPp(t, "caller", caller)
	if n := len(e.apns.Requests()); n != 1 {
		t.Errorf("%d pushes, want 1", n)
	}

	// Rings within the delay: no push at all.
	before := len(e.apns.Requests())
	caller = e.call(t, "1001", 20*time.Second)
	inv = dev.ExpectRequest(3*time.Second, sip.INVITE)
	finishCall(t, dev, e.sw.TCP, inv)
	waitSIPp(t, "caller", caller)
	if n := len(e.apns.Requests()) - before; n != 0 {
		t.Errorf("a device that rang at once was pushed %d times", n)
	}
}
