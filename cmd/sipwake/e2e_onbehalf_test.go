package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
	"github.com/sipwake/sipwake/store/storetest"
)

// pbxExpiry is the longest registration the test PBX grants in the
// on-behalf tests: far shorter than what the devices ask for.
const pbxExpiry = 60 * time.Second

// deviceAsk is what the sleeping devices ask for: a day.
const deviceAsk = 86400

// writeKeyFile writes a fresh 32-byte credentials key (hex) and returns
// its path.
func writeKeyFile(t testing.TB) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "credentials.key")
	if err := os.WriteFile(p, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startOnBehalf starts a PBX granting pbxExpiry at most and sipwake in
// on-behalf mode with auth ("credentials" or "trusted").
func startOnBehalf(t *testing.T, auth string, kopts testpeers.KamailioOptions, mutate func(*Config)) *wakeEnv {
	t.Helper()
	kopts.MaxExpires = pbxExpiry
	if auth == registrar.AuthTrusted {
		// sipwake's SIP listeners are on 127.0.0.1.
		kopts.TrustedSources = []string{"127.0.0.1"}
	}
	return startWakeEnvWith(t, kopts, func(c *Config) {
		c.Log.Level = "info"
		c.Registrar.Mode = "on_behalf"
		c.Registrar.OnBehalf.Auth = auth
		c.Registrar.Credentials.KeyFile = writeKeyFile(t)
		if mutate != nil {
			mutate(c)
		}
	})
}

// keyring opens the daemon's configured credentials keys.
func (e *wakeEnv) keyring(t testing.TB) *registrar.Keyring {
	t.Helper()
	c := e.sw.cfg.Registrar.Credentials
	k, err := registrar.LoadKeyring(c.KeyFile, c.OldKeyFiles)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// provision stores user's PBX password as sealed HA1 straight into the
// daemon's store (the admin API does the same; it is tested on its own).
func (e *wakeEnv) provision(t testing.TB, user, password string) {
	t.Helper()
	aor := "sip:" + user + "@pbx.test"
	var c registrar.Credentials
	c.Username = user
	for _, alg := range []string{registrar.AlgMD5, registrar.AlgSHA256} {
		h, err := registrar.HA1(alg, user, "pbx.test", password)
		if err != nil {
			t.Fatal(err)
		}
		c.HA1 = append(c.HA1, registrar.Credential{Realm: "pbx.test", Algorithm: alg, HA1: h})
	}
	a, err := e.keyring(t).Seal(aor, c, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.sw.store.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
}

// sleepFor registers user from a new TCP connection asking for a day,
// checks that sipwake grants the day although the PBX granted a minute,
// and drops the connection (the app is suspended).
func (e *wakeEnv) sleepFor(t *testing.T, user, password, params string) {
	t.Helper()
	ua := proxytest.DialTCP(t, "", e.sw.TCP)
	defer ua.Close()
	cseq := 0
	res := rawRegisterFor(t, ua, e.sw.TCP, user, password, params+"|", "", deviceAsk, &cseq)
	if res.StatusCode != 200 {
		t.Fatalf("%s: register: %d %s", user, res.StatusCode, res.Reason)
	}
	var c *sip.ContactHeader
	for _, h := range res.GetHeaders("Contact") {
		if ch, ok := h.(*sip.ContactHeader); ok && ch.Address.Host+":"+strconv.Itoa(ch.Address.Port) == ua.Addr() {
			c = ch
		}
	}
	if c == nil {
		t.Fatalf("%s: the 200 does not list the device's contact", user)
	}
	if v, _ := c.Params.Get("expires"); v != strconv.Itoa(deviceAsk) {
		t.Fatalf("%s: device granted expires=%s, want %d (on-behalf keeps the device's ask)", user, v, deviceAsk)
	}
}

// registration returns the on-behalf record of a device of user (the
// only one), failing when there is none.
func (e *wakeEnv) registration(t testing.TB, user string) (store.Registration, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	regs, err := e.sw.store.ListRegistrations(ctx, store.RegistrationFilter{AOR: "sip:" + user + "@pbx.test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(regs) == 0 {
		return store.Registration{}, false
	}
	return regs[0], true
}

// waitState waits until user's record is in state, bounded by d.
func (e *wakeEnv) waitState(t *testing.T, user, state string, d time.Duration) store.Registration {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		reg, ok := e.registration(t, user)
		if ok && reg.State == state {
			return reg
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: registration %+v (found %v), want state %s within %s", user, reg, ok, state, d)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ownRefreshes returns the REGISTERs the PBX saved that sipwake sent on
// its own behalf (its Call-IDs start "sw-"), for user when not empty.
func ownRefreshes(t testing.TB, kam *testpeers.Kamailio, user string) []testpeers.SavedRegister {
	t.Helper()
	all, err := kam.SavedRegisters()
	if err != nil {
		t.Fatal(err)
	}
	var out []testpeers.SavedRegister
	for _, r := range all {
		if strings.HasPrefix(r.CallID, "sw-") && (user == "" || strings.Contains(r.AOR, ":"+user+"@")) {
			out = append(out, r)
		}
	}
	return out
}

// pbxHolds reports whether the PBX holds exactly one contact for user and
// it is a sipwake contact.
func pbxHolds(kam *testpeers.Kamailio, t testing.TB, user, swAddr string) (bool, string) {
	cs := kam.ContactDetails(t, user)
	if len(cs) != 1 {
		return false, fmt.Sprintf("%d contacts: %+v", len(cs), cs)
	}
	if !strings.Contains(cs[0].URI, swAddr) {
		return false, "contact " + cs[0].URI + " is not at sipwake " + swAddr
	}
	return true, cs[0].Expires
}

// onBehalfDuration is how long the keep-alive test watches the PBX: five
// minutes (SIPWAKE_E2E_ONBEHALF_DURATION shortens it when iterating).
func onBehalfDuration(t *testing.T) time.Duration {
	if v := os.Getenv("SIPWAKE_E2E_ONBEHALF_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SIPWAKE_E2E_ONBEHALF_DURATION: %v", err)
		}
		return d
	}
	return 5 * time.Minute
}

// TestE2EOnBehalfKeepsRegistration: the PBX grants 60 s at most; a device
// registers through sipwake asking for a day and goes to sleep. For five
// minutes the PBX's location always holds sipwake's contact for it
// (checked every 3 s over kamcmd), with sipwake's own REGISTERs on one
// Call-ID with growing CSeqs; then a call wakes the device. Once with
// stored credentials, once with a PBX that trusts sipwake. Both run side
// by side, watched by one loop.
func TestE2EOnBehalfKeepsRegistration(t *testing.T) {
	envs := map[string]*wakeEnv{}
	for _, auth := range []string{registrar.AuthCredentials, registrar.AuthTrusted} {
		envs[auth] = startOnBehalf(t, auth, testpeers.KamailioOptions{}, nil)
	}
	envs[registrar.AuthCredentials].provision(t, "1001", "pw1001")
	for _, e := range envs {
		e.sleepFor(t, "1001", "pw1001", iosParams)
	}
	watch := onBehalfDuration(t)
	start := time.Now()
	checks := 0
	for time.Since(start) < watch {
		for auth, e := range envs {
			ok, detail := pbxHolds(e.kam, t, "1001", e.sw.UDP)
			if !ok {
				t.Fatalf("%s: after %s the PBX lost the device: %s", auth, time.Since(start).Round(time.Second), detail)
			}
		}
		checks++
		time.Sleep(3 * time.Second)
	}
	for auth, e := range envs {
		refreshes := ownRefreshes(t, e.kam, "1001")
		// One every 40 s or so: at least one per 60 s watched.
		if min := int(watch / pbxExpiry); len(refreshes) < min {
			t.Errorf("%s: %d on-behalf REGISTERs saved in %s, want at least %d", auth, len(refreshes), watch, min)
		}
		for _, r := range refreshes[1:] {
			if r.CallID != refreshes[0].CallID {
				t.Errorf("%s: on-behalf REGISTERs changed Call-ID: %s then %s", auth, refreshes[0].CallID, r.CallID)
			}
		}
		reg, _ := e.registration(t, "1001")
		if reg.State != store.RegActive || !reg.OnBehalf || int(reg.CSeq) < len(refreshes) {
			t.Errorf("%s: record %+v after %d refreshes", auth, reg, len(refreshes))
		}
		t.Logf("%s: %d PBX checks passed, %d on-behalf REGISTERs, CSeq %d", auth, checks, len(refreshes), reg.CSeq)
	}
	// The call at the end wakes the device.
	for auth, e := range envs {
		caller := e.call(t, "1001", 20*time.Second)
		p := e.apns.WaitRequests(t, 1, 5*time.Second)[0]
		if p.PushType() != "voip" || p.Sipwake()["event"] != "call" {
			t.Fatalf("%s: push %q %v", auth, p.PushType(), p.Sipwake())
		}
		dev := e.wakeDevice(t, "1001", iosParams)
		answer(t, dev, e.sw.TCP)
		res := waitSIPp(t, "caller", caller)
		expectLines(t, auth+" caller", res.Messages, "SIP/2.0 180", "SIP/2.0 200 OK")
		dev.Close()
	}
}

// TestE2EOnBehalfPasswordChanged: the account's password changes at the
// PBX. After three refused refreshes sipwake stops (no more REGISTERs),
// marks the registration needs_login, sends the device one alert push
// and wipes the stored HA1 (configured). The operator stores the new
// password and the device registers with it: the refreshes resume.
func TestE2EOnBehalfPasswordChanged(t *testing.T) {
	e := startOnBehalf(t, registrar.AuthCredentials, testpeers.KamailioOptions{}, func(c *Config) {
		c.Registrar.OnBehalf.WipeOnAuthFailure = true
	})
	e.provision(t, "1001", "pw1001")
	e.sleepFor(t, "1001", "pw1001", iosBoth)
	e.kam.SetPassword(t, "1001", "changed1001")

	reg := e.waitState(t, "1001", store.RegNeedsLogin, 150*time.Second)
	if reg.AuthFailures != 3 {
		t.Errorf("needs_login after %d refusals, want 3", reg.AuthFailures)
	}
	stopped := len(ownRefreshes(t, e.kam, "1001"))
	alerts := func() (n int) {
		for _, p := range e.apns.Requests() {
			if p.Sipwake()["event"] == "login_required" {
				if p.PushType() != "alert" {
					t.Errorf("login push is %q, want alert", p.PushType())
				}
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	for alerts() == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.sw.store.Account(ctx, "sip:1001@pbx.test"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("stored HA1 after needs_login: %v, want wiped", err)
	}
	_, metrics := httpGet(t, "http://"+e.sw.ops.Addr().String()+"/metrics")
	for _, want := range []string{`sipwake_registrar_upstream_registrations{state="needs_login"} 1`, `sipwake_registrar_upstream_refreshes_total{result="auth_failed"} 3`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Stopped: nothing more goes to the PBX, no second alert.
	time.Sleep(15 * time.Second)
	if n := len(ownRefreshes(t, e.kam, "1001")); n != stopped {
		t.Errorf("%d on-behalf REGISTERs after needs_login", n-stopped)
	}
	if n := alerts(); n != 1 {
		t.Errorf("%d login_required pushes, want 1", n)
	}

	// The new password, then the app's own login.
	e.provision(t, "1001", "changed1001")
	before := len(ownRefreshes(t, e.kam, "1001"))
	e.sleepFor(t, "1001", "changed1001", iosBoth)
	e.waitState(t, "1001", store.RegActive, 5*time.Second)
	deadline = time.Now().Add(pbxExpiry)
	for len(ownRefreshes(t, e.kam, "1001")) == before {
		if time.Now().After(deadline) {
			t.Fatal("no on-behalf refresh after the device logged in again")
		}
		time.Sleep(500 * time.Millisecond)
	}
	if ok, detail := pbxHolds(e.kam, t, "1001", e.sw.UDP); !ok {
		t.Fatal(detail)
	}
	if reg, _ := e.registration(t, "1001"); reg.State != store.RegActive || reg.AuthFailures != 0 {
		t.Errorf("after resuming: %+v", reg)
	}
}

// TestE2EOnBehalfCleanup: a device de-REGISTER removes the PBX contact at
// once; a device silent for registrar.inactivity_timeout is de-registered
// at the PBX by sipwake (authenticated), forgotten, and its stored HA1
// wiped (configured).
func TestE2EOnBehalfCleanup(t *testing.T) {
	const inactivity = 30 * time.Second
	e := startOnBehalf(t, registrar.AuthCredentials, testpeers.KamailioOptions{}, func(c *Config) {
		c.Registrar.InactivityTimeout = inactivity
		c.Registrar.OnBehalf.WipeOnInactivity = true
	})
	e.provision(t, "1001", "pw1001")
	e.provision(t, "1002", "pw1002")

	// De-REGISTER.
	ua := proxytest.DialTCP(t, "", e.sw.TCP)
	cseq := 0
	if res := rawRegisterFor(t, ua, e.sw.TCP, "1001", "pw1001", androidParms+"|", "", deviceAsk, &cseq); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	e.kam.WaitContacts(t, "1001", 1, e2eWait)
	if _, ok := e.registration(t, "1001"); !ok {
		t.Fatal("no on-behalf record after the REGISTER")
	}
	if res := rawRegisterFor(t, ua, e.sw.TCP, "1001", "pw1001", androidParms+"|", "", 0, &cseq); res.StatusCode != 200 {
		t.Fatalf("de-register: %d", res.StatusCode)
	}
	if n := len(e.kam.ContactDetails(t, "1001")); n != 0 {
		t.Errorf("the PBX keeps %d contacts after the de-REGISTER", n)
	}
	if reg, ok := e.registration(t, "1001"); ok {
		t.Errorf("on-behalf record left after the de-REGISTER: %+v", reg)
	}
	ua.Close()

	// Inactivity.
	e.sleepFor(t, "1002", "pw1002", iosParams)
	registered := time.Now()
	e.kam.WaitContacts(t, "1002", 1, e2eWait)
	deadline := registered.Add(inactivity + 10*time.Second)
	for len(e.kam.ContactDetails(t, "1002")) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the PBX still holds 1002 %s after it went silent", time.Since(registered).Round(time.Second))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if d := time.Since(registered); d < inactivity {
		t.Errorf("de-registered after %s, before the inactivity timeout", d)
	}
	time.Sleep(500 * time.Millisecond)
	if bs := e.sw.bindings(t, "sip:1002@pbx.test"); len(bs) != 0 {
		t.Errorf("binding left after inactivity: %+v", bs)
	}
	if reg, ok := e.registration(t, "1002"); ok {
		t.Errorf("record left after inactivity: %+v", reg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.sw.store.Account(ctx, "sip:1002@pbx.test"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("stored HA1 after inactivity: %v, want wiped", err)
	}
	// The de-REGISTER was sipwake's own, authenticated (the PBX removed
	// the contact only on a valid one).
	own := ownRefreshes(t, e.kam, "1002")
	if len(own) == 0 || !strings.Contains(own[len(own)-1].Contact, "expires=0") {
		t.Errorf("the PBX saved no de-REGISTER of sipwake's own for 1002: %+v", own)
	}
}

// TestE2EOnBehalfPerAOR: with per-AOR upstream contacts the PBX holds one
// contact for three devices, and a call reaches all three.
func TestE2EOnBehalfPerAOR(t *testing.T) {
	e := startOnBehalf(t, registrar.AuthTrusted, testpeers.KamailioOptions{}, func(c *Config) {
		c.Registrar.UpstreamContacts = "per_aor"
	})
	devices := []string{iosParams, androidParms, legacyParams}
	for _, p := range devices[:2] {
		e.sleepFor(t, "1001", "pw1001", p)
	}
	// The third registers twice over its connection: the refresh that
	// changes nothing is answered by sipwake, the PBX never sees it.
	ua := proxytest.DialTCP(t, "", e.sw.TCP)
	cseq := 0
	if res := rawRegisterFor(t, ua, e.sw.TCP, "1001", "pw1001", legacyParams+"|", "", deviceAsk, &cseq); res.StatusCode != 200 {
		t.Fatalf("third device: %d", res.StatusCode)
	}
	seen, _ := e.kam.SavedRegisters()
	res := rawRegisterFor(t, ua, e.sw.TCP, "1001", "pw1001", legacyParams+"|", "", deviceAsk, &cseq)
	exp := ""
	if c, ok := res.GetHeader("Contact").(*sip.ContactHeader); ok {
		exp, _ = c.Params.Get("expires")
	}
	if res.StatusCode != 200 || exp != strconv.Itoa(deviceAsk) {
		t.Fatalf("unchanged refresh: %d %v", res.StatusCode, res.GetHeader("Contact"))
	}
	if now, _ := e.kam.SavedRegisters(); len(now) != len(seen) {
		t.Errorf("the unchanged refresh reached the PBX (%d REGISTERs saved, was %d)", len(now), len(seen))
	}
	if !strings.Contains(e.sw.logs.String(), "binding refreshed locally") {
		t.Error("no local refresh logged")
	}
	ua.Close()
	cs := e.kam.WaitContacts(t, "1001", 1, e2eWait)
	if bs := e.sw.bindings(t, "sip:1001@pbx.test"); len(bs) != 3 {
		t.Fatalf("%d bindings, want 3", len(bs))
	}
	if strings.Contains(cs[0].URI, "pn-") || cs[0].Instance != "" {
		t.Errorf("shared contact %+v carries device details", cs[0])
	}

	caller := e.call(t, "1001", 25*time.Second)
	defer caller.Stop()
	e.apns.WaitRequests(t, 2, 5*time.Second)
	e.fcm.WaitRequests(t, 1, 5*time.Second)
	var uas []*proxytest.UA
	var invs []*sip.Request
	for _, p := range devices {
		ua := e.wakeDevice(t, "1001", p)
		inv := ua.ExpectRequest(5*time.Second, sip.INVITE)
		ua.Reply(e.sw.TCP, inv, 180, "Ringing", "Contact: <sip:dev@"+ua.Addr()+";transport=tcp>")
		uas, invs = append(uas, ua), append(invs, inv)
	}
	// One answers; the other two are cancelled.
	contact := "Contact: <sip:dev@" + uas[1].Addr() + ";transport=tcp>"
	uas[1].Reply(e.sw.TCP, invs[1], 200, "OK", contact)
	uas[1].ExpectRequest(5*time.Second, sip.ACK)
	for _, i := range []int{0, 2} {
		c := uas[i].ExpectRequest(5*time.Second, sip.CANCEL)
		uas[i].Reply(e.sw.TCP, c, 200, "OK")
		uas[i].Reply(e.sw.TCP, invs[i], 487, "Request Terminated")
		uas[i].ExpectRequest(5*time.Second, sip.ACK)
	}
	// Still one contact at the PBX, whatever the devices did.
	if n := len(e.kam.ContactDetails(t, "1001")); n != 1 {
		t.Errorf("the PBX holds %d contacts, want 1", n)
	}
}

// TestE2EOnBehalfThousand: 1,000 on-behalf accounts with a 60 s PBX
// expiry. Over two minutes of steady state no account lapses at the PBX
// (checked every 5 s) and the refreshes are spread: no second carries
// more than twice the average rate.
func TestE2EOnBehalfThousand(t *testing.T) {
	const n = 1000
	users := map[string]string{"1002": "pw1002"}
	for i := range n {
		u := strconv.Itoa(20000 + i)
		users[u] = "pw" + u
	}
	e := startOnBehalf(t, registrar.AuthCredentials, testpeers.KamailioOptions{Users: users, Quiet: true, Children: 4, ShmMB: 128}, func(c *Config) {
		c.Log.Level = "warn"
	})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	regStart := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ua := proxytest.NewUDP(t, "127.0.0.1")
			defer ua.Close()
			for i := range next {
				u := strconv.Itoa(20000 + i)
				e.provision(t, u, "pw"+u)
				tok := fmt.Sprintf("fcm-token-%06d-abcdefghijklmnopqrstuvwxyz0123456789", i)
				params := ";pn-provider=fcm;pn-prid=" + tok + ";pn-param=" + fcmProject + "|;+sip.instance=\"<urn:uuid:00000000-0000-4000-8000-" + fmt.Sprintf("%012d", i) + ">\""
				cseq := 0
				if res := rawRegisterFor(t, ua, e.sw.UDP, u, "pw"+u, params, "", deviceAsk, &cseq); res.StatusCode != 200 {
					errs <- fmt.Errorf("%s: register %d", u, res.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d devices registered in %s", n, time.Since(regStart).Round(time.Millisecond))

	if held := pbxStat(t, e.kam, "usrloc:location_users"); held != n {
		t.Fatalf("the PBX holds %d of %d accounts after they registered", held, n)
	}
	// Steady state after one refresh period; then two minutes watched.
	time.Sleep(pbxExpiry)
	from := time.Now()
	window := 2 * time.Minute
	worst := n
	for time.Since(from) < window {
		// (ul.dump of 1,000 contacts is too big for kamcmd: the location
		// table's own counters, which drop as soon as a contact lapses.)
		held := pbxStat(t, e.kam, "usrloc:location_users")
		if c := pbxStat(t, e.kam, "usrloc:location_contacts"); c != held {
			t.Errorf("%d contacts for %d accounts", c, held)
		}
		if held < worst {
			worst = held
		}
		if held != n {
			t.Errorf("after %s the PBX holds %d of %d accounts", time.Since(from).Round(time.Second), held, n)
		}
		time.Sleep(5 * time.Second)
	}
	to := time.Now()
	perSecond := map[int64]int{}
	total := 0
	for _, r := range ownRefreshes(t, e.kam, "") {
		if r.Unix >= from.Unix() && r.Unix < to.Unix() {
			perSecond[r.Unix]++
			total++
		}
	}
	secs := to.Unix() - from.Unix()
	avg := float64(total) / float64(secs)
	peak := 0
	for _, c := range perSecond {
		peak = max(peak, c)
	}
	t.Logf("%d on-behalf REGISTERs in %d s: %.1f/s average, %d in the busiest second; fewest accounts held %d/%d", total, secs, avg, peak, worst, n)
	if want := float64(n) / (pbxExpiry.Seconds() * 2 / 3) * 0.8; avg < want {
		t.Errorf("average %.1f refreshes/s, want about %.0f", avg, want/0.8)
	}
	if float64(peak) > 2*avg {
		t.Errorf("busiest second carried %d refreshes, more than twice the average %.1f", peak, avg)
	}
}

// storeDump returns everything the store holds as bytes an attacker with
// the store would read: the bbolt file, or every Redis value in plain
// form (redis-cli, values as stored).
func storeDump(t *testing.T, cfg *Config) []byte {
	t.Helper()
	if cfg.Store.Driver != "redis" {
		b, err := os.ReadFile(cfg.Store.Embedded.Path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	host, port, _ := strings.Cut(cfg.Store.Redis.Addresses[0], ":")
	cli := func(args ...string) string {
		out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port, "--raw"}, args...)...).Output()
		if err != nil {
			t.Fatalf("redis-cli %v: %v", args, err)
		}
		return string(out)
	}
	var b strings.Builder
	for _, k := range strings.Fields(cli("--scan")) {
		b.WriteString(k + "\n")
		switch strings.TrimSpace(cli("TYPE", k)) {
		case "string":
			b.WriteString(cli("GET", k))
		case "hash":
			b.WriteString(cli("HGETALL", k))
		case "zset":
			b.WriteString(cli("ZRANGE", k, "0", "-1", "WITHSCORES"))
		case "set":
			b.WriteString(cli("SMEMBERS", k))
		case "list":
			b.WriteString(cli("LRANGE", k, "0", "-1"))
		}
	}
	return []byte(b.String())
}

// TestE2EOnBehalfCredentialsAtRest: a password given to the admin API is
// stored as sealed HA1 only: neither the password nor either HA1 (hex or
// raw) is readable in a dump of the bbolt file or of Redis. A sealed
// record moved to another AOR does not decrypt. With the embedded store,
// a key rotation (new key, old key kept for reading, rekey, old key
// dropped) keeps the account working.
func TestE2EOnBehalfCredentialsAtRest(t *testing.T) {
	for _, driver := range []string{"embedded", "redis"} {
		t.Run(driver, func(t *testing.T) {
			var redisAddr string
			if driver == "redis" {
				redisAddr = storetest.StartRedis(t)
			}
			e := startOnBehalf(t, registrar.AuthCredentials, testpeers.KamailioOptions{}, func(c *Config) {
				if redisAddr != "" {
					c.Store.Driver = "redis"
					c.Store.Redis.Addresses = []string{redisAddr}
				}
			})
			const password = "pw1001"
			var acct map[string]any
			adminJSON(t, e.sw, "PUT", "/v1/accounts/sip:1001@pbx.test", `{"password":"`+password+`"}`, &acct)
			dump := storeDump(t, e.sw.cfg)
			if !bytes.Contains(dump, []byte("sip:1001@pbx.test")) {
				t.Fatal("the dump does not hold the account at all: wrong place looked at")
			}
			for _, alg := range []string{registrar.AlgMD5, registrar.AlgSHA256} {
				h, _ := registrar.HA1(alg, "1001", "pbx.test", password)
				raw, _ := hex.DecodeString(h)
				if bytes.Contains(dump, []byte(h)) || bytes.Contains(bytes.ToLower(dump), []byte(h)) || bytes.Contains(dump, raw) {
					t.Errorf("%s HA1 readable in the %s dump", alg, driver)
				}
			}
			if bytes.Contains(dump, []byte(`"`+password+`"`)) || bytes.Contains(dump, []byte(":"+password)) {
				t.Errorf("password readable in the %s dump", driver)
			}

			// Moved to another AOR: it does not open there.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			a, err := e.sw.store.Account(ctx, "sip:1001@pbx.test")
			if err != nil {
				t.Fatal(err)
			}
			moved := a
			moved.AOR = "sip:1003@pbx.test"
			if err := e.sw.store.PutAccount(ctx, moved); err != nil {
				t.Fatal(err)
			}
			if _, err := e.keyring(t).Open(moved); !errors.Is(err, registrar.ErrUnsealable) {
				t.Fatalf("moved record opened: %v", err)
			}
			e.sleepFor(t, "1003", "pw1003", iosParams)
			deadline := time.Now().Add(pbxExpiry)
			for !strings.Contains(e.sw.logs.String(), `"msg":"credentials unusable","aor":"sip:1003@pbx.test"`) {
				if time.Now().After(deadline) {
					t.Fatal("the moved record was not refused by the daemon")
				}
				time.Sleep(250 * time.Millisecond)
			}
			if driver != "embedded" {
				return
			}

			// Key rotation.
			if err := e.sw.store.DeleteAccount(ctx, "sip:1003@pbx.test"); err != nil {
				t.Fatal(err)
			}
			adminJSON(t, e.sw, "PUT", "/v1/accounts/sip:1002@pbx.test", `{"password":"pw1002"}`, &acct)
			oldKey := e.sw.cfg.Registrar.Credentials.KeyFile
			newKey := writeKeyFile(t)
			e.sw.Stop(t)
			cfg := *e.sw.cfg
			cfg.Registrar.Credentials.KeyFile, cfg.Registrar.Credentials.OldKeyFiles = newKey, []string{oldKey}
			e.sw = startDaemon(t, &cfg)
			var rk struct{ Resealed int }
			adminJSON(t, e.sw, "POST", "/v1/accounts/rekey", "", &rk)
			if rk.Resealed != 2 {
				t.Fatalf("rekey resealed %d accounts, want 2", rk.Resealed)
			}
			e.sw.Stop(t)
			cfg2 := cfg
			cfg2.Registrar.Credentials.OldKeyFiles = nil
			e.sw = startDaemon(t, &cfg2)
			k, err := registrar.ReadKeyFile(newKey)
			if err != nil {
				t.Fatal(err)
			}
			for _, aor := range []string{"sip:1001@pbx.test", "sip:1002@pbx.test"} {
				a, err := e.sw.store.Account(ctx, aor)
				if err != nil || a.KeyID != registrar.KeyID(k) {
					t.Fatalf("%s after rekey: key %s %v, want %s", aor, a.KeyID, err, registrar.KeyID(k))
				}
				if _, err := e.keyring(t).Open(a); err != nil {
					t.Fatalf("%s does not open under the new key alone: %v", aor, err)
				}
			}
			before := len(ownRefreshes(t, e.kam, "1001"))
			e.sleepFor(t, "1001", password, iosParams)
			deadline = time.Now().Add(pbxExpiry)
			for len(ownRefreshes(t, e.kam, "1001")) == before {
				if time.Now().After(deadline) {
					t.Fatal("no on-behalf refresh under the new key")
				}
				time.Sleep(500 * time.Millisecond)
			}
			if reg, _ := e.registration(t, "1001"); reg.State != store.RegActive {
				t.Errorf("registration under the new key: %+v", reg)
			}
		})
	}
}

// TestE2ERefreshPush: in pass-through mode, a device that sent
// +sip.pnsreg is told when it will be pushed (Feature-Caps on the 2xx)
// and gets one register push (iOS: background, never VoIP; Android:
// data) that long before its 60 s registration lapses; a device without
// +sip.pnsreg refreshes by itself and is never pushed.
func TestE2ERefreshPush(t *testing.T) {
	e := startWakeEnvWith(t, testpeers.KamailioOptions{MaxExpires: pbxExpiry}, func(c *Config) {
		c.Log.Level = "info"
	})
	register := func(user, params string) time.Time {
		ua := proxytest.DialTCP(t, "", e.sw.TCP)
		defer ua.Close()
		cseq := 0
		res := rawRegisterFor(t, ua, e.sw.TCP, user, "pw"+user, params, "", 3600, &cseq)
		if res.StatusCode != 200 {
			t.Fatalf("%s: register %d", user, res.StatusCode)
		}
		fc := res.GetHeader("Feature-Caps")
		if strings.Contains(params, "pnsreg") && (fc == nil || !strings.Contains(fc.Value(), `+sip.pnsreg="20"`)) {
			t.Errorf("%s: Feature-Caps %v, want +sip.pnsreg=20 (a third of 60 s)", user, fc)
		}
		return time.Now()
	}
	iosAt := register("1001", iosBoth+"|;+sip.pnsreg")
	androidAt := register("1002", androidParms+"|;+sip.pnsreg")
	register("1003", iosBoth+"|")

	p := e.apns.WaitRequests(t, 1, pbxExpiry)[0]
	if d := time.Since(iosAt); d < 35*time.Second || d > 50*time.Second {
		t.Errorf("iOS register push %s after the REGISTER, want about 40 s", d.Round(time.Second))
	}
	if p.PushType() != "background" || p.Token != iosRemoteToken || p.Sipwake()["event"] != "register" || p.Sipwake()["aor"] != "sip:1001@pbx.test" {
		t.Errorf("iOS register push: type %q token %s payload %v", p.PushType(), push6(p.Token), p.Sipwake())
	}
	f := e.fcm.WaitRequests(t, 1, 10*time.Second)[0]
	if d := time.Since(androidAt); d < 35*time.Second || d > 55*time.Second {
		t.Errorf("Android register push %s after the REGISTER", d.Round(time.Second))
	}
	if f.Message.Data["sipwake.event"] != "register" {
		t.Errorf("Android register push data %v", f.Message.Data)
	}
	// Nothing more until the registrations lapse: one push each, none for
	// the device that refreshes by itself.
	time.Sleep(25 * time.Second)
	if n := len(e.apns.Requests()); n != 1 {
		t.Errorf("APNs got %d pushes, want 1", n)
	}
	if n := len(e.fcm.Requests()); n != 1 {
		t.Errorf("FCM got %d pushes, want 1", n)
	}
}

// pbxStat reads one Kamailio statistic ("usrloc:location_contacts").
func pbxStat(t testing.TB, kam *testpeers.Kamailio, name string) int {
	t.Helper()
	group, _, _ := strings.Cut(name, ":")
	out := kam.RPC(t, "stats.get_statistics", group+":")
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.TrimSpace(k) == name {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("statistic %s: %q", name, line)
			}
			return n
		}
	}
	t.Fatalf("no statistic %s in %q", name, out)
	return 0
}

// fakeRegistrar is a PBX registrar sipwake's REGISTERs reach, whose
// answers a test switches: up (200, granting expires), busy (503 with
// Retry-After), restarting (503 without), down (silent), hold_own
// (silent to sipwake's own REGISTERs that add a contact, up to the
// others) or hold_own_removal (silent to sipwake's own de-REGISTERs, up
// to the others). It records every REGISTER once (not its retransmissions), and
// which contacts it holds after the REGISTERs it accepted, in the order
// it accepted them.
type fakeRegistrar struct {
	ua      *proxytest.UA
	expires int
	mu      sync.Mutex
	mode    string // up, busy, restarting, down, hold_own, hold_own_removal
	seen    map[string]bool
	log     []fakeReg
	holds   map[string]bool // contact user part -> held
	adds    map[string]int  // contact user part -> REGISTERs accepted that added or renewed it
}

type fakeReg struct {
	at      time.Time
	callID  string
	mode    string
	expires int // as asked: the Contact's expires, else the Expires header
}

// holding reports whether the fake PBX holds a contact whose user part is
// user, and how many REGISTERs (retransmissions included) it accepted
// that added or renewed it.
func (f *fakeRegistrar) holding(user string) (bool, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holds[user], f.adds[user]
}

func startFakeRegistrar(t *testing.T, expires int) *fakeRegistrar {
	f := &fakeRegistrar{ua: proxytest.NewUDP(t, pbxIP), expires: expires, mode: "up", seen: map[string]bool{}, holds: map[string]bool{}, adds: map[string]int{}}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			m, err := f.ua.Recv(200 * time.Millisecond)
			if err != nil {
				continue
			}
			req, ok := m.(*sip.Request)
			if !ok || req.Method != sip.REGISTER {
				continue
			}
			via := req.Via()
			branch, _ := via.Params.Get("branch")
			src := via.Host + ":" + strconv.Itoa(via.Port)
			c := req.Contact()
			asked := -1
			if c != nil {
				if v, ok := c.Params.Get("expires"); ok {
					asked, _ = strconv.Atoi(v)
				}
			}
			if h := req.GetHeader("Expires"); h != nil && asked < 0 {
				asked, _ = strconv.Atoi(h.Value())
			}
			own := strings.HasPrefix(req.CallID().Value(), "sw-")
			f.mu.Lock()
			mode := f.mode
			switch mode {
			case "hold_own", "hold_own_removal":
				if own && (asked == 0) == (mode == "hold_own_removal") {
					mode = "down"
				} else {
					mode = "up"
				}
			}
			if !f.seen[branch] {
				f.seen[branch] = true
				f.log = append(f.log, fakeReg{at: time.Now(), callID: req.CallID().Value(), mode: f.mode, expires: asked})
			}
			if mode == "up" && c != nil {
				if asked == 0 {
					delete(f.holds, c.Address.User)
				} else {
					f.holds[c.Address.User] = true
					f.adds[c.Address.User]++
				}
			}
			f.mu.Unlock()
			switch mode {
			case "up":
				if asked == 0 {
					f.ua.Reply(src, req, 200, "OK")
					continue
				}
				f.ua.Reply(src, req, 200, "OK", "Contact: <"+c.Address.String()+">;expires="+strconv.Itoa(f.expires))
			case "busy":
				f.ua.Reply(src, req, 503, "Service Unavailable", "Retry-After: 7")
			case "restarting":
				f.ua.Reply(src, req, 503, "Service Unavailable")
			}
		}
	}()
	return f
}

// startOnBehalfAt starts sipwake in on-behalf mode (trusted by the PBX)
// in front of the fake PBX pbx.
func startOnBehalfAt(t *testing.T, pbx *fakeRegistrar) *running {
	t.Helper()
	cfg := e2eConfig(t, nil, t.TempDir())
	cfg.Log.Level = "info"
	cfg.Upstream.URI = "sip:" + pbx.ua.Addr() + ";transport=udp"
	cfg.Upstream.Domains = []string{"pbx.test"}
	cfg.Registrar.Mode = "on_behalf"
	cfg.Registrar.OnBehalf.Auth = registrar.AuthTrusted
	return startDaemon(t, cfg)
}

func (f *fakeRegistrar) set(mode string) {
	f.mu.Lock()
	f.mode = mode
	f.mu.Unlock()
}

// since returns the REGISTERs recorded from t on (sipwake's own only).
func (f *fakeRegistrar) since(t0 time.Time) []fakeReg {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeReg
	for _, r := range f.log {
		if !r.at.Before(t0) && strings.HasPrefix(r.callID, "sw-") {
			out = append(out, r)
		}
	}
	return out
}

// TestE2EOnBehalfPBXTrouble: a PBX answering 503 with Retry-After is not
// asked again before it; a PBX that goes silent puts the registrations in
// backing_off; after a PBX restart (503s, then answers) the refreshes come
// back spread over time rather than all at once, and all recover.
func TestE2EOnBehalfPBXTrouble(t *testing.T) {
	const devices = 30
	pbx := startFakeRegistrar(t, 12)
	sw := startOnBehalfAt(t, pbx)
	e := &wakeEnv{sw: sw}
	ua := proxytest.NewUDP(t, "127.0.0.1")
	for i := range devices {
		u := strconv.Itoa(3000 + i)
		params := ";pn-provider=fcm;pn-prid=trouble-token-" + u + "-abcdefghijklmnop;pn-param=" + fcmProject + "|"
		cseq := 0
		if res := rawRegisterFor(t, ua, sw.UDP, u, "", params, "", deviceAsk, &cseq); res.StatusCode != 200 {
			t.Fatalf("%s: register %d", u, res.StatusCode)
		}
	}
	// Up: every device's contact refreshed (a 12 s grant: every 8 s).
	time.Sleep(12 * time.Second)
	perCall := map[string]int{}
	for _, r := range pbx.since(time.Time{}) {
		perCall[r.callID]++
	}
	if len(perCall) != devices {
		t.Fatalf("%d contacts refreshed by sipwake, want %d", len(perCall), devices)
	}

	// Busy: 503 with Retry-After 7; nothing comes back sooner.
	busyFrom := time.Now()
	pbx.set("busy")
	time.Sleep(4 * time.Second)
	pbx.set("up")
	busyTo := time.Now()
	first := map[string]time.Time{}
	for _, r := range pbx.since(busyFrom) {
		if r.mode == "busy" {
			if _, ok := first[r.callID]; !ok {
				first[r.callID] = r.at
			}
		}
	}
	if len(first) == 0 {
		t.Fatal("no refresh met the busy PBX")
	}
	time.Sleep(12 * time.Second)
	for _, r := range pbx.since(busyTo) {
		if at, ok := first[r.callID]; ok && r.at.After(at) && r.at.Sub(at) < 7*time.Second {
			t.Errorf("%s: asked again %s after a 503 with Retry-After: 7", r.callID, r.at.Sub(at).Round(10*time.Millisecond))
		}
	}

	// Silent for 10 s: registrations back off.
	pbx.set("down")
	time.Sleep(10 * time.Second)
	_, metrics := httpGet(t, "http://"+sw.ops.Addr().String()+"/metrics")
	if !strings.Contains(metrics, `sipwake_registrar_upstream_registrations{state="backing_off"}`) ||
		strings.Contains(metrics, `sipwake_registrar_upstream_registrations{state="backing_off"} 0`) {
		t.Errorf("no registration backing off while the PBX is silent")
	}
	// Restarting for 20 s (503 at once, no Retry-After): then up again.
	pbx.set("restarting")
	time.Sleep(20 * time.Second)
	back := time.Now()
	pbx.set("up")
	deadline := back.Add(60 * time.Second)
	for {
		n := 0
		for _, r := range e.allRegistrations(t) {
			if r.State == store.RegActive {
				n++
			}
		}
		if n == devices {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d registrations active 60 s after the PBX came back", n, devices)
		}
		time.Sleep(500 * time.Millisecond)
	}
	firstBack := map[string]time.Time{}
	for _, r := range pbx.since(back) {
		if _, ok := firstBack[r.callID]; !ok {
			firstBack[r.callID] = r.at
		}
	}
	perSecond := map[int64]int{}
	var lo, hi time.Time
	for _, at := range firstBack {
		perSecond[at.Unix()]++
		if lo.IsZero() || at.Before(lo) {
			lo = at
		}
		if at.After(hi) {
			hi = at
		}
	}
	peak := 0
	for _, c := range perSecond {
		peak = max(peak, c)
	}
	t.Logf("after the PBX came back: %d contacts re-registered over %s, at most %d in one second", len(firstBack), hi.Sub(lo).Round(100*time.Millisecond), peak)
	// Every registration was backing off, each on its own jittered
	// timer: they come back over several seconds, not in one burst.
	if len(firstBack) < devices*2/3 {
		t.Fatalf("only %d of %d registrations sent a new REGISTER after the PBX came back", len(firstBack), devices)
	}
	if peak > len(firstBack)/3 || hi.Sub(lo) < 3*time.Second {
		t.Errorf("refreshes after the PBX came back are not spread: %d of %d in one second, over %s", peak, len(firstBack), hi.Sub(lo))
	}
}

// TestE2EOnBehalfDeregisterDuringRefresh: a device de-registers while
// sipwake's own refresh of its contact is on its way to the PBX, and the
// PBX handles the device's removal first. The late refresh puts the
// contact back at the PBX; sipwake takes it away again at once, instead
// of leaving the PBX to call a device that logged out for a whole grant.
func TestE2EOnBehalfDeregisterDuringRefresh(t *testing.T) {
	c := startCrossing(t, "3100")
	// The refresh's retransmission gets through and puts the contact
	// back; sipwake must take it away again.
	_, before := c.pbx.holding(c.token)
	c.pbx.set("up")
	deadline := time.Now().Add(20 * time.Second)
	for {
		holds, adds := c.pbx.holding(c.token)
		if adds > before && !holds {
			break
		}
		if time.Now().After(deadline) {
			if adds == before {
				t.Fatal("the held refresh never reached the PBX")
			}
			t.Fatal("the PBX still holds the contact of a de-registered device 20 s after a crossing refresh")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, ok := c.e.registration(t, c.user); ok {
		t.Error("the record of the de-registered device came back")
	}
	// And it stays that way: nothing refreshes the contact again.
	time.Sleep(3 * time.Second)
	if holds, _ := c.pbx.holding(c.token); holds {
		t.Error("the contact came back at the PBX after sipwake withdrew it")
	}
}

// TestE2EOnBehalfReregisterDuringWithdraw: the device of the test above
// registers again while sipwake's de-REGISTER that withdraws the crossing
// refresh is on its way, and the PBX handles the device's REGISTER
// first, so the de-REGISTER removes the contact the device just
// registered. sipwake registers it again at once.
func TestE2EOnBehalfReregisterDuringWithdraw(t *testing.T) {
	c := startCrossing(t, "3101")
	// The refresh gets through; sipwake's de-REGISTER that follows does
	// not, for now.
	c.pbx.set("hold_own_removal")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if n := c.ownRemovals(); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sipwake sent no de-REGISTER after the crossing refresh")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The device is back, and the PBX holds its contact.
	if res := rawRegisterFor(t, c.ua, c.e.sw.UDP, c.user, "", c.params, "", deviceAsk, &c.cseq); res.StatusCode != 200 {
		t.Fatalf("register again: %d", res.StatusCode)
	}
	if holds, _ := c.pbx.holding(c.token); !holds {
		t.Fatal("the PBX does not hold the contact after the device registered again")
	}
	// Now the held de-REGISTER's retransmission removes it, and sipwake
	// registers the contact again at once, still under the Call-ID of the
	// withdrawn record (the device's new record has a Call-ID of its own
	// and refreshes later).
	released := time.Now()
	c.pbx.set("up")
	deadline = released.Add(10 * time.Second)
	for {
		again := false
		for _, r := range c.pbx.since(released) {
			if r.callID == c.callID && r.expires > 0 {
				again = true
			}
		}
		holds, _ := c.pbx.holding(c.token)
		if again && holds {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sipwake did not register the contact again within 10 s of its late de-REGISTER (PBX holds it: %v)", holds)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, ok := c.e.registration(t, c.user); !ok {
		t.Error("no record for the device that registered again")
	}
}

// crossing is a device registered on behalf through sipwake at a fake
// PBX, that de-registered while sipwake's refresh of its contact was held
// at the PBX (still held when startCrossing returns, the PBX in mode
// hold_own).
type crossing struct {
	e      *wakeEnv
	pbx    *fakeRegistrar
	ua     *proxytest.UA
	user   string
	params string
	token  string // the contact's user part at the PBX
	callID string // of sipwake's REGISTERs for the record that ended
	cseq   int
	t0     time.Time
}

func startCrossing(t *testing.T, user string) *crossing {
	t.Helper()
	pbx := startFakeRegistrar(t, 12)
	sw := startOnBehalfAt(t, pbx)
	c := &crossing{e: &wakeEnv{sw: sw}, pbx: pbx, ua: proxytest.NewUDP(t, "127.0.0.1"), user: user,
		params: ";pn-provider=fcm;pn-prid=leaving-token-" + user + "-abcdefghijklmnop;pn-param=" + fcmProject + "|"}
	if res := rawRegisterFor(t, c.ua, sw.UDP, user, "", c.params, "", deviceAsk, &c.cseq); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	reg, ok := c.e.registration(t, user)
	if !ok || !reg.OnBehalf {
		t.Fatalf("no on-behalf record after the REGISTER: %+v", reg)
	}
	c.token, c.callID = reg.Token, reg.CallID
	// The next refresh of sipwake's own (due within 9 s of a 12 s grant)
	// gets no answer for now.
	pbx.set("hold_own")
	c.t0 = time.Now()
	deadline := c.t0.Add(15 * time.Second)
	for {
		n := 0
		for _, r := range pbx.since(c.t0) {
			if r.expires > 0 {
				n++
			}
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no refresh from sipwake within 15 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The device leaves; the PBX removes the contact and answers.
	if res := rawRegisterFor(t, c.ua, sw.UDP, user, "", c.params, "", 0, &c.cseq); res.StatusCode != 200 {
		t.Fatalf("de-register: %d", res.StatusCode)
	}
	if holds, _ := pbx.holding(c.token); holds {
		t.Fatal("the PBX still holds the contact after the device's de-REGISTER")
	}
	return c
}

// ownRemovals counts sipwake's own de-REGISTERs since the crossing began.
func (c *crossing) ownRemovals() int {
	n := 0
	for _, r := range c.pbx.since(c.t0) {
		if r.expires == 0 {
			n++
		}
	}
	return n
}

// allRegistrations lists every record in the daemon's store.
func (e *wakeEnv) allRegistrations(t testing.TB) []store.Registration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	regs, err := e.sw.store.ListRegistrations(ctx, store.RegistrationFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return regs
}

// TestE2EOnBehalfTrustMarkNotForgeable: a PBX trusting sipwake's own
// REGISTERs still challenges a device that puts sipwake's mark on its
// REGISTER: the relayed copy never carries it.
func TestE2EOnBehalfTrustMarkNotForgeable(t *testing.T) {
	e := startOnBehalf(t, registrar.AuthTrusted, testpeers.KamailioOptions{}, nil)
	ua := proxytest.DialTCP(t, "", e.sw.TCP)
	cseq := 0
	res := rawRegisterFor(t, ua, e.sw.TCP, "1001", "wrong-password", iosParams+"|", registrar.OnBehalfHeader+": refresh", deviceAsk, &cseq)
	if res.StatusCode == 200 {
		t.Fatal("a device REGISTER with the on-behalf mark and a wrong password was accepted")
	}
	if n := len(e.kam.ContactDetails(t, "1001")); n != 0 {
		t.Fatalf("the PBX saved %d contacts", n)
	}
}
