package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/proxy"
)

func withTrace(tap *proxy.Tap) adminOpt { return func(d *adminDeps) { d.Trace = tap } }

func TestAdminTrace(t *testing.T) {
	tap := proxy.NewTap(proxy.TapConfig{})
	f := startAdmin(t, adminToken, withTrace(tap))

	code, body, _ := f.do(t, http.MethodGet, "/v1/trace", "")
	if code != 200 || body != `{"traces":[]}`+"\n" {
		t.Fatalf("GET none = %d %s", code, body)
	}
	code, body, _ = f.do(t, http.MethodPut, "/v1/trace", `{"aor": "1003@PBX.test", "duration": "10m"}`)
	var byAOR adminTrace
	if err := json.Unmarshal([]byte(body), &byAOR); err != nil || code != 200 || byAOR.ID == "" || byAOR.AOR != "sip:1003@pbx.test" ||
		byAOR.CallID != "" || time.Until(byAOR.ExpiresAt) < 9*time.Minute || time.Until(byAOR.ExpiresAt) > 10*time.Minute {
		t.Fatalf("PUT aor = %d %s", code, body)
	}
	code, body, _ = f.do(t, http.MethodPut, "/v1/trace", `{"call_id": "abc@pbx"}`)
	var byCall adminTrace
	if err := json.Unmarshal([]byte(body), &byCall); err != nil || code != 200 || byCall.CallID != "abc@pbx" ||
		time.Until(byCall.ExpiresAt) > proxy.DefaultTraceDuration || time.Until(byCall.ExpiresAt) < proxy.DefaultTraceDuration-time.Minute {
		t.Fatalf("PUT call_id = %d %s", code, body)
	}
	code, body, _ = f.do(t, http.MethodGet, "/v1/trace", "")
	var list adminTraces
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 || len(list.Traces) != 2 ||
		list.Traces[0].ID != byCall.ID || list.Traces[1].ID != byAOR.ID {
		t.Errorf("GET = %d %s", code, body)
	}
	if got := tap.Traces(); len(got) != 2 {
		t.Errorf("tap holds %d switches", len(got))
	}

	for _, c := range []struct{ body, want string }{
		{`{}`, "exactly one of aor and call_id"},
		{`{"aor": "sip:1003@pbx.test", "call_id": "x"}`, "exactly one of aor and call_id"},
		{`{"aor": "tel:+4930123"}`, "aor"},
		{`{"aor": "pbx.test"}`, "aor"},
		{`{"call_id": "x", "duration": "2h"}`, "at most 1h"},
		{`{"call_id": "x", "duration": "-5m"}`, "positive duration"},
		{`{"call_id": "x", "duration": "5"}`, "positive duration"},
		{`{"call_id": "x", "for": "5m"}`, "unknown field"},
		{`[`, "request body"},
	} {
		code, out, _ := f.do(t, http.MethodPut, "/v1/trace", c.body)
		wantError(t, c.body, code, out, http.StatusBadRequest, c.want)
	}

	code, body, _ = f.do(t, http.MethodDelete, "/v1/trace?id=nope", "")
	wantError(t, "DELETE unknown id", code, body, http.StatusNotFound, "nope")
	if code, body, _ = f.do(t, http.MethodDelete, "/v1/trace?id="+byAOR.ID, ""); code != 200 || body != `{"cleared":1}`+"\n" {
		t.Errorf("DELETE id = %d %s", code, body)
	}
	if code, body, _ = f.do(t, http.MethodDelete, "/v1/trace", ""); code != 200 || body != `{"cleared":1}`+"\n" || len(tap.Traces()) != 0 {
		t.Errorf("DELETE = %d %s", code, body)
	}
	code, body, hdr := f.do(t, http.MethodPost, "/v1/trace", "")
	wantError(t, "POST", code, body, http.StatusMethodNotAllowed, "")
	if hdr.Get("Allow") != "GET, PUT, DELETE" {
		t.Errorf("Allow %q", hdr.Get("Allow"))
	}

	g := startAdmin(t, "")
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		code, body, _ := g.do(t, m, "/v1/trace", `{"call_id":"x"}`)
		wantError(t, m+" without a tap", code, body, http.StatusServiceUnavailable, "trace")
	}
}

func TestCLIAdminTrace(t *testing.T) {
	tap := proxy.NewTap(proxy.TapConfig{})
	f := startAdmin(t, adminToken, withTrace(tap))
	cfg := adminCLIConfig(t, f, adminToken)

	if code, out, _ := runAdminCLI(t, "-c", cfg, "trace", "list"); code != exitOK || out != "no trace switches on\n" {
		t.Errorf("trace list (none) = %d %q", code, out)
	}
	code, out, errOut := runAdminCLI(t, "-c", cfg, "trace", "--aor", "1003@pbx.test", "--for", "10m")
	if code != exitOK || !strings.HasPrefix(out, "tracing sip:1003@pbx.test until ") || !strings.Contains(out, "(switch ") {
		t.Fatalf("trace --aor = %d %q %q", code, out, errOut)
	}
	code, out, _ = runAdminCLI(t, "-c", cfg, "-o", "json", "trace", "--call-id", "abc@pbx")
	var sw adminTrace
	if err := json.Unmarshal([]byte(out), &sw); err != nil || code != exitOK || sw.CallID != "abc@pbx" || sw.ID == "" {
		t.Fatalf("trace --call-id -o json = %d %q", code, out)
	}
	code, out, _ = runAdminCLI(t, "-c", cfg, "trace", "list")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if code != exitOK || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "CALL-ID") ||
		!strings.Contains(out, "sip:1003@pbx.test") || !strings.Contains(out, "abc@pbx") {
		t.Errorf("trace list = %d:\n%s", code, out)
	}
	code, out, _ = runAdminCLI(t, "-c", cfg, "-o", "json", "trace", "list")
	var list adminTraces
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != exitOK || len(list.Traces) != 2 {
		t.Errorf("trace list -o json = %d %q", code, out)
	}
	if code, out, _ := runAdminCLI(t, "-c", cfg, "trace", "off", "--id", sw.ID); code != exitOK || out != "turned 1 trace switch(es) off\n" {
		t.Errorf("trace off --id = %d %q", code, out)
	}
	if code, out, _ := runAdminCLI(t, "-c", cfg, "-o", "json", "trace", "off"); code != exitOK || out != "{\n  \"cleared\": 1\n}\n" {
		t.Errorf("trace off -o json = %d %q", code, out)
	}
	for _, args := range [][]string{
		{"trace"},
		{"trace", "--aor", "sip:1@x", "--call-id", "y"},
		{"trace", "--call-id", "y", "--for", "3h"},
		{"trace", "off", "--id", "nope"},
		{"trace", "list", "extra"},
	} {
		if code, _, errOut := runAdminCLI(t, append([]string{"-c", cfg}, args...)...); code != exitConfig || errOut == "" {
			t.Errorf("%v = %d %q, want %d and a message", args, code, errOut, exitConfig)
		}
	}
}
