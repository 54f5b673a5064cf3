package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
	"github.com/sipwake/sipwake/store"
)

// sendMessage has PBX user 1002 send a text MESSAGE to user through the
// PBX and returns the sender's trace.
func (e *wakeEnv) sendMessage(t *testing.T, user, text string) testpeers.SIPpResult {
	t.Helper()
	keys := testpeers.CallKeys("1002", user, "pbx.test")
	keys["text"] = text
	res, err := testpeers.RunSIPp(t, e2eCtx(t, 20*time.Second), testpeers.SIPpOptions{
		Scenario: "message.xml",
		Remote:   e.kam.UDPAddr,
		Auth:     [2]string{"1002", "pw1002"},
		Keys:     keys,
		Timeout:  15 * time.Second,
	})
	return sippMust(t, "1002 sends a MESSAGE to "+user, res, err)
}

// pending lists the stored messages still waiting.
func (e *wakeEnv) pending(t *testing.T) []store.StoredMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := e.sw.store.ListMessages(ctx, store.MessageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// takeMessage waits for a MESSAGE at a device and answers it 200.
func takeMessage(t *testing.T, ua *proxytest.UA, addr string) *sip.Request {
	t.Helper()
	m := ua.ExpectRequest(10*time.Second, sip.MESSAGE)
	ua.Reply(addr, m, 200, "OK")
	return m
}

// TestE2EMessageStored: a MESSAGE to a sleeping iPhone is stored and
// answered 202; one alert push (never VoIP) says who wrote; the woken
// device registers and receives the message once, with its exact body
// and original Call-ID and CSeq; then nothing is pending.
func TestE2EMessageStored(t *testing.T) {
	e := startWakeEnv(t, func(c *Config) { c.Wake.MessagePreview = true })
	e.sleepDevice(t, "1001", iosBoth)
	const text = "Are you there? — ünïcode ✓"
	res := e.sendMessage(t, "1001", text)
	expectLines(t, "sender", res.Messages, "SIP/2.0 202")

	p := e.apns.WaitRequests(t, 1, 5*time.Second)[0]
	if p.PushType() != "alert" || p.Token != iosRemoteToken || p.Topic() != "com.example.phone" ||
		p.Sipwake()["event"] != "message" || p.Sipwake()["body"] != text || !strings.Contains(p.Sipwake()["from_uri"].(string), "1002") {
		t.Errorf("push: type %s topic %s token %s payload %v", p.PushType(), p.Topic(), push6(p.Token), p.Sipwake())
	}
	if n := len(e.pending(t)); n != 1 {
		t.Fatalf("%d messages pending, want 1", n)
	}
	var listed struct {
		Messages []struct {
			AOR     string `json:"aor"`
			Pending int    `json:"pending"`
		} `json:"messages"`
	}
	adminJSON(t, e.sw, "GET", "/v1/messages/pending", "", &listed)
	if len(listed.Messages) != 1 || listed.Messages[0].AOR != "sip:1001@pbx.test" || listed.Messages[0].Pending != 1 {
		t.Errorf("GET /v1/messages/pending: %+v", listed)
	}
	if _, raw := adminRaw(t, e.sw, "/v1/messages/pending"); strings.Contains(raw, "Are you there") {
		t.Errorf("the admin API shows a message body: %s", raw)
	}

	dev := e.wakeDevice(t, "1001", iosBoth)
	m := takeMessage(t, dev, e.sw.TCP)
	if string(m.Body()) != text+"\r\n" { // the sender's body ends with its CRLF
		t.Errorf("body %q, want %q", m.Body(), text+"\r\n")
	}
	if !strings.Contains(res.Messages, "Call-ID: "+m.CallID().Value()) || m.CSeq().MethodName != sip.MESSAGE {
		t.Errorf("delivered Call-ID %s / CSeq %s not the sender's", m.CallID().Value(), m.CSeq().Value())
	}
	noMore(t, dev, time.Second)
	if n := len(e.pending(t)); n != 0 {
		t.Errorf("%d messages pending after delivery", n)
	}
	if n := len(e.apns.Requests()); n != 1 {
		t.Errorf("APNs got %d pushes, want 1", n)
	}
	_, metrics := httpGet(t, "http://"+e.sw.ops.Addr().String()+"/metrics")
	if !strings.Contains(metrics, `sipwake_wake_message_deliveries_total{result="delivered"} 1`) {
		t.Errorf("metrics lack one delivered message")
	}
}

// TestE2EMessageTwoDevices: one device takes the MESSAGE at once, the
// other (asleep) gets it when it registers; after both, nothing pending.
func TestE2EMessageTwoDevices(t *testing.T) {
	e := startWakeEnv(t, nil)
	e.sleepDevice(t, "1001", androidParms)
	awake := proxytest.NewUDP(t, "")
	cseq := 0
	if res := rawRegister(t, awake, e.sw.UDP, "1001", "pw1001", "|", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("awake device: %d", res.StatusCode)
	}
	e.kam.WaitContacts(t, "1001", 2, e2eWait)

	done := make(chan testpeers.SIPpResult, 1)
	go func() { done <- e.sendMessage(t, "1001", "to both") }()
	takeMessage(t, awake, e.sw.UDP)
	res := <-done
	// (The PBX relays the first 2xx of its two branches: 200 or 202.)
	expectLines(t, "sender", res.Messages, "SIP/2.0 20")
	fp := e.fcm.WaitRequests(t, 1, 5*time.Second)[0]
	if fp.Message.Data["sipwake.event"] != "message" || fp.Message.Data["sipwake.body"] != "" {
		t.Errorf("push data %v (no preview by default)", fp.Message.Data)
	}
	if n := len(e.pending(t)); n != 1 {
		t.Fatalf("%d pending, want 1", n)
	}
	dev := e.wakeDevice(t, "1001", androidParms)
	if m := takeMessage(t, dev, e.sw.TCP); string(m.Body()) != "to both\r\n" {
		t.Errorf("body %q", m.Body())
	}
	noMore(t, awake, 500*time.Millisecond)
	waitNonePending(t, e)
}

func waitNonePending(t *testing.T, e *wakeEnv) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.pending(t)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still pending: %+v", e.pending(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pbxMessage sends a MESSAGE from a raw trusted "PBX" UA straight to a
// sipwake contact, so the test controls Call-ID, CSeq and branch.
func pbxMessage(t *testing.T, pbx *proxytest.UA, sw, ruri, callID string, cseq int, branch, ctype, body string) *sip.Response {
	t.Helper()
	pbx.Send(sw, "MESSAGE "+ruri+" SIP/2.0\n"+
		"Via: SIP/2.0/UDP "+pbx.Addr()+";branch=z9hG4bK-"+branch+";rport\n"+
		"Max-Forwards: 70\nFrom: <sip:1002@pbx.test>;tag=snd\nTo: <sip:1001@pbx.test>\n"+
		"Call-ID: "+callID+"\nCSeq: "+strconv.Itoa(cseq)+" MESSAGE\n"+
		"Content-Type: "+ctype+"\nContent-Length: "+strconv.Itoa(len(body))+"\n\n"+body)
	return waitFinal(t, pbx)
}

// TestE2EMessageDedupeAndPassThrough: the same MESSAGE twice (a PBX retry:
// same Call-ID, From tag and CSeq, new branch) is stored once and
// delivered once; is-composing and IMDN are not stored nor pushed; an
// expired message is not delivered.
func TestE2EMessageDedupeAndPassThrough(t *testing.T) {
	e := startWakeEnv(t, func(c *Config) { c.Wake.MessageTTL = 3 * time.Second })
	e.sleepDevice(t, "1001", androidParms)
	contacts := e.kam.Contacts(t, "1001")
	if len(contacts) != 1 {
		t.Fatalf("PBX contacts %v", contacts)
	}
	ruri := strings.Trim(strings.SplitN(strings.Fields(contacts[0])[0], ";", 2)[0], "<>")
	pbx := proxytest.NewUDP(t, pbxIP)

	for i, ct := range []string{"application/im-iscomposing+xml", "message/imdn+xml"} {
		res := pbxMessage(t, pbx, e.sw.UDP, ruri, "pass-"+strconv.Itoa(i), 1, "p"+strconv.Itoa(i), ct, "<x/>")
		if res.StatusCode == 202 || res.StatusCode < 300 {
			t.Errorf("%s to a sleeping device: %d, want a failure (not stored)", ct, res.StatusCode)
		}
	}
	if n := len(e.fcm.Requests()); n != 0 || len(e.pending(t)) != 0 {
		t.Errorf("pass-through MESSAGEs: %d pushes, %d stored", n, len(e.pending(t)))
	}

	for _, branch := range []string{"a1", "a2"} {
		if res := pbxMessage(t, pbx, e.sw.UDP, ruri, "dup-1", 7, branch, "text/plain", "once"); res.StatusCode != 202 {
			t.Fatalf("MESSAGE (branch %s): %d", branch, res.StatusCode)
		}
	}
	if n := len(e.pending(t)); n != 1 {
		t.Fatalf("%d stored, want 1", n)
	}
	e.fcm.WaitRequests(t, 1, 5*time.Second)
	dev := e.wakeDevice(t, "1001", androidParms)
	m := takeMessage(t, dev, e.sw.TCP)
	if m.CallID().Value() != "dup-1" || m.CSeq().SeqNo != 7 || string(m.Body()) != "once" {
		t.Errorf("delivered %s %s %q", m.CallID().Value(), m.CSeq().Value(), m.Body())
	}
	noMore(t, dev, time.Second)
	if n := len(e.fcm.Requests()); n != 1 {
		t.Errorf("%d pushes for one message sent twice", n)
	}
	dev.Close()

	// Expired before the device comes back: not delivered.
	if res := pbxMessage(t, pbx, e.sw.UDP, ruri, "late-1", 1, "l1", "text/plain", "too late"); res.StatusCode != 202 {
		t.Fatalf("MESSAGE: %d", res.StatusCode)
	}
	time.Sleep(3500 * time.Millisecond)
	dev = e.wakeDevice(t, "1001", androidParms)
	noMore(t, dev, 1500*time.Millisecond)
}

// adminRaw GETs an admin API path and returns the status and body.
func adminRaw(t *testing.T, sw *running, path string) (int, string) {
	t.Helper()
	return httpGet(t, "http://"+sw.admin.Addr().String()+path)
}

// TestE2EMessageDeviceDropsMidDelivery: the woken device receives the
// stored MESSAGE and drops its connection before answering; the message
// stays pending, and when the device registers again it gets it again,
// with the same Call-ID and CSeq, and answers; then nothing is pending.
func TestE2EMessageDeviceDropsMidDelivery(t *testing.T) {
	e := startWakeEnv(t, nil)
	e.sleepDevice(t, "1001", androidParms)
	expectLines(t, "sender", e.sendMessage(t, "1001", "again?").Messages, "SIP/2.0 202")

	dev := e.wakeDevice(t, "1001", androidParms)
	first := dev.ExpectRequest(10*time.Second, sip.MESSAGE)
	dev.Close() // gone before its 200
	time.Sleep(300 * time.Millisecond)
	if n := len(e.pending(t)); n != 1 {
		t.Fatalf("%d pending after an unanswered delivery, want 1", n)
	}
	dev = e.wakeDevice(t, "1001", androidParms)
	again := takeMessage(t, dev, e.sw.TCP)
	if again.CallID().Value() != first.CallID().Value() || again.CSeq().SeqNo != first.CSeq().SeqNo {
		t.Errorf("re-delivery %s/%d, first %s/%d", again.CallID().Value(), again.CSeq().SeqNo, first.CallID().Value(), first.CSeq().SeqNo)
	}
	waitNonePending(t, e)
	noMore(t, dev, 500*time.Millisecond)
}
