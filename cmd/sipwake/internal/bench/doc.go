// Package bench is the SIPp load comparison of sipwake against Kamailio on
// one machine; it has no code of its own outside its test, which only
// builds with the sipbench tag:
//
//	make bench
//	go test -tags sipbench -run '^TestSIPpLoad$' -count=1 -timeout 20m -v ./cmd/sipwake/internal/bench
//
// The test (sipp_load_test.go) builds the sipwake binary and runs it as a
// separate process with a generated YAML config, next to Kamailio, and
// drives both with the same SIPp commands, alternating runs and stepping
// the rate up:
//
//   - calls (invite): stateful INVITE forwarding, SIPp UAC (127.0.0.1) →
//     proxy → SIPp UAS (127.0.0.2), the proxy being Kamailio (tm + rr,
//     config in testdata/kamailio-proxy.cfg.tmpl) or sipwake (embedded
//     store, the UAS as upstream.uri, the called domain as
//     upstream.domains): the device → PBX direction, the UAS standing for
//     the PBX;
//   - calls to awake devices (pbx-to-device, only when SIPWAKE_BENCH_ONLY
//     names it): a PBX user, SIPp UAC (127.0.0.1), calls through a Kamailio
//     registrar (the testpeers PBX on 127.0.0.2, no caller auth) one of
//     SIPWAKE_BENCH_DEVICES devices, all the same answering SIPp UAS
//     (127.0.0.1), registered over UDP without push parameters from the
//     UAS's own port (testdata/register_device.xml) either directly at the
//     PBX (the Kamailio-alone baseline) or through sipwake (embedded
//     store), whose contact the PBX then relays to (Path): every INVITE
//     passes sipwake's registrar resolution and the wake module's fast
//     path to the forwarder. Two disjoint sets of devices, one per path;
//     the sipwake runs also report the INVITEs in and out of sipwake and
//     the calls its wake module held (none expected);
//   - REGISTER with digest authentication of 10,000 users against a
//     Kamailio registrar (the testpeers PBX on 127.0.0.2), sent to it
//     directly or through sipwake on the Redis store;
//   - REGISTER to a cheap registrar (register-uas): the same REGISTER
//     load through a proxy to a SIPp UAS that challenges, verifies the
//     digest and answers 200 (testdata/uas_register.xml), the proxy being
//     Kamailio (tm, as in the invite test) or sipwake on Redis. Behind the
//     Kamailio registrar the PBX itself needs about half of a core at
//     2,500 registrations/s, so on a small machine that test measures the
//     PBX as much as the proxy; this one measures the proxy.
//
// Each run is bounded (count and SIPp timeout); it reports the rate
// reached, failed calls, the CPU of the proxy's processes (utime+stime
// from /proc, 100% = one core), CPU-µs per call, RSS and PSS mid-run and
// ~10 s after the load. Results go to stdout and to bench-results/ at the
// module root (or SIPWAKE_BENCH_OUT). Knobs, all optional:
//
//	SIPWAKE_BENCH_SECS            seconds of traffic per run (6)
//	SIPWAKE_BENCH_INVITE_RATES    call rates of invite and pbx-to-device ("500 1000 2000 3000 4000 5000")
//	SIPWAKE_BENCH_REGISTER_RATES  REGISTER rates ("1000 2000 3000 5000 8000 10000 12000 15000")
//	SIPWAKE_BENCH_AFTER           wait before the after-load memory sample (10s)
//	SIPWAKE_BENCH_SETTLE          sipwake's last memory sample, after its last run (40s)
//	SIPWAKE_BENCH_BUDGET          wall-clock budget of the whole test (18m); rates that
//	                              would not fit are skipped and reported as such
//	SIPWAKE_BENCH_ONLY            the tests to run, among invite, pbx-to-device, register and register-uas
//	                              (comma or space separated; default "invite register register-uas")
//	SIPWAKE_BENCH_DEVICES         pbx-to-device: devices registered per path (500)
//	SIPWAKE_BENCH_REGISTER_STORE  sipwake's store in the REGISTER test: redis (default) or embedded
//	SIPWAKE_BENCH_BINARY          a prebuilt sipwake instead of building ./cmd/sipwake
//	SIPWAKE_BENCH_GOMAXPROCS      sipwake's GOMAXPROCS (default: the number of CPUs)
//	SIPWAKE_BENCH_KEEP_GOING      "1": run every rate even after a failed or saturated run
//	                              (overload figures; the highest passing rate is still the
//	                              one below the first failure)
//
// When sipwake is done with a test (its last rate, or a failed run), its
// memory is sampled once more 40 s after its last run (beyond the 32 s
// transaction timers), then it is ended with SIGQUIT, so that its log
// holds the stack of every goroutine still alive; the most common stacks
// are printed. Every process listens and sends on
// 127.0.0.0/8 only and is stopped by its PID (process group) when the test
// ends.
package bench
