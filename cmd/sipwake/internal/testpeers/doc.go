// Package testpeers starts real SIP peers for sipwake's end-to-end tests:
// Kamailio as "the PBX", SIPp with the scenarios under testdata/sipp, and
// the softphones baresip and linphone (linphone-daemon).
//
// Every peer runs on 127.0.0.1 only, on random free ports, in its own
// t.TempDir(), as a child process of the test. It is stopped by PID in
// t.Cleanup (SIGTERM to its process group, SIGKILL after a deadline, then
// reaped), and every wait is bounded by a deadline.
//
// Missing binaries: Require skips the test naming the Debian package to
// install, unless the environment variable CI is non-empty or
// SIPWAKE_REQUIRE_PEERS=1, in which case the test fails (CI must never skip
// silently). The packages are:
//
//	kamailio kamailio-extra-modules kamailio-tls-modules kamailio-utils-modules
//	sip-tester (sipp) baresip linphone-cli (linphone-daemon) redis-server
//
// Typical use:
//
//	pbx := testpeers.StartKamailio(t, testpeers.KamailioOptions{TLS: true})
//	res, err := testpeers.RunSIPp(t, ctx, testpeers.SIPpOptions{
//		Scenario: "register.xml",
//		Remote:   pbx.UDPAddr,
//		Auth:     [2]string{"1001", "pw1001"},
//		Keys:     testpeers.RegisterKeys("1001", pbx.Domain, "udp"),
//	})
//	contacts := pbx.Contacts(t, "1001")
//
// The scenarios and configuration templates are embedded in the package, so
// tests in other packages (cmd/sipwake) use them without knowing where this
// directory is.
package testpeers
