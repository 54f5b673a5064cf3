// Package testpeers starts real SIP peers for sipwake's end-to-end tests:
// Kamailio as "the PBX", SIPp with the scenarios under testdata/sipp, and
// the softphones baresip and linphone (linphone-daemon).
//
// Every peer runs on an IPv4 loopback address only (127.0.0.1 unless a
// Kamailio ListenIP says otherwise), on random free ports, in its own
// t.TempDir(), as a child process of the test in its own process group. It
// is stopped by PID in t.Cleanup (SIGTERM to the group, SIGKILL after a
// deadline, then reaped; on Linux the kernel also kills it if the test
// binary dies), every wait is bounded by a deadline, and its log is printed
// when the test failed.
//
// Missing binaries: Require skips the test naming the Debian package to
// install, unless the environment variable CI is non-empty or
// SIPWAKE_REQUIRE_PEERS=1, in which case the test fails (CI must never skip
// silently). Binaries are looked for on PATH and in /usr/sbin. Packages:
//
//	kamailio kamailio-extra-modules kamailio-tls-modules kamailio-utils-modules
//	sip-tester (sipp) baresip linphone-cli (linphone-daemon) redis-server
//
// # Kamailio
//
// StartKamailio renders testdata/kamailio/pbx.cfg.tmpl: a registrar for one
// domain/realm (default pbx.test) with digest authentication against users
// from a generated db_text table (default 1001/pw1001, 1002/pw1002,
// 1003/pw1003), contacts in memory, Path support, record-route, routing and
// forking between registered users, force_rport and TCP/TLS contacts
// reached over their own connection, 407 for out-of-dialog requests from
// local users (unless NoCallerAuth), and 200 to OPTIONS for the server. UDP
// and TCP share one port; TLS (optional) uses a certificate made by
// SelfSignedCert. Kamailio.RPC runs kamcmd against the instance's own
// control socket; Contacts and ContactDetails parse ul.dump.
//
// Options for gateway tests: MaxExpires caps the registrations the
// registrar grants (default 3600s); TrustedSources lists loopback
// addresses whose REGISTERs carrying the header X-Sipwake-On-Behalf
// (OnBehalfHeader) are saved without a digest challenge.
// Kamailio.SetPassword changes a password at runtime (htable.sets), and
// Kamailio.SavedRegisters parses the "REGISTER saved ts=... ci=..." line
// the PBX logs at NOTICE for every saved REGISTER (also with Quiet), so a
// test can count REGISTERs per second.
//
// # SIPp
//
// RunSIPp runs a scenario to its end; StartSIPp returns once SIPp's socket
// is bound (for a UAS) and Wait collects the result. Every run traces its
// messages (SIPpResult.Messages), errors and <log> output. The embedded
// scenarios and their -key names (helpers build the maps):
//
//	register.xml        REGISTER + digest, RFC 8599 pn-* in the Contact URI.
//	                    me domain expires ctransport pn_provider pn_prid pn_param
//	                    cparams hparams                       (RegisterKeys)
//	register_plain.xml  REGISTER + digest, Contact params only from cparams.
//	                    me domain expires ctransport cparams hparams
//	                                                           (PlainRegisterKeys)
//	unregister.xml      REGISTER Expires: 0 + digest for one contact or "*".
//	                    me domain contact                      (UnregisterKeys)
//	uac_call.xml        INVITE, 407/401 answered, ACK, re-INVITE, BYE.
//	                    me peer domain                         (CallKeys)
//	uac_cancel.xml      INVITE, 407/401 answered, CANCEL after 180/183, 487, ACK.
//	                    me peer domain                         (CallKeys)
//	message.xml         MESSAGE, 407/401 answered, 200 or 202.  me peer domain text
//	uas_answer.xml      INVITE -> 100/180/200, re-INVITEs -> 200, BYE -> 200.  me
//	uas_ring.xml        INVITE -> 100/180, CANCEL -> 200 + 487, ACK.           me
//	uas_message.xml     MESSAGE -> 200, logs "MESSAGE from=... body=...".     (none)
//	register_wait.xml   REGISTER like register.xml, then waits (same socket or
//	                    TCP connection) until ooc_answer.xml, loaded with
//	                    OOCScenario, has answered an INVITE (call up to BYE) or
//	                    a MESSAGE; logs "INVITE ruri=..." / "MESSAGE body=...".
//	                    keys of register.xml
//
// Credentials go in SIPpOptions.Auth, the hold/ring time in Pause (-d).
// A UAS only listens: register its address first (register.xml from the
// same LocalPort over UDP, or register_wait.xml over TCP).
//
// # Softphones
//
// StartBaresip renders testdata/baresip/{config,accounts}.tmpl and drives
// baresip through ctrl_tcp (netstring JSON commands and events:
// REGISTER_OK, CALL_ESTABLISHED, CALL_CLOSED, ...). StartLinphone renders
// testdata/linphone/linphonerc.tmpl and drives linphone-daemon over one
// persistent connection to its command socket, polling pop-event for
// events. Both speak UDP, TCP or TLS to a loopback proxy (the PBX or
// sipwake) and trust a given CA file for TLS.
//
// Typical use:
//
//	pbx := testpeers.StartKamailio(t, testpeers.KamailioOptions{TLS: true})
//	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//	defer cancel()
//	_, err := testpeers.RunSIPp(t, ctx, testpeers.SIPpOptions{
//		Scenario: "register.xml",
//		Remote:   pbx.UDPAddr,
//		Auth:     [2]string{"1001", "pw1001"},
//		Keys:     testpeers.RegisterKeys("1001", pbx.Domain, "udp"),
//	})
//	contacts := pbx.Contacts(t, "1001")
//
// Start*, Run* and FreePort may call t.Fatal or t.Skip: call them from the
// test's own goroutine. The scenarios and templates are embedded, so tests in other packages
// (cmd/sipwake) use them without knowing where this directory is.
package testpeers
