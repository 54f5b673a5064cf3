package testpeers

import (
	"strings"
	"testing"
	"time"
)

func TestLoopbackAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:5060", true},
		{"127.0.0.2:5080", true},
		{"10.0.0.1:5060", false},
		{"example.com:5060", false},
		{"[::1]:5060", false},
		{"127.0.0.1", false},
		{"127.0.0.1:x", false},
	} {
		if err := loopbackAddr(tc.addr); (err == nil) != tc.ok {
			t.Errorf("loopbackAddr(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
}

func TestParseULDump(t *testing.T) {
	const dump = `{
	Domains: {
		Domain: {
			Domain: location
			AoRs: {
				Info: {
					AoR: 1001
					Contacts: {
						Contact: {
							Address: sip:1001@127.0.0.1:5555;transport=tcp;pn-prid=abc
							Expires: 3600
							User-Agent: ua
							Received: sip:127.0.0.1:40000;transport=tcp
							Path: <sip:127.0.0.1:5060;lr>
							Socket: tcp:127.0.0.1:5080
							Instance: <urn:uuid:1>
						}
						Contact: {
							Address: sip:1001@127.0.0.1:6666
							Expires: 60
							Received: [not set]
							Path: [not set]
							Socket: udp:127.0.0.1:5080
							Instance: [not set]
						}
					}
				}
				Info: {
					AoR: 1002@pbx.test
					Contacts: {
						Contact: {
							Address: sip:1002@127.0.0.1:7777
						}
					}
				}
			}
		}
	}
}`
	got := parseULDump(dump)
	if len(got["1001"]) != 2 || len(got["1002"]) != 1 {
		t.Fatalf("parsed %+v", got)
	}
	c := got["1001"][0]
	if c.URI != "sip:1001@127.0.0.1:5555;transport=tcp;pn-prid=abc" || c.Received != "sip:127.0.0.1:40000;transport=tcp" ||
		c.Path != "<sip:127.0.0.1:5060;lr>" || c.Socket != "tcp:127.0.0.1:5080" || c.Instance != "<urn:uuid:1>" || c.UserAgent != "ua" {
		t.Errorf("first contact = %+v", c)
	}
	if c := got["1001"][1]; c.Received != "" || c.Path != "" || c.Instance != "" {
		t.Errorf("[not set] fields should be empty: %+v", c)
	}
}

func TestUsersTableAndScenarios(t *testing.T) {
	table := usersTable(t, map[string]string{"1002": "b", "1001": "a"})
	if !strings.Contains(table, "\n1:1001:0:0:a:0\n2:1002:0:0:b:0\n") {
		t.Errorf("users table:\n%s", table)
	}
	want := []string{"message.xml", "ooc_answer.xml", "register.xml", "register_plain.xml", "register_wait.xml",
		"uac_call.xml", "uac_cancel.xml", "uas_answer.xml", "uas_message.xml", "uas_ring.xml", "unregister.xml"}
	if got := strings.Join(Scenarios(), ","); got != strings.Join(want, ",") {
		t.Errorf("Scenarios() = %s", got)
	}
}

func TestParseSavedRegisters(t *testing.T) {
	const log = ` 0(1) INFO: <core> [main.c:3055]: main(): processes (at least): 10
 1(2) INFO: {1 2 REGISTER a@x} <script>: REQ REGISTER sip:pbx.test from 127.0.0.1:4000/udp
 1(2) NOTICE: {1 2 REGISTER a@x} <script>: REGISTER saved ts=1700000000 ci=a@x aor=sip:1001@pbx.test path=<null> contact=<sip:1001@127.0.0.1:4000;transport=udp>;expires=60
 2(3) NOTICE: {1 1 REGISTER b@x} <script>: REGISTER saved ts=1700000001 ci=b@x aor=sip:1002@pbx.test path=<sip:127.0.0.2:5099;lr>, <sip:127.0.0.3;lr> contact="Bob Smith" <sip:1002@127.0.0.1:4001>
 2(3) NOTICE: {1 1 REGISTER c@x} <script>: REGISTER saved ts=1700000001 ci=c@x aor=sip:1003@pbx.test path=<null> contact=*
 2(3) NOTICE: {1 1 REGISTER d@x} <script>: REGISTER saved ts=oops ci=d@x aor=sip:1003@pbx.test path=<null> contact=*
 2(3) NOTICE: {1 1 REGISTER e@x} <script>: REGISTER saved ts=1700000002 ci=e@x aor=sip:1003@pbx.test path=<null> contact=<sip:1003@127.0.0.1:40`
	got := parseSavedRegisters(log)
	want := []SavedRegister{
		{Unix: 1700000000, AOR: "sip:1001@pbx.test", CallID: "a@x", Contact: "<sip:1001@127.0.0.1:4000;transport=udp>;expires=60"},
		{Unix: 1700000001, AOR: "sip:1002@pbx.test", CallID: "b@x", Contact: `"Bob Smith" <sip:1002@127.0.0.1:4001>`, Path: "<sip:127.0.0.2:5099;lr>, <sip:127.0.0.3;lr>"},
		{Unix: 1700000001, AOR: "sip:1003@pbx.test", CallID: "c@x", Contact: "*"},
	}
	if len(got) != len(want) {
		t.Fatalf("parsed %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if got := parseSavedRegisters(""); len(got) != 0 {
		t.Errorf("empty log: %+v", got)
	}
}

func TestKamailioOptionConfig(t *testing.T) {
	for _, tc := range []struct {
		max              time.Duration
		maxE, defE, minE int
	}{
		{0, 3600, 3600, 10},
		{time.Minute, 60, 60, 10},
		{5 * time.Second, 5, 5, 5},
		{2 * time.Hour, 7200, 3600, 10},
	} {
		maxE, defE, minE := registrarExpires(t, tc.max)
		if maxE != tc.maxE || defE != tc.defE || minE != tc.minE {
			t.Errorf("registrarExpires(%s) = %d, %d, %d, want %d, %d, %d", tc.max, maxE, defE, minE, tc.maxE, tc.defE, tc.minE)
		}
	}
	if got := trustedSources(t, []string{"127.0.0.2", "127.0.0.3", "127.0.0.2"}); strings.Join(got, ",") != "127.0.0.2,127.0.0.3" {
		t.Errorf("trustedSources = %v", got)
	}

	cfg := kamailioConfig{IP: Loopback, UDPPort: 5080, TCPPort: 5080, Domain: DefaultDomain, DBDir: "/db",
		CtlSocket: "unix:/ctl", Secret: "s", Children: 2, ChallengeFlags: "0", AuthFlags: "0", OnBehalfHeader: OnBehalfHeader}
	cfg.MaxExpires, cfg.DefaultExpires, cfg.MinExpires = registrarExpires(t, 0)
	def, err := renderKamailioConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"max_expires", 3600)`, `"default_expires", 3600)`, `"min_expires", 10)`,
		`xlog("L_NOTICE", "REGISTER saved ts=$TS ci=$ci aor=$tu `} {
		if !strings.Contains(def, want) {
			t.Errorf("default config lacks %q", want)
		}
	}
	if strings.Contains(def, OnBehalfHeader) || strings.Contains(def, "TRUSTED_SOURCE") {
		t.Errorf("default config trusts someone")
	}

	cfg.MaxExpires, cfg.DefaultExpires, cfg.MinExpires = registrarExpires(t, time.Minute)
	cfg.TrustedSources = []string{"127.0.0.2", "127.0.0.3"}
	opt, err := renderKamailioConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"max_expires", 60)`, `"default_expires", 60)`, `is_present_hf("X-Sipwake-On-Behalf") && route(TRUSTED_SOURCE)`,
		`if ($si == "127.0.0.2") {`, `if ($si == "127.0.0.3") {`} {
		if !strings.Contains(opt, want) {
			t.Errorf("config with options lacks %q", want)
		}
	}
}
