package testpeers

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Tests of the KamailioOptions MaxExpires and TrustedSources and of
// Kamailio.SetPassword and Kamailio.SavedRegisters. They talk to Kamailio
// with rawUA, a minimal SIP-over-UDP client on loopback.

// sipReply is a SIP response read by rawUA.
type sipReply struct {
	Status  int
	Reason  string
	Headers map[string][]string // lower-case name -> values
	Raw     string
}

// Header returns the first value of a header ("" when absent).
func (r sipReply) Header(name string) string {
	if v := r.Headers[strings.ToLower(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// rawUA sends REGISTERs over UDP from one loopback socket.
type rawUA struct {
	t      *testing.T
	conn   *net.UDPConn
	remote *net.UDPAddr
	local  string
	cseq   int
}

// newRawUA binds a UDP socket on localIP (random port) that sends to
// remote; it is closed in t.Cleanup.
func newRawUA(t *testing.T, localIP, remote string) *rawUA {
	t.Helper()
	checkLoopback(t, localIP)
	if err := loopbackAddr(remote); err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp4", remote)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(localIP)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawUA{t: t, conn: conn, remote: raddr, local: conn.LocalAddr().String()}
}

// regReq describes one REGISTER transaction of rawUA.register.
type regReq struct {
	User, Domain string
	// Password answers a 401 once with digest credentials; "" returns the
	// 401.
	Password string
	// Expires is the Expires header; -1 leaves it out.
	Expires int
	// CallID defaults to a random one.
	CallID string
	// Headers are extra "Name: value" lines.
	Headers []string
}

// register sends a REGISTER for req.User with Contact sip:USER@local and
// returns the final reply (after one digest retry when req.Password is set
// and the first reply is 401).
func (ua *rawUA) register(req regReq) sipReply {
	ua.t.Helper()
	if req.CallID == "" {
		req.CallID = randomHex(10) + "@rawua"
	}
	tag := randomHex(4)
	send := func(auth string) sipReply {
		ua.cseq++
		var b strings.Builder
		fmt.Fprintf(&b, "REGISTER sip:%s SIP/2.0\r\n", req.Domain)
		fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\n", ua.local, randomHex(8))
		b.WriteString("Max-Forwards: 70\r\n")
		fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=%s\r\n", req.User, req.Domain, tag)
		fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", req.User, req.Domain)
		fmt.Fprintf(&b, "Call-ID: %s\r\n", req.CallID)
		fmt.Fprintf(&b, "CSeq: %d REGISTER\r\n", ua.cseq)
		fmt.Fprintf(&b, "Contact: <sip:%s@%s;transport=udp>\r\n", req.User, ua.local)
		if req.Expires >= 0 {
			fmt.Fprintf(&b, "Expires: %d\r\n", req.Expires)
		}
		for _, h := range req.Headers {
			b.WriteString(h + "\r\n")
		}
		if auth != "" {
			b.WriteString("Authorization: " + auth + "\r\n")
		}
		b.WriteString("User-Agent: testpeers-rawua\r\nContent-Length: 0\r\n\r\n")
		return ua.roundTrip(b.String(), req.CallID, ua.cseq)
	}
	r := send("")
	if r.Status != 401 || req.Password == "" {
		return r
	}
	auth, err := digestAuthorization(r.Header("WWW-Authenticate"), req.User, req.Password, "REGISTER", "sip:"+req.Domain)
	if err != nil {
		ua.t.Fatalf("rawua: %v\n%s", err, r.Raw)
	}
	return send(auth)
}

// roundTrip sends msg and returns the first final reply with the given
// Call-ID and CSeq number, waiting at most 5 s.
func (ua *rawUA) roundTrip(msg, callID string, cseq int) sipReply {
	ua.t.Helper()
	if _, err := ua.conn.WriteToUDP([]byte(msg), ua.remote); err != nil {
		ua.t.Fatalf("rawua: send: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 65535)
	for {
		_ = ua.conn.SetReadDeadline(deadline)
		n, err := ua.conn.Read(buf)
		if err != nil {
			ua.t.Fatalf("rawua: no final reply to\n%s\n: %v", msg, err)
		}
		r, err := parseSIPReply(string(buf[:n]))
		if err != nil {
			ua.t.Logf("rawua: ignoring %v", err)
			continue
		}
		num, _, _ := strings.Cut(r.Header("CSeq"), " ")
		if r.Status >= 200 && r.Header("Call-ID") == callID && num == strconv.Itoa(cseq) {
			return r
		}
	}
}

// parseSIPReply parses a SIP response (headers only; compact forms of the
// headers the tests read are expanded).
func parseSIPReply(s string) (sipReply, error) {
	head, _, _ := strings.Cut(s, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	f := strings.SplitN(lines[0], " ", 3)
	if len(f) < 2 || f[0] != "SIP/2.0" {
		return sipReply{}, fmt.Errorf("not a SIP response: %q", lines[0])
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		return sipReply{}, fmt.Errorf("bad status line %q", lines[0])
	}
	r := sipReply{Status: code, Headers: map[string][]string{}, Raw: s}
	if len(f) == 3 {
		r.Reason = f[2]
	}
	compact := map[string]string{"i": "call-id", "m": "contact", "v": "via", "f": "from", "t": "to"}
	for _, l := range lines[1:] {
		name, val, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if long, ok := compact[name]; ok {
			name = long
		}
		r.Headers[name] = append(r.Headers[name], strings.TrimSpace(val))
	}
	return r, nil
}

var digestParam = regexp.MustCompile(`(\w+)=(?:"([^"]*)"|([^,\s]+))`)

// digestAuthorization answers a Digest challenge (MD5, no qop or
// qop=auth).
func digestAuthorization(challenge, user, password, method, uri string) (string, error) {
	rest, ok := strings.CutPrefix(challenge, "Digest ")
	if !ok {
		return "", fmt.Errorf("not a Digest challenge: %q", challenge)
	}
	p := map[string]string{}
	for _, m := range digestParam.FindAllStringSubmatch(rest, -1) {
		p[strings.ToLower(m[1])] = m[2] + m[3]
	}
	if alg := p["algorithm"]; alg != "" && !strings.EqualFold(alg, "MD5") {
		return "", fmt.Errorf("unsupported digest algorithm %q", alg)
	}
	h := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	ha1 := h(user + ":" + p["realm"] + ":" + password)
	ha2 := h(method + ":" + uri)
	auth := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=MD5`, user, p["realm"], p["nonce"], uri)
	switch qop := p["qop"]; {
	case qop == "":
		auth += fmt.Sprintf(`, response="%s"`, h(ha1+":"+p["nonce"]+":"+ha2))
	case strings.Contains(qop, "auth"):
		cnonce, nc := randomHex(8), "00000001"
		auth += fmt.Sprintf(`, response="%s", qop=auth, nc=%s, cnonce="%s"`, h(ha1+":"+p["nonce"]+":"+nc+":"+cnonce+":auth:"+ha2), nc, cnonce)
	default:
		return "", fmt.Errorf("unsupported qop %q", qop)
	}
	if p["opaque"] != "" {
		auth += fmt.Sprintf(`, opaque="%s"`, p["opaque"])
	}
	return auth, nil
}

var contactExpires = regexp.MustCompile(`;expires=(\d+)`)

// grantedExpires returns the expires the registrar granted to contactUser
// in a 200 to REGISTER (the contacts it lists carry ;expires=).
func grantedExpires(t *testing.T, r sipReply, contactUser string) int {
	t.Helper()
	for _, c := range r.Headers["contact"] {
		for part := range strings.SplitSeq(c, ",") {
			if !strings.Contains(part, "sip:"+contactUser+"@") {
				continue
			}
			if m := contactExpires.FindStringSubmatch(part); m != nil {
				n, _ := strconv.Atoi(m[1])
				return n
			}
		}
	}
	t.Fatalf("no contact of %s with expires in the reply:\n%s", contactUser, r.Raw)
	return 0
}

// expiresLeft parses Contact.Expires of user's only contact.
func expiresLeft(t *testing.T, pbx *Kamailio, user string) int {
	t.Helper()
	cs := pbx.ContactDetails(t, user)
	if len(cs) != 1 {
		t.Fatalf("%s: contacts %+v, want 1", user, cs)
	}
	n, err := strconv.Atoi(cs[0].Expires)
	if err != nil {
		t.Fatalf("%s: ul.dump Expires %q: %v", user, cs[0].Expires, err)
	}
	return n
}

func wantStatus(t *testing.T, what string, r sipReply, code int) {
	t.Helper()
	if r.Status != code {
		t.Fatalf("%s: got %d %s, want %d\n%s", what, r.Status, r.Reason, code, r.Raw)
	}
}

func TestKamailioMaxExpires(t *testing.T) {
	t.Parallel()
	pbx := StartKamailio(t, KamailioOptions{MaxExpires: time.Minute})
	ua := newRawUA(t, Loopback, pbx.UDPAddr)

	for _, tc := range []struct {
		user    string
		ask     int // -1: no Expires header
		granted int
	}{
		{"1001", 3600, 60}, // capped to MaxExpires
		{"1002", -1, 60},   // default_expires capped to MaxExpires
		{"1003", 30, 30},   // below the cap: kept
	} {
		r := ua.register(regReq{User: tc.user, Domain: pbx.Domain, Password: pbx.Users[tc.user], Expires: tc.ask})
		wantStatus(t, tc.user+" REGISTER", r, 200)
		if got := grantedExpires(t, r, tc.user); got != tc.granted {
			t.Errorf("%s asked %d: granted %d, want %d", tc.user, tc.ask, got, tc.granted)
		}
		if left := expiresLeft(t, pbx, tc.user); left > tc.granted || left < tc.granted-5 {
			t.Errorf("%s: ul.dump expires %d, want about %d", tc.user, left, tc.granted)
		}
	}
	// min_expires (10s) still applies below the cap: raised to it
	r := ua.register(regReq{User: "1001", Domain: pbx.Domain, Password: "pw1001", Expires: 5})
	wantStatus(t, "REGISTER Expires: 5", r, 200)
	if got := grantedExpires(t, r, "1001"); got != 10 {
		t.Errorf("asked 5: granted %d, want min_expires 10", got)
	}
}

func TestKamailioTrustedSources(t *testing.T) {
	t.Parallel()
	const gw1, gw2 = "127.0.0.2", "127.0.0.3"
	pbx := StartKamailio(t, KamailioOptions{TrustedSources: []string{gw1, gw2}})
	onBehalf := []string{OnBehalfHeader + ": sipwake-test"}

	// from a trusted address with the header: saved without a challenge
	for _, tc := range []struct{ ip, user string }{{gw1, "1001"}, {gw2, "1002"}} {
		ua := newRawUA(t, tc.ip, pbx.UDPAddr)
		r := ua.register(regReq{User: tc.user, Domain: pbx.Domain, Expires: 600, Headers: onBehalf})
		wantStatus(t, "trusted REGISTER from "+tc.ip, r, 200)
		cs := pbx.ContactDetails(t, tc.user)
		if len(cs) != 1 || !strings.Contains(cs[0].URI, tc.ip) {
			t.Errorf("%s: contacts %+v, want the one registered from %s", tc.user, cs, tc.ip)
		}
	}

	// from a trusted address without the header: challenged, and a digest
	// REGISTER works as usual
	ua := newRawUA(t, gw1, pbx.UDPAddr)
	r := ua.register(regReq{User: "1003", Domain: pbx.Domain, Expires: 600})
	wantStatus(t, "REGISTER from a trusted address without "+OnBehalfHeader, r, 401)
	r = ua.register(regReq{User: "1003", Domain: pbx.Domain, Expires: 600, Password: "wrong"})
	wantStatus(t, "REGISTER from a trusted address with a wrong password", r, 401)
	r = ua.register(regReq{User: "1003", Domain: pbx.Domain, Expires: 600, Password: "pw1003"})
	wantStatus(t, "digest REGISTER from a trusted address", r, 200)

	// from an untrusted address with the header: challenged
	other := newRawUA(t, Loopback, pbx.UDPAddr)
	pbx.RemoveContacts(t, "1001")
	r = other.register(regReq{User: "1001", Domain: pbx.Domain, Expires: 600, Headers: onBehalf})
	wantStatus(t, "REGISTER with "+OnBehalfHeader+" from an untrusted address", r, 401)
	if cs := pbx.ContactDetails(t, "1001"); len(cs) != 0 {
		t.Errorf("untrusted REGISTER saved: %+v", cs)
	}

	// a trusted REGISTER for a user the PBX does not know: 404
	r = newRawUA(t, gw2, pbx.UDPAddr).register(regReq{User: "4711", Domain: pbx.Domain, Expires: 600, Headers: onBehalf})
	wantStatus(t, "trusted REGISTER for an unknown user", r, 404)

	// a trusted REGISTER with Expires: 0 removes the contact
	gw := newRawUA(t, gw2, pbx.UDPAddr)
	r = gw.register(regReq{User: "1002", Domain: pbx.Domain, Expires: 600, Headers: onBehalf})
	wantStatus(t, "trusted refresh", r, 200)
	if n := len(pbx.ContactDetails(t, "1002")); n != 2 {
		t.Fatalf("1002 has %d contacts, want 2 (two gateway sockets)", n)
	}
	r = gw.register(regReq{User: "1002", Domain: pbx.Domain, Expires: 0, Headers: onBehalf})
	wantStatus(t, "trusted removal", r, 200)
	if n := len(pbx.ContactDetails(t, "1002")); n != 1 {
		t.Errorf("1002 has %d contacts after the removal, want 1", n)
	}
}

func TestKamailioSetPassword(t *testing.T) {
	t.Parallel()
	pbx := StartKamailio(t, KamailioOptions{})
	ua := newRawUA(t, Loopback, pbx.UDPAddr)

	r := ua.register(regReq{User: "1001", Domain: pbx.Domain, Password: "pw1001", Expires: 3600})
	wantStatus(t, "REGISTER with the start password", r, 200)
	// without MaxExpires the registrar still grants an hour
	if got := grantedExpires(t, r, "1001"); got != 3600 {
		t.Errorf("default max_expires: granted %d, want 3600", got)
	}

	// a numeric-looking password checks the "s:" prefix of the RPC
	pbx.SetPassword(t, "1001", "424242")
	if pbx.Users["1001"] != "424242" {
		t.Errorf("Users[1001] = %q after SetPassword", pbx.Users["1001"])
	}
	r = ua.register(regReq{User: "1001", Domain: pbx.Domain, Password: "pw1001", Expires: 600})
	wantStatus(t, "REGISTER with the old password", r, 401)
	r = ua.register(regReq{User: "1001", Domain: pbx.Domain, Password: "424242", Expires: 600})
	wantStatus(t, "REGISTER with the new password", r, 200)

	// the other users are untouched; a new user can be added
	r = ua.register(regReq{User: "1002", Domain: pbx.Domain, Password: "pw1002", Expires: 600})
	wantStatus(t, "REGISTER of another user", r, 200)
	pbx.SetPassword(t, "2001", "pw-new")
	r = ua.register(regReq{User: "2001", Domain: pbx.Domain, Password: "pw-new", Expires: 600})
	wantStatus(t, "REGISTER of an added user", r, 200)

	// the default (non-Quiet) log records the saved REGISTERs too
	var saved []SavedRegister
	poll(3*time.Second, 50*time.Millisecond, func() bool {
		saved, _ = pbx.SavedRegisters()
		return len(saved) >= 4
	})
	if len(saved) != 4 {
		t.Errorf("SavedRegisters = %+v, want 4", saved)
	}
}

func TestKamailioSavedRegistersQuiet(t *testing.T) {
	t.Parallel()
	pbx := StartKamailio(t, KamailioOptions{Quiet: true, TrustedSources: []string{"127.0.0.2"}})
	ua := newRawUA(t, Loopback, pbx.UDPAddr)
	start := time.Now().Unix()

	type sent struct{ user, callID string }
	var want []sent
	for i, user := range []string{"1001", "1001", "1002", "1003"} {
		ci := fmt.Sprintf("saved-%d-%s@rawua", i, randomHex(4))
		r := ua.register(regReq{User: user, Domain: pbx.Domain, Password: pbx.Users[user], Expires: 600, CallID: ci})
		wantStatus(t, "REGISTER "+user, r, 200)
		want = append(want, sent{user, ci})
	}
	// a trusted refresh through a "gateway" that adds a Path
	gw := newRawUA(t, "127.0.0.2", pbx.UDPAddr)
	path := "<sip:127.0.0.2:5099;lr>"
	r := gw.register(regReq{User: "1002", Domain: pbx.Domain, Expires: 600, CallID: "saved-gw@rawua",
		Headers: []string{OnBehalfHeader + ": 1", "Path: " + path}})
	wantStatus(t, "trusted REGISTER", r, 200)
	want = append(want, sent{"1002", "saved-gw@rawua"})
	// a challenged REGISTER is not saved
	wantStatus(t, "unauthenticated REGISTER", ua.register(regReq{User: "1003", Domain: pbx.Domain, Expires: 600}), 401)
	end := time.Now().Unix()

	var saved []SavedRegister
	poll(3*time.Second, 50*time.Millisecond, func() bool {
		var err error
		saved, err = pbx.SavedRegisters()
		if err != nil {
			t.Fatal(err)
		}
		return len(saved) >= len(want)
	})
	if len(saved) != len(want) {
		t.Fatalf("SavedRegisters = %+v, want %d entries\n%s", saved, len(want), pbx.LogTail())
	}
	// Kamailio's workers log after replying, so two REGISTERs sent one
	// after the other may be logged in either order: match by Call-ID.
	byCallID := map[string]SavedRegister{}
	for _, s := range saved {
		byCallID[s.CallID] = s
	}
	for _, w := range want {
		s, ok := byCallID[w.callID]
		if !ok || s.AOR != "sip:"+w.user+"@"+pbx.Domain ||
			!strings.Contains(s.Contact, "sip:"+w.user+"@127.0.0.") || s.Unix < start || s.Unix > end+1 {
			t.Errorf("saved %+v (found %v), want Call-ID %s, AoR of %s, time in [%d, %d]", s, ok, w.callID, w.user, start, end+1)
		}
	}
	if gw := byCallID["saved-gw@rawua"]; gw.Path != path {
		t.Errorf("trusted REGISTER: Path %q, want %q", gw.Path, path)
	}
	if first := byCallID[want[0].callID]; first.Path != "" {
		t.Errorf("REGISTER without Path: Path %q", first.Path)
	}
	// Quiet still drops the per-request lines
	if log := pbx.LogTail(); strings.Contains(log, "REQ REGISTER") {
		t.Errorf("Quiet log has per-request lines:\n%s", log)
	}
}
