package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestE2EOpsMetricsAndSecrets registers a device at debug log level, then
// checks /readyz, the metric names operators rely on, and that no push
// token, digest response or password appears in full in the logs.
func TestE2EOpsMetricsAndSecrets(t *testing.T) {
	kam := startPBX(t, testpeers.KamailioOptions{})
	sw := startDaemon(t, e2eConfig(t, kam, t.TempDir()))
	base := "http://" + sw.ops.Addr().String()

	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	if code, _ := httpGet(t, base+"/livez"); code != 200 {
		t.Fatalf("/livez = %d", code)
	}

	const token = "9a8b7c6d5e4f30211203a4b5c6d7e8f9ffeeddccbbaa99887766554433221100"
	ua := proxytest.NewUDP(t, "")
	cseq := 0
	res := rawRegister(t, ua, sw.UDP, "1001", "pw1001",
		";pn-provider=apns;pn-prid="+token+";pn-param=TEAM123456.com.example.phone.voip", "", &cseq)
	if res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	sw.waitBindings(t, "sip:1001@pbx.test", 1, rawWait)

	_, metrics := httpGet(t, base+"/metrics")
	for _, name := range []string{
		"sipwake_build_info", "sipwake_draining", "sipwake_sip_requests_total", "sipwake_sip_responses_total",
		"sipwake_upstream_up", "sipwake_registrar_registrations_total", "sipwake_registrar_bindings",
		"sipwake_store_errors_total",
	} {
		if !strings.Contains(metrics, "\n"+name) && !strings.HasPrefix(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if !strings.Contains(metrics, `sipwake_registrar_registrations_total{result="ok"} 1`) {
		t.Errorf("registrations_total{result=ok} is not 1")
	}
	if !strings.Contains(metrics, `sipwake_registrar_bindings{provider="apns"} 1`) {
		t.Errorf("bindings{provider=apns} is not 1")
	}

	logs := sw.logs.String()
	if !strings.Contains(logs, `"msg":"binding stored"`) {
		t.Fatalf("no 'binding stored' log line")
	}
	for _, secret := range []string{token, token[:20], "pw1001", digestResponse("1001", "pbx.test", "pw1001", "REGISTER", "sip:pbx.test", "")[:0] + "response=\\\""} {
		if secret != "" && strings.Contains(logs, secret) {
			t.Errorf("log holds a secret: %q", secret)
		}
	}
	if !strings.Contains(logs, `"pn_token":"…`+token[len(token)-6:]+`"`) {
		t.Errorf("log lacks the masked pn_token field")
	}
}
