package main

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsScrape is one parsed /metrics answer, by family name.
type metricsScrape map[string]*dto.MetricFamily

// scrapeMetrics GETs /metrics from the daemon's ops listener and parses
// it as the Prometheus text format.
func scrapeMetrics(t *testing.T, sw *running) metricsScrape {
	t.Helper()
	code, body := httpGet(t, "http://"+sw.ops.Addr().String()+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	return parseMetrics(t, body)
}

func parseMetrics(t testing.TB, body string) metricsScrape {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// labelsMatch reports whether m carries every name=value pair of want
// (subset match; "" matches an absent label, as in PromQL).
func labelsMatch(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// sampleValue is a counter's or gauge's value, a histogram's count.
func sampleValue(f *dto.MetricFamily, m *dto.Metric) float64 {
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	case dto.MetricType_SUMMARY:
		return float64(m.GetSummary().GetSampleCount())
	default:
		return m.GetUntyped().GetValue()
	}
}

// metricLabels turns "k", "v", ... into a map.
func metricLabels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// fmtLabels renders a label matcher as PromQL writes it.
func fmtLabels(m map[string]string) string {
	var ls []string
	for k, v := range m {
		ls = append(ls, k+"=\""+v+"\"")
	}
	sort.Strings(ls)
	return "{" + strings.Join(ls, ",") + "}"
}

// sum adds the values (histogram: the counts) of every sample of name
// whose labels include want; absent samples count 0.
func (s metricsScrape) sum(name string, want map[string]string) float64 {
	f := s[name]
	if f == nil {
		return 0
	}
	var v float64
	for _, m := range f.GetMetric() {
		if labelsMatch(m, want) {
			v += sampleValue(f, m)
		}
	}
	return v
}

// has reports whether a sample of name with labels including want exists.
func (s metricsScrape) has(name string, want map[string]string) bool {
	f := s[name]
	if f == nil {
		return false
	}
	for _, m := range f.GetMetric() {
		if labelsMatch(m, want) {
			return true
		}
	}
	return false
}

// labelNames lists the label names of a family's first sample.
func (s metricsScrape) labelNames(name string) []string {
	f := s[name]
	if f == nil || len(f.GetMetric()) == 0 {
		return nil
	}
	var out []string
	for _, lp := range f.GetMetric()[0].GetLabel() {
		out = append(out, lp.GetName())
	}
	sort.Strings(out)
	return out
}

// describe renders every sample of name, for failure messages.
func (s metricsScrape) describe(name string) string {
	f := s[name]
	if f == nil {
		return name + ": absent"
	}
	var lines []string
	for _, m := range f.GetMetric() {
		var ls []string
		for _, lp := range m.GetLabel() {
			ls = append(ls, lp.GetName()+"="+lp.GetValue())
		}
		lines = append(lines, fmt.Sprintf("%s{%s} %g", name, strings.Join(ls, ","), sampleValue(f, m)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// waitMetric scrapes until cond holds for the scrape, or fails after d.
func waitMetric(t *testing.T, sw *running, d time.Duration, what string, cond func(metricsScrape) bool) metricsScrape {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := scrapeMetrics(t, sw)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// metricsMessageScan is how long the pending-messages gauge may lag: it
// is set by the wake module's periodic scan of the store (every 30 s),
// plus slack.
const metricsMessageScan = 35 * time.Second

// TestE2EMetricsFlow runs a scripted flow against Kamailio and the fake
// APNs and FCM — two phones register and sleep, a MESSAGE is stored for
// the Android one, a call wakes the iPhone, which answers; then the
// Android phone wakes and takes its message — and checks on /metrics
// that every counter and gauge of INTERFACE.md moved by exactly what the
// flow did.
func TestE2EMetricsFlow(t *testing.T) {
	e := startWakeEnv(t, nil)
	before := scrapeMetrics(t, e.sw)

	// Before any traffic: not draining, built, with the runtime and
	// process collectors, and no held call or pending message.
	for _, c := range []struct {
		name string
		want float64
	}{
		{"sipwake_draining", 0},
		{"sipwake_wake_invites_held", 0},
		{"sipwake_wake_messages_pending", 0},
	} {
		if !before.has(c.name, nil) || before.sum(c.name, nil) != c.want {
			t.Errorf("at start: %s", before.describe(c.name))
		}
	}
	if got := strings.Join(before.labelNames("sipwake_build_info"), ","); got != "commit,go_version,sip_library,version" ||
		before.sum("sipwake_build_info", nil) != 1 {
		t.Errorf("sipwake_build_info labels %q: %s", got, before.describe("sipwake_build_info"))
	}
	for _, name := range []string{"go_gc_duration_seconds", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total"} {
		if !before.has(name, nil) {
			t.Errorf("%s missing", name)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"} {
		if before.sum(name, nil) <= 0 {
			t.Errorf("%s missing or zero: %s", name, before.describe(name))
		}
	}
	// Label sets of the families present from the start.
	for name, want := range map[string]string{
		"sipwake_store_errors_total":                 "backend,op",
		"sipwake_wake_message_deliveries_total":      "result",
		"sipwake_registrar_upstream_refreshes_total": "result",
		"sipwake_registrar_upstream_registrations":   "state",
	} {
		if got := strings.Join(before.labelNames(name), ","); got != want {
			t.Errorf("%s labels %q, want %q", name, got, want)
		}
	}

	// 1. Register: an iPhone (VoIP token) and an Android phone register
	// through the PBX's challenge, then their apps are suspended.
	e.sleepDevice(t, "1001", iosParams)
	e.sleepDevice(t, "1003", androidParms)

	// 2. A MESSAGE for the sleeping Android phone: stored, 202, one FCM
	// data push.
	res := e.sendMessage(t, "1003", "metrics flow")
	expectLines(t, "sender", res.Messages, "SIP/2.0 202")
	e.fcm.WaitRequests(t, 1, 5*time.Second)

	// 3. A call for the sleeping iPhone: held while one VoIP push wakes
	// it, delivered to its new connection, answered, re-INVITEd, hung up.
	caller := e.call(t, "1001", 20*time.Second)
	e.apns.WaitRequests(t, 1, 5*time.Second)
	if held := scrapeMetrics(t, e.sw); held.sum("sipwake_wake_invites_held", nil) != 1 {
		t.Errorf("while the call is held: %s", held.describe("sipwake_wake_invites_held"))
	}
	iphone := e.wakeDevice(t, "1001", iosParams)
	answer(t, iphone, e.sw.TCP)
	waitSIPp(t, "caller", caller)

	// 4. The message is still waiting: the periodic count of the store
	// sees it.
	waitMetric(t, e.sw, metricsMessageScan, "sipwake_wake_messages_pending is not 1", func(s metricsScrape) bool {
		return s.sum("sipwake_wake_messages_pending", nil) == 1
	})

	// 5. The Android phone wakes and takes its message.
	android := e.wakeDevice(t, "1003", androidParms)
	takeMessage(t, android, e.sw.TCP)
	waitNonePending(t, e)

	// Gauges: no call held any more, a binding per provider (the count is
	// cached for 15 s, so wait for a fresh one), the PBX answered.
	after := waitMetric(t, e.sw, 20*time.Second, "bindings gauge not apns=1 fcm=1", func(s metricsScrape) bool {
		return s.sum("sipwake_registrar_bindings", metricLabels("provider", "apns")) == 1 &&
			s.sum("sipwake_registrar_bindings", metricLabels("provider", "fcm")) == 1 &&
			s.sum("sipwake_wake_message_deliveries_total", metricLabels("result", "delivered")) == 1
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sipwake_wake_invites_held", nil, 0},
		{"sipwake_upstream_up", nil, 1},
		{"sipwake_draining", nil, 0},
		{"sipwake_registrar_bindings", metricLabels("provider", "none"), 0},
		{"sipwake_store_errors_total", nil, 0},
		{"sipwake_build_info", nil, 1},
	} {
		if got := after.sum(c.name, c.labels); got != c.want || !after.has(c.name, c.labels) {
			t.Errorf("after the flow %s%s = %g, want %g\n%s", c.name, fmtLabels(c.labels), got, c.want, after.describe(c.name))
		}
	}

	// Counters and histogram counts: exactly what the flow did.
	sip := func(method, dir string) map[string]string { return metricLabels("method", method, "direction", dir) }
	resp := func(method, class, dir string) map[string]string {
		return metricLabels("method", method, "code_class", class, "direction", dir)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		delta  float64
		why    string
	}{
		// Four registrations (two phones, each registering asleep then
		// woken), each a challenged REGISTER then an authenticated one,
		// relayed one for one.
		{"sipwake_sip_requests_total", sip("REGISTER", "in"), 8, "4 registrations x (challenged + authenticated)"},
		{"sipwake_sip_requests_total", sip("REGISTER", "out"), 8, "each relayed to the PBX"},
		{"sipwake_sip_responses_total", resp("REGISTER", "4xx", "in"), 4, "the PBX's 401s"},
		{"sipwake_sip_responses_total", resp("REGISTER", "4xx", "out"), 4, "relayed to the phones"},
		{"sipwake_sip_responses_total", resp("REGISTER", "2xx", "in"), 4, "the PBX's 200s"},
		{"sipwake_sip_responses_total", resp("REGISTER", "2xx", "out"), 4, "relayed to the phones"},
		{"sipwake_registrar_registrations_total", metricLabels("result", "challenged"), 4, "one challenge per registration"},
		{"sipwake_registrar_registrations_total", metricLabels("result", "ok"), 4, "four bindings stored"},
		// The call: the initial INVITE and the caller's re-INVITE, each
		// with its ACK, then the BYE, all from the PBX to the iPhone.
		{"sipwake_sip_requests_total", sip("INVITE", "in"), 2, "INVITE + re-INVITE from the PBX"},
		{"sipwake_sip_requests_total", sip("INVITE", "out"), 2, "both delivered to the woken iPhone"},
		{"sipwake_sip_requests_total", sip("ACK", "in"), 2, "an ACK per 2xx"},
		{"sipwake_sip_requests_total", sip("ACK", "out"), 2, "relayed"},
		{"sipwake_sip_requests_total", sip("BYE", "in"), 1, "the caller hangs up"},
		{"sipwake_sip_requests_total", sip("BYE", "out"), 1, "relayed"},
		{"sipwake_sip_responses_total", resp("INVITE", "2xx", "in"), 2, "the iPhone answers both INVITEs"},
		{"sipwake_sip_responses_total", resp("INVITE", "2xx", "out"), 2, "relayed to the PBX"},
		{"sipwake_sip_responses_total", resp("BYE", "2xx", "in"), 1, "the iPhone's 200 to the BYE"},
		{"sipwake_sip_responses_total", resp("BYE", "2xx", "out"), 1, "relayed"},
		{"sipwake_sip_responses_total", resp("INVITE", "4xx", "out"), 0, "no call failed"},
		{"sipwake_sip_responses_total", resp("INVITE", "5xx", "out"), 0, "no call failed"},
		// The message: in from the PBX (202), out to the woken phone (200).
		{"sipwake_sip_requests_total", sip("MESSAGE", "in"), 1, "one MESSAGE from the PBX"},
		{"sipwake_sip_requests_total", sip("MESSAGE", "out"), 1, "delivered once"},
		{"sipwake_sip_responses_total", resp("MESSAGE", "2xx", "out"), 1, "the 202"},
		{"sipwake_sip_responses_total", resp("MESSAGE", "2xx", "in"), 1, "the phone's 200"},
		// Pushes: one VoIP push for the call, one data push for the message.
		{"sipwake_push_requests_total", metricLabels("provider", "apns", "push_type", "voip", "result", "ok", "reason", ""), 1, "the call push"},
		{"sipwake_push_requests_total", metricLabels("provider", "fcm", "push_type", "data", "result", "ok", "reason", ""), 1, "the message push"},
		{"sipwake_push_requests_total", metricLabels("result", "error"), 0, "no push failed"},
		{"sipwake_push_request_duration_seconds", metricLabels("provider", "apns"), 1, "one APNs answer timed"},
		{"sipwake_push_request_duration_seconds", metricLabels("provider", "fcm"), 1, "one FCM answer timed"},
		{"sipwake_push_tokens_pruned_total", nil, 0, "no dead token"},
		// The hold and the wake-up.
		{"sipwake_wake_invite_hold_duration_seconds", metricLabels("outcome", "answered"), 1, "the held call was answered"},
		{"sipwake_wake_invite_hold_duration_seconds", nil, 1, "and it is the only hold"},
		{"sipwake_wake_push_to_register_seconds", nil, 1, "one device woken by a call push"},
		{"sipwake_wake_invite_delivery_seconds", nil, 1, "one held INVITE delivered"},
		// The stored message.
		{"sipwake_wake_messages_stored_total", nil, 1, "stored once, answered 202"},
		{"sipwake_wake_message_deliveries_total", metricLabels("result", "delivered"), 1, "delivered once"},
		{"sipwake_wake_message_deliveries_total", metricLabels("result", "failed"), 0, "no failed attempt"},
		{"sipwake_wake_message_deliveries_total", metricLabels("result", "refused"), 0, ""},
		{"sipwake_wake_message_deliveries_total", metricLabels("result", "expired"), 0, ""},
		{"sipwake_wake_message_delivery_delay_seconds", nil, 1, "one delivery timed"},
		// Nothing failed in the store or was dropped.
		{"sipwake_store_errors_total", nil, 0, "no store error"},
		{"sipwake_sip_messages_dropped_total", nil, 0, "nothing dropped"},
	} {
		if got := after.sum(c.name, c.labels) - before.sum(c.name, c.labels); got != c.delta {
			t.Errorf("%s%s moved by %g, want %g (%s)\n%s", c.name, fmtLabels(c.labels), got, c.delta, c.why, after.describe(c.name))
		}
	}
}
