package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/netip"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// validConfig is the defaults with a node id, as LoadConfig returns them.
func validConfig() *Config {
	c := defaultConfig()
	c.NodeID = "test-node"
	return c
}

// writeKeyPair writes a self-signed certificate and its key as PEM files.
func writeKeyPair(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sipwake.test"},
		DNSNames:     []string{"sipwake.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return certFile, keyFile
}

func TestValidateDefaults(t *testing.T) {
	if p := validConfig().Validate(); len(p) != 0 {
		t.Fatalf("defaults: %v", p)
	}
}

func TestValidate(t *testing.T) {
	certFile, keyFile := writeKeyPair(t)
	otherCert, _ := writeKeyPair(t)
	secret := writeFile(t, "secret", "s3cret\n")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	dir := t.TempDir()

	tests := []struct {
		name   string
		change func(c *Config)
		want   []string // problems, each "key: reason prefix"; none means valid
	}{
		{"bad log level", func(c *Config) { c.Log.Level = "verbose" }, []string{`log.level: "verbose" is not one of`}},
		{"bad log format", func(c *Config) { c.Log.Format = "text" }, []string{`log.format: "text" is not one of`}},
		{"empty node id", func(c *Config) { c.NodeID = " " }, []string{"node_id: must not be empty"}},
		{"no listener", func(c *Config) { c.SIP.Listen = nil }, []string{"sip.listen: needs at least one listener"}},
		{"bad listener scheme", func(c *Config) { c.SIP.Listen = []string{"udp://0.0.0.0:5060", "sctp://0.0.0.0:5060"} },
			[]string{`sip.listen[1]: scheme "sctp"`}},
		{"listener without port", func(c *Config) { c.SIP.Listen = []string{"udp://0.0.0.0"} }, []string{"sip.listen[0]: "}},
		{"listener with path", func(c *Config) { c.SIP.Listen = []string{"tcp://0.0.0.0:5060/x"} }, []string{"sip.listen[0]: "}},
		{"listener not a URL", func(c *Config) { c.SIP.Listen = []string{"0.0.0.0:5060"} }, []string{"sip.listen[0]: "}},
		{"listener twice", func(c *Config) { c.SIP.Listen = []string{"udp://:5060", "udp://:5060"} }, []string{"sip.listen[1]: udp://:5060 is listed twice"}},
		{"port zero and IPv6 are fine", func(c *Config) { c.SIP.Listen = []string{"udp://127.0.0.1:0", "tcp://[::1]:0", "ws://:8080"} }, nil},
		{"tls listener without certificate", func(c *Config) { c.SIP.Listen = []string{"tls://0.0.0.0:5061"} },
			[]string{"sip.tls.cert_file: required by tls:// and wss:// listeners"}},
		{"tls listener with missing certificate file", func(c *Config) {
			c.SIP.Listen = []string{"tls://0.0.0.0:5061"}
			c.SIP.TLS.CertFile, c.SIP.TLS.KeyFile = missing, keyFile
		}, []string{"sip.tls.cert_file: open " + missing + ": no such file or directory"}},
		{"certificate without key", func(c *Config) { c.SIP.TLS.CertFile = certFile }, []string{"sip.tls.key_file: required with sip.tls.cert_file"}},
		{"mismatched key pair", func(c *Config) {
			c.SIP.Listen = []string{"wss://0.0.0.0:443"}
			c.SIP.TLS.CertFile, c.SIP.TLS.KeyFile = otherCert, keyFile
		}, []string{"sip.tls.cert_file: cannot load key pair"}},
		{"key file is a directory", func(c *Config) {
			c.SIP.Listen = []string{"tls://0.0.0.0:5061"}
			c.SIP.TLS.CertFile, c.SIP.TLS.KeyFile = certFile, dir
		}, []string{"sip.tls.key_file: " + dir + " is a directory"}},
		{"good tls listener", func(c *Config) {
			c.SIP.Listen = []string{"tls://0.0.0.0:5061"}
			c.SIP.TLS.CertFile, c.SIP.TLS.KeyFile, c.SIP.TLS.MinVersion = certFile, keyFile, "1.3"
		}, nil},
		{"bad tls version", func(c *Config) { c.SIP.TLS.MinVersion = "1.1" }, []string{`sip.tls.min_version: "1.1" is not one of 1.2, 1.3`}},
		{"advertise forms", func(c *Config) { c.SIP.Advertise = "sip.example.com:5080" }, nil},
		{"advertise IPv6", func(c *Config) { c.SIP.Advertise = "[2001:db8::1]:5060" }, nil},
		{"bad advertise", func(c *Config) { c.SIP.Advertise = "sip.example.com:99999" }, []string{"sip.advertise: "}},
		{"bad advertise URL", func(c *Config) { c.SIP.Advertise = "sip:x@y" }, []string{"sip.advertise: "}},
		{"trusted sources", func(c *Config) { c.SIP.TrustedSources = []string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32"} }, nil},
		{"bad trusted source", func(c *Config) { c.SIP.TrustedSources = []string{"10.0.0.0/8", "10.0.0.0/33", "pbx"} },
			[]string{`sip.trusted_sources[1]: "10.0.0.0/33" is not a CIDR`, `sip.trusted_sources[2]: "pbx" is not an IP address or CIDR`}},
		{"message size too small", func(c *Config) { c.SIP.MaxMessageBytes = 1000 }, []string{"sip.max_message_bytes: 1000 is outside 1500..65535"}},
		{"message size too big", func(c *Config) { c.SIP.MaxMessageBytes = 70000 }, []string{"sip.max_message_bytes: 70000 is outside"}},
		{"upstream", func(c *Config) { c.Upstream.URI = "sip:pbx.example.com:5060;transport=udp" }, nil},
		{"upstream not SIP", func(c *Config) { c.Upstream.URI = "http://pbx.example.com" }, []string{`upstream.uri: scheme "http"`}},
		{"upstream without scheme", func(c *Config) { c.Upstream.URI = "pbx.example.com" }, []string{"upstream.uri: "}},
		{"upstream domains", func(c *Config) { c.Upstream.Domains = []string{"pbx.test", "bad domain"} }, []string{`upstream.domains[1]: "bad domain"`}},
		{"bad store driver", func(c *Config) { c.Store.Driver = "etcd" }, []string{`store.driver: "etcd" is not one of embedded, redis`}},
		{"embedded without path", func(c *Config) { c.Store.Embedded.Path = "" }, []string{"store.embedded.path: required"}},
		{"redis without addresses", func(c *Config) { c.Store.Driver = "redis"; c.Store.Redis.Addresses = nil }, []string{"store.redis.addresses: needs at least one"}},
		{"redis bad address", func(c *Config) {
			c.Store.Driver = "redis"
			c.Store.Redis.Addresses = []string{"redis:6379", ":6379", "redis"}
		},
			[]string{`store.redis.addresses[1]: ":6379" has no host`, `store.redis.addresses[2]: "redis" is not host:port`}},
		{"redis password file missing", func(c *Config) { c.Store.Redis.PasswordFile = missing }, []string{"store.redis.password_file: open "}},
		{"redis negative db", func(c *Config) { c.Store.Redis.DB = -1 }, []string{"store.redis.db: must not be negative"}},
		{"bad registrar mode", func(c *Config) { c.Registrar.Mode = "proxy" }, []string{`registrar.mode: "proxy" is not one of`}},
		{"expires order", func(c *Config) { c.Registrar.MinExpires = 2 * time.Hour }, []string{"registrar.default_expires: 1h is below registrar.min_expires (2h)"}},
		{"expires above max", func(c *Config) { c.Registrar.MaxExpires = 30 * time.Minute }, []string{"registrar.default_expires: 1h is above registrar.max_expires (1800s)"}},
		{"expires not positive", func(c *Config) { c.Registrar.MinExpires = 0 }, []string{"registrar.min_expires: must be positive"}},
		{"expires fraction", func(c *Config) { c.Registrar.MinExpires = 1500 * time.Millisecond }, []string{"registrar.min_expires: must be whole seconds"}},
		{"bindings per aor", func(c *Config) { c.Registrar.MaxBindingsPerAOR = 0 }, []string{"registrar.max_bindings_per_aor: must be at least 1"}},
		{"push ca file missing", func(c *Config) { c.Push.CAFile = missing }, []string{"push.ca_file: open "}},
		{"push ca file without certificate", func(c *Config) { c.Push.CAFile = secret }, []string{"push.ca_file: holds no PEM certificate"}},
		{"push ca file", func(c *Config) { c.Push.CAFile = certFile }, nil},
		{"apns key without ids", func(c *Config) { c.Push.APNs.KeyFile = secret },
			[]string{"push.apns.key_id: required with push.apns.key_file", "push.apns.team_id: required with push.apns.key_file"}},
		{"apns certificate missing", func(c *Config) { c.Push.APNs.Certificates = []string{certFile, missing} }, []string{"push.apns.certificates[1]: open "}},
		{"apns url not https", func(c *Config) { c.Push.APNs.URL = "http://127.0.0.1:8443" }, []string{`push.apns.url: scheme "http", want https`}},
		{"apns sandbox url without host", func(c *Config) { c.Push.APNs.SandboxURL = "https://" }, []string{"push.apns.sandbox_url: has no host"}},
		{"fcm projects", func(c *Config) {
			c.Push.FCM.Projects = []FCMProject{{ProjectID: "a", CredentialsFile: secret}, {ProjectID: "a", CredentialsFile: missing}, {}}
		}, []string{`push.fcm.projects[1].project_id: "a" is listed twice`, "push.fcm.projects[1].credentials_file: open ",
			"push.fcm.projects[2].project_id: required", "push.fcm.projects[2].credentials_file: required"}},
		{"fcm endpoint", func(c *Config) { c.Push.FCM.Endpoint = "https://127.0.0.1:9443/v1?x=1" }, []string{"push.fcm.endpoint: must not have a query"}},
		{"webhook", func(c *Config) { c.Push.Webhook.URL = "http://127.0.0.1:8080/push"; c.Push.Webhook.SecretFile = secret }, nil},
		{"webhook bad", func(c *Config) { c.Push.Webhook.URL = "ftp://x"; c.Push.Webhook.SecretFile = missing },
			[]string{`push.webhook.url: scheme "ftp", want http or https`, "push.webhook.secret_file: open "}},
		{"wake durations", func(c *Config) {
			c.Wake.InviteHoldTimeout = 0
			c.Wake.MessageAcceptTimeout = -time.Second
			c.Wake.MessageTTL = 0
		},
			[]string{"wake.invite_hold_timeout: must be positive", "wake.message_accept_timeout: must be positive", "wake.message_ttl: must be positive"}},
		{"caller feedback", func(c *Config) { c.Wake.CallerFeedback = "181" }, []string{`wake.caller_feedback: "181" is not one of none, 110, 180, 183`}},
		{"ops listen", func(c *Config) { c.Ops.Listen = "9090" }, []string{`ops.listen: "9090" is not host:port`}},
		{"admin listen empty", func(c *Config) { c.Admin.Listen = "" }, []string{"admin.listen: required, as host:port"}},
		{"admin same as ops", func(c *Config) { c.Admin.Listen = ":9090" },
			[]string{"admin.listen: same address as ops.listen", "admin.token_file: required when admin.listen (:9090) is not a loopback address"}},
		{"admin public with token", func(c *Config) { c.Admin.Listen = "0.0.0.0:9091"; c.Admin.TokenFile = secret }, nil},
		{"admin token missing", func(c *Config) { c.Admin.TokenFile = missing }, []string{"admin.token_file: open "}},
		{"drain", func(c *Config) { c.Drain.Delay = -1; c.Drain.Timeout = -1 }, []string{"drain.delay: must not be negative", "drain.timeout: must not be negative"}},
		{"drain zero is fine", func(c *Config) { c.Drain.Delay = 0; c.Drain.Timeout = 0 }, nil},
		{"hep", func(c *Config) {
			c.HEP.Address, c.HEP.NodeName, c.HEP.PasswordFile, c.HEP.CaptureID = "tcp://homer.example.com:9060", "edge-1", secret, 4294967295
		}, nil},
		{"hep bad", func(c *Config) {
			c.HEP.Address, c.HEP.CaptureID, c.HEP.NodeName, c.HEP.PasswordFile = "http://homer:9060", -1, "edge 1", missing
		}, []string{`hep.address: address "http://homer:9060" is not udp://host:port or tcp://host:port`, "hep.capture_id: -1 is outside 0..4294967295",
			"hep.node_name: must not contain", "hep.password_file: open "}},
		{"hep address without port, capture id too big", func(c *Config) { c.HEP.Address, c.HEP.CaptureID = "udp://homer", 1<<32 },
			[]string{`hep.address: address "udp://homer" has no host:port`, "hep.capture_id: 4294967296 is outside"}},
		{"hep empty password", func(c *Config) { c.HEP.PasswordFile = writeFile(t, "hep.pw", "\n") }, []string{"hep.password_file: first line is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(c)
			got := c.Validate()
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems %q, want %d: %q", len(got), got, len(tt.want), tt.want)
			}
			for i, p := range got {
				if !strings.HasPrefix(p.String(), tt.want[i]) {
					t.Errorf("problem %d = %q, want it to start with %q", i, p.String(), tt.want[i])
				}
				if r := p.Reason; r == "" || strings.HasSuffix(r, ".") {
					t.Errorf("problem %d reason %q: want non-empty without trailing punctuation", i, r)
				}
			}
		})
	}
}

// TestValidateReportsEveryProblem breaks many keys at once and expects one problem each.
func TestValidateReportsEveryProblem(t *testing.T) {
	c := validConfig()
	c.Log.Level = "loud"
	c.SIP.Listen = []string{"bogus"}
	c.Store.Driver = "none"
	c.Registrar.MaxBindingsPerAOR = -1
	c.Wake.CallerFeedback = "ring"
	c.Ops.Listen = "nope"
	got := c.Validate()
	keys := make([]string, len(got))
	for i, p := range got {
		keys[i] = p.Key
	}
	want := []string{"log.level", "sip.listen[0]", "store.driver", "registrar.max_bindings_per_aor", "wake.caller_feedback", "ops.listen"}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("problem keys %q, want %q", keys, want)
	}
}

func TestAccessors(t *testing.T) {
	c := validConfig()
	c.SIP.Listen = []string{"udp://0.0.0.0:5060", "TLS://[::]:5061", "bogus", "wss://:443/"}
	c.SIP.TrustedSources = []string{"10.1.2.3/8", "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.9", "junk"}
	c.SIP.TLS.MinVersion = "1.3"

	wantListen := []ListenAddr{{"udp", "0.0.0.0:5060"}, {"tls", "[::]:5061"}, {"wss", ":443"}}
	if got := c.ListenURLs(); !reflect.DeepEqual(got, wantListen) {
		t.Errorf("ListenURLs = %v, want %v", got, wantListen)
	}
	wantPrefixes := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.0.2.1/32"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("192.0.2.9/32"),
	}
	if got := c.TrustedPrefixes(); !reflect.DeepEqual(got, wantPrefixes) {
		t.Errorf("TrustedPrefixes = %v, want %v", got, wantPrefixes)
	}
	if got := c.TLSMinVersion(); got != tls.VersionTLS13 {
		t.Errorf("TLSMinVersion = %x", got)
	}
	if got := defaultConfig().TLSMinVersion(); got != tls.VersionTLS12 {
		t.Errorf("default TLSMinVersion = %x", got)
	}
}

// runCLI runs the command line in-process and returns the exit status and both outputs.
func runCLI(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if env == nil {
		env = noEnv
	}
	code := run(ctx, args, env, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestCLIValidate(t *testing.T) {
	good := writeFile(t, "good.yaml", "log: {level: debug}\n")
	bad := writeFile(t, "bad.yaml", "log: {level: loud}\nsip: {listen: [\"sctp://0.0.0.0:1\"]}\nregistrar: {max_bindings_per_aor: 0}\n")
	strictBad := writeFile(t, "strict.yaml", "sip: {lisen: x}\nwake: {invite_hold_timeout: 30 seconds}\n")

	tests := []struct {
		name       string
		env        []string
		args       []string
		code       int
		stdout     string   // exact
		stderrHave []string // each a whole line of stderr
	}{
		{name: "defaults", args: []string{"validate"}, code: 0, stdout: "config ok\n"},
		{name: "good file", args: []string{"validate", "-c", good}, code: 0, stdout: "config ok\n"},
		{name: "good file from SIPWAKE_CONFIG", env: []string{"SIPWAKE_CONFIG=" + good}, args: []string{"validate"}, code: 0, stdout: "config ok\n"},
		{name: "bad values", args: []string{"validate", "--config", bad}, code: 1, stderrHave: []string{
			`log.level: "loud" is not one of debug, info, warn, error`,
			`sip.listen[0]: scheme "sctp" in "sctp://0.0.0.0:1" is not one of udp, tcp, tls, ws, wss`,
			"registrar.max_bindings_per_aor: must be at least 1",
		}},
		{name: "bad values from env", env: []string{"SIPWAKE_STORE_DRIVER=sql", "SIPWAKE_SIP_LISTEN=udp://:5060,udp://:5060"}, args: []string{"validate"}, code: 1, stderrHave: []string{
			`sip.listen[1]: udp://:5060 is listed twice`,
			`store.driver: "sql" is not one of embedded, redis`,
		}},
		{name: "strict decoding", args: []string{"validate", "-c", strictBad}, code: 1, stderrHave: []string{
			"sip.lisen: unknown key (did you mean sip.listen?)",
		}},
		{name: "flag beats env", env: []string{"SIPWAKE_CONFIG=" + bad}, args: []string{"validate", "-c", good}, code: 0, stdout: "config ok\n"},
		{name: "missing file", args: []string{"validate", "-c", "/nonexistent/sipwake.yaml"}, code: 1, stderrHave: []string{
			"config /nonexistent/sipwake.yaml: open /nonexistent/sipwake.yaml: no such file or directory",
		}},
		{name: "json ok", args: []string{"validate", "-o", "json"}, code: 0, stdout: "{\n  \"ok\": true,\n  \"problems\": []\n}\n"},
		{name: "unknown command", args: []string{"bogus"}, code: 1, stderrHave: []string{`sipwake: unknown command "bogus" for "sipwake"`, "run 'sipwake --help' for usage"}},
		{name: "unknown config subcommand", args: []string{"config", "bogus"}, code: 1, stderrHave: []string{`sipwake: unknown command "bogus" for "sipwake config"`}},
		{name: "unknown flag", args: []string{"validate", "--frobnicate"}, code: 1, stderrHave: []string{"sipwake: unknown flag: --frobnicate"}},
		{name: "extra argument", args: []string{"validate", "x"}, code: 1},
		{name: "bad output format", args: []string{"version", "-o", "yaml"}, code: 1, stderrHave: []string{`sipwake: -o "yaml": want table or json`}},
		{name: "serve refuses a bad config", args: []string{"serve", "-c", bad}, code: 1, stderrHave: []string{"registrar.max_bindings_per_aor: must be at least 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.env, tt.args...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			if tt.stdout != "" && stdout != tt.stdout {
				t.Errorf("stdout %q, want %q", stdout, tt.stdout)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			for _, want := range tt.stderrHave {
				found := false
				for _, l := range lines {
					found = found || l == want
				}
				if !found {
					t.Errorf("stderr lacks line %q:\n%s", want, stderr)
				}
			}
		})
	}
}

func TestCLIValidateJSONProblems(t *testing.T) {
	code, stdout, _ := runCLI(t, []string{"SIPWAKE_LOG_FORMAT=xml"}, "validate", "-o", "json")
	if code != 1 {
		t.Fatalf("exit status %d, want 1", code)
	}
	var res validateResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("%v in %q", err, stdout)
	}
	want := validateResult{OK: false, Problems: []Problem{{Key: "log.format", Reason: `"xml" is not one of json, console`}}}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("got %+v, want %+v", res, want)
	}
}

func TestCLIConfigDefaultAndShow(t *testing.T) {
	code, stdout, stderr := runCLI(t, nil, "config", "default")
	if code != 0 || stdout != string(renderConfigYAML(defaultConfig(), defaultHeader)) {
		t.Fatalf("config default: status %d, stderr %q, stdout differs from renderConfigYAML", code, stderr)
	}
	code, stdout, stderr = runCLI(t, []string{"SIPWAKE_STORE_DRIVER=redis", "SIPWAKE_NODE_ID=n1"}, "config", "show")
	if code != 0 || !strings.Contains(stdout, "\n  driver: redis\n") || !strings.Contains(stdout, "\nnode_id: n1\n") {
		t.Fatalf("config show: status %d, stderr %q, stdout:\n%s", code, stderr, stdout)
	}
	// -o json: the same document as one JSON object.
	for _, args := range [][]string{{"-o", "json", "config", "default"}, {"-o", "json", "config", "show"}} {
		code, stdout, stderr = runCLI(t, []string{"SIPWAKE_NODE_ID=n1"}, args...)
		var doc struct {
			NodeID string `json:"node_id"`
			SIP    struct {
				MaxMessageBytes int `json:"max_message_bytes"`
			} `json:"sip"`
			Upstream struct {
				OptionsInterval string `json:"options_interval"`
			} `json:"upstream"`
		}
		if code != 0 || json.Unmarshal([]byte(stdout), &doc) != nil || doc.SIP.MaxMessageBytes != defaultConfig().SIP.MaxMessageBytes ||
			doc.Upstream.OptionsInterval != "30s" || (args[3] == "show") != (doc.NodeID == "n1") {
			t.Fatalf("%v: status %d, stderr %q, decoded %+v from:\n%s", args, code, stderr, doc, stdout)
		}
	}
	code, _, stderr = runCLI(t, []string{"SIPWAKE_DRAIN_DELAY=x"}, "config", "show")
	if code != 1 || !strings.HasPrefix(stderr, `drain.delay: invalid duration "x"`) {
		t.Fatalf("config show with a bad env: status %d, stderr %q", code, stderr)
	}
}

func TestCLIVersion(t *testing.T) {
	code, stdout, _ := runCLI(t, nil, "version")
	if code != 0 {
		t.Fatalf("exit status %d", code)
	}
	for _, want := range []string{"version:", "commit:", "go:          " + runtime.Version(), "sip library: github.com/emiago/sipgo v"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("version output lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = runCLI(t, nil, "version", "-o", "json")
	var bi buildInfo
	if err := json.Unmarshal([]byte(stdout), &bi); code != 0 || err != nil {
		t.Fatalf("version -o json: status %d, %v: %q", code, err, stdout)
	}
	if bi.Version == "" || bi.Commit == "" || bi.GoVersion != runtime.Version() || !strings.HasPrefix(bi.SIPLibrary, "github.com/emiago/sipgo v1.") {
		t.Errorf("version -o json = %+v", bi)
	}
}

func TestExitCodes(t *testing.T) {
	if errors.Unwrap(unavailable(errors.New("store down"))).Error() != "store down" {
		t.Fatal("unavailable does not wrap its error")
	}
	var ee *exitError
	if !errors.As(unavailable(errors.New("x")), &ee) || ee.code != exitUnavailable {
		t.Fatalf("unavailable code = %v", ee)
	}
}

// TestBinaryValidate builds the real binary and runs it with a bad config.
func TestBinaryValidate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "sipwake")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	bad := writeFile(t, "bad.yaml", "wake:\n  caller_feedback: \"181\"\nsip:\n  trusted_sources: [not-a-cidr]\n")
	cmd := exec.CommandContext(ctx, bin, "validate", "-c", bad)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var xe *exec.ExitError
	if !errors.As(err, &xe) || xe.ExitCode() != 1 {
		t.Fatalf("sipwake validate: %v, want exit status 1; stderr %q", err, stderr.String())
	}
	want := "sip.trusted_sources[0]: \"not-a-cidr\" is not an IP address or CIDR\n" +
		"wake.caller_feedback: \"181\" is not one of none, 110, 180, 183\n"
	if stderr.String() != want || stdout.Len() != 0 {
		t.Fatalf("stderr %q, stdout %q; want stderr %q", stderr.String(), stdout.String(), want)
	}

	cmd = exec.CommandContext(ctx, bin, "validate")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "SIPWAKE_REGISTRAR_MIN_EXPIRES=30s"}
	out, err := cmd.Output()
	if err != nil || string(out) != "config ok\n" {
		t.Fatalf("sipwake validate with defaults: %v, %q", err, out)
	}
}
