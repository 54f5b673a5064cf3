package testpeers

import (
	"strings"
	"testing"
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
