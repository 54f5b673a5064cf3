package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// noEnv is an empty environment, so the process environment cannot leak into a test.
var noEnv = []string{}

// writeFile writes content to a new file in a temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// expectedDefaults is what LoadConfig returns with no file and no environment.
func expectedDefaults(t *testing.T) *Config {
	t.Helper()
	want := defaultConfig()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	want.NodeID = host
	return want
}

func TestDefaultConfigFileInSync(t *testing.T) {
	const file = "../../deploy/config/sipwake.yaml"
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v\nrun: go run ./cmd/sipwake config default > deploy/config/sipwake.yaml", err)
	}
	want := renderConfigYAML(defaultConfig(), defaultHeader)
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	line := 0
	for line < len(gl) && line < len(wl) && gl[line] == wl[line] {
		line++
	}
	at := func(l []string) string {
		if line < len(l) {
			return l[line]
		}
		return "<end of file>"
	}
	t.Fatalf("%s differs from the generated default config at line %d:\n  file:      %q\n  generated: %q\nrun: go run ./cmd/sipwake config default > deploy/config/sipwake.yaml",
		file, line+1, at(gl), at(wl))
}

func TestDefaultConfigYAMLLoadsBackAsDefaults(t *testing.T) {
	out := renderConfigYAML(defaultConfig(), defaultHeader)

	// Plain YAML: every key of the schema is present, nothing else.
	var doc map[string]any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("generated YAML does not parse: %v", err)
	}
	for _, k := range configKeys() {
		var cur any = doc
		for _, part := range strings.Split(k.Path, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("generated YAML: %s: parent is not a mapping", k.Path)
			}
			if cur, ok = m[part]; !ok {
				t.Fatalf("generated YAML lacks %s", k.Path)
			}
		}
	}

	// Strictly loaded, it equals the built-in defaults.
	p := writeFile(t, "sipwake.yaml", string(out))
	got, err := LoadConfig(p, noEnv)
	if err != nil {
		t.Fatalf("LoadConfig(generated): %v", err)
	}
	if want := expectedDefaults(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("generated YAML loads as\n%+v\nwant the defaults\n%+v", got, want)
	}
}

func TestLoadConfigNoFileIsDefaults(t *testing.T) {
	got, err := LoadConfig("", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if want := expectedDefaults(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}
	if problems := got.Validate(); len(problems) != 0 {
		t.Fatalf("defaults do not validate: %v", problems)
	}
}

func TestLoadConfigFile(t *testing.T) {
	p := writeFile(t, "c.yaml", `
node_id: edge-1
log: {level: debug}
sip:
  listen: ["udp://127.0.0.1:5070"]
  trusted_sources: [10.0.0.0/8, 192.0.2.7]
  tls: {min_version: 1.3}
upstream: {uri: "sip:pbx.example.com;transport=tcp", path: false}
store:
  driver: redis
  redis: {addresses: [a:6379, b:6379], db: 2}
push:
  fcm:
    projects:
      - project_id: app-1
        credentials_file: /etc/fcm.json
wake:
  caller_feedback: 183
  invite_hold_timeout: 45s
`)
	got, err := LoadConfig(p, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := defaultConfig()
	want.NodeID = "edge-1"
	want.Log.Level = "debug"
	want.SIP.Listen = []string{"udp://127.0.0.1:5070"}
	want.SIP.TrustedSources = []string{"10.0.0.0/8", "192.0.2.7"}
	want.SIP.TLS.MinVersion = "1.3"
	want.Upstream.URI = "sip:pbx.example.com;transport=tcp"
	want.Upstream.Path = false
	want.Store.Driver = "redis"
	want.Store.Redis.Addresses = []string{"a:6379", "b:6379"}
	want.Store.Redis.DB = 2
	want.Push.FCM.Projects = []FCMProject{{ProjectID: "app-1", CredentialsFile: "/etc/fcm.json"}}
	want.Wake.CallerFeedback = "183" // an unquoted YAML number is fine for a string key
	want.Wake.InviteHoldTimeout = 45 * time.Second
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}
}

// problemsOf returns the problems of a *ConfigError, failing the test for any other error.
func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got error %v (%T), want a *ConfigError", err, err)
	}
	out := make([]string, len(ce.Problems))
	for i, p := range ce.Problems {
		out[i] = p.String()
	}
	return out
}

func TestLoadConfigStrict(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		want []string // each must start one reported problem, in order
	}{
		{
			name: "unknown top-level key",
			yaml: "nodeid: x\n",
			want: []string{"nodeid: unknown key (did you mean node_id?)"},
		},
		{
			name: "unknown nested key",
			yaml: "sip:\n  lisen: [\"udp://0.0.0.0:5060\"]\n",
			want: []string{"sip.lisen: unknown key (did you mean sip.listen?)"},
		},
		{
			name: "unknown deeply nested key",
			yaml: "store:\n  redis:\n    adresses: [a:1]\n",
			want: []string{"store.redis.adresses: unknown key (did you mean store.redis.addresses?)"},
		},
		{
			name: "unknown key inside a list item",
			yaml: "push:\n  fcm:\n    projects:\n      - project_id: a\n        credentials_file: /x\n      - project_id: b\n        projct: c\n",
			want: []string{"push.fcm.projects[1].projct: unknown key"},
		},
		{
			name: "every unknown key is reported",
			yaml: "zzz: 1\nsip: {lisen: x}\nwake: {hold: 3s}\n",
			want: []string{"sip.lisen: unknown key", "wake.hold: unknown key", "zzz: unknown key"},
		},
		{
			name: "section given a scalar",
			yaml: "log: debug\n",
			want: []string{"log: expected a mapping, got a string"},
		},
		{
			name: "list item not a mapping",
			yaml: "push: {fcm: {projects: [app-1]}}\n",
			want: []string{"push.fcm.projects[0]: expected a mapping, got a string"},
		},
		{
			name: "duration without a unit word",
			yaml: "wake:\n  invite_hold_timeout: \"30 seconds\"\n",
			want: []string{`wake.invite_hold_timeout: invalid duration "30 seconds"`},
		},
		{
			name: "duration as a bare number",
			yaml: "registrar: {min_expires: 60}\n",
			want: []string{"registrar.min_expires: duration 60 has no unit"},
		},
		{
			name: "integer that is not one",
			yaml: "sip: {max_message_bytes: lots}\n",
			want: []string{`sip.max_message_bytes: expected an integer, got "lots"`},
		},
		{
			name: "boolean that is not one",
			yaml: "upstream: {path: maybe}\n",
			want: []string{`upstream.path: expected true or false, got "maybe"`},
		},
		{
			name: "several decode errors at once",
			yaml: "wake: {message_ttl: 1 week, invite_hold_timeout: soon}\nstore: {redis: {db: one}}\n",
			want: []string{"store.redis.db: expected an integer", "wake.invite_hold_timeout: invalid duration", "wake.message_ttl: invalid duration"},
		},
		{
			name: "bad duration from env",
			env:  []string{"SIPWAKE_DRAIN_TIMEOUT=a minute"},
			want: []string{`drain.timeout: invalid duration "a minute"`},
		},
		{
			name: "bad JSON list from env",
			env:  []string{"SIPWAKE_PUSH_FCM_PROJECTS=project-1"},
			want: []string{"push.fcm.projects: expected a JSON list of objects"},
		},
		{
			name: "unknown key inside a JSON list item from env",
			env:  []string{`SIPWAKE_PUSH_FCM_PROJECTS=[{"project_id":"a","credentials":"/x"}]`},
			want: []string{"push.fcm.projects[0].credentials: unknown key"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.yaml != "" {
				path = writeFile(t, "c.yaml", tt.yaml)
			}
			env := tt.env
			if env == nil {
				env = noEnv
			}
			cfg, err := LoadConfig(path, env)
			if err == nil {
				t.Fatalf("LoadConfig succeeded with %+v, want problems %q", cfg, tt.want)
			}
			got := problemsOf(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got problems %q, want %d: %q", got, len(tt.want), tt.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("problem %d = %q, want it to start with %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestLoadConfigFileErrors(t *testing.T) {
	t.Run("missing file given explicitly", func(t *testing.T) {
		_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.yaml"), noEnv)
		if err == nil || !strings.Contains(err.Error(), "no such file") {
			t.Fatalf("got %v, want a no such file error", err)
		}
	})
	t.Run("YAML syntax error", func(t *testing.T) {
		p := writeFile(t, "c.yaml", "sip: [unclosed\n")
		_, err := LoadConfig(p, noEnv)
		if err == nil || !strings.HasPrefix(err.Error(), "config "+p+": yaml: line 1: ") {
			t.Fatalf("got %v, want config %s: yaml: line 1: ...", err, p)
		}
	})
	t.Run("empty file is defaults", func(t *testing.T) {
		got, err := LoadConfig(writeFile(t, "c.yaml", ""), noEnv)
		if err != nil {
			t.Fatal(err)
		}
		if want := expectedDefaults(t); !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want defaults", got)
		}
	})
	t.Run("null section keeps defaults", func(t *testing.T) {
		got, err := LoadConfig(writeFile(t, "c.yaml", "upstream:\nlog:\n  level: warn\n"), noEnv)
		if err != nil {
			t.Fatal(err)
		}
		want := expectedDefaults(t)
		want.Log.Level = "warn"
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
}

// envValue returns a value for key distinct from its default and from every other key's,
// as an env string, and the Go value it must decode to.
func envValue(t *testing.T, i int, k configKey, def reflect.Value) (string, any) {
	t.Helper()
	switch {
	case k.Type == durationType:
		d := time.Duration(def.Int()) + time.Duration(i+1)*time.Second
		return formatDuration(d), d
	case k.Type.Kind() == reflect.String:
		s := fmt.Sprintf("v%d-%s", i, k.Path)
		return s, s
	case k.Type.Kind() == reflect.Bool:
		return fmt.Sprint(!def.Bool()), !def.Bool()
	case k.Type.Kind() == reflect.Int:
		n := int(def.Int()) + 1000 + i
		return fmt.Sprint(n), n
	case isObjectList(k.Type):
		// One item whose every string field holds a distinct value.
		item := reflect.New(k.Type.Elem()).Elem()
		obj := map[string]string{}
		for j := range item.NumField() {
			f := item.Type().Field(j)
			if f.Type.Kind() != reflect.String {
				t.Fatalf("%s: env test cannot fill list item field %s of type %s", k.Path, f.Name, f.Type)
			}
			v := fmt.Sprintf("v%d-%s", j, keyName(f))
			item.Field(j).SetString(v)
			obj[keyName(f)] = v
		}
		js, err := json.Marshal([]map[string]string{obj})
		if err != nil {
			t.Fatal(err)
		}
		list := reflect.MakeSlice(k.Type, 0, 1)
		return string(js), reflect.Append(list, item).Interface()
	case k.Type.Kind() == reflect.Slice && k.Type.Elem().Kind() == reflect.String:
		a, b := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
		return a + ", " + b, []string{a, b}
	}
	t.Fatalf("%s: the env test has no value for type %s; teach envValue and decodeHook about it", k.Path, k.Type)
	return "", nil
}

// TestEnvOverridesEveryKey sets a distinct non-default value for every leaf key through
// its SIPWAKE_* variable and checks that each one reaches the struct, so that no key can
// be added without env support. A file sets the same keys to other values: env wins.
func TestEnvOverridesEveryKey(t *testing.T) {
	keys := configKeys()
	def := reflect.ValueOf(defaultConfig()).Elem()
	var env []string
	want := map[string]any{}
	for i, k := range keys {
		s, v := envValue(t, i, k, def.FieldByIndex(k.Index))
		env = append(env, envName(k.Path)+"="+s)
		want[k.Path] = v
	}
	// Noise that must be ignored: a Kubernetes service link and an unrelated variable.
	env = append(env, "SIPWAKE_PORT=tcp://10.0.0.1:5060", "PATH=/usr/bin")
	file := writeFile(t, "c.yaml", "node_id: from-file\nstore: {driver: redis}\nwake: {invite_hold_timeout: 99s}\n")

	got, err := LoadConfig(file, env)
	if err != nil {
		t.Fatal(err)
	}
	gv := reflect.ValueOf(got).Elem()
	for _, k := range keys {
		if g := gv.FieldByIndex(k.Index).Interface(); !reflect.DeepEqual(g, want[k.Path]) {
			t.Errorf("%s (%s): got %#v, want %#v", k.Path, envName(k.Path), g, want[k.Path])
		}
	}
	if len(keys) < 45 {
		t.Errorf("only %d keys found; the schema walk lost some", len(keys))
	}
}

func TestEnvEmptyValueIsUnset(t *testing.T) {
	got, err := LoadConfig("", []string{"SIPWAKE_STORE_DRIVER=", "SIPWAKE_SIP_LISTEN="})
	if err != nil {
		t.Fatal(err)
	}
	if want := expectedDefaults(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want defaults", got)
	}
}

func TestEnvNamesAreUnique(t *testing.T) {
	seen := map[string]string{}
	for _, k := range configKeys() {
		n := envName(k.Path)
		if other, ok := seen[n]; ok {
			t.Errorf("%s and %s both map to %s", other, k.Path, n)
		}
		seen[n] = k.Path
	}
	if got := envName("sip.max_message_bytes"); got != "SIPWAKE_SIP_MAX_MESSAGE_BYTES" {
		t.Errorf("envName = %s", got)
	}
}

// TestEveryFieldDocumented checks the doc and mapstructure tags that the generated YAML
// and the loader rely on.
func TestEveryFieldDocumented(t *testing.T) {
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, prefix string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := keyName(f)
			if name == "" || name != strings.ToLower(name) || strings.Contains(name, "-") {
				t.Errorf("%s%s: mapstructure tag %q is not snake_case", prefix, f.Name, name)
			}
			doc := f.Tag.Get("doc")
			if doc == "" {
				t.Errorf("%s%s: no doc tag", prefix, name)
			}
			if isSection(f.Type) {
				walk(f.Type, prefix+name+".")
			}
			if isObjectList(f.Type) {
				walk(f.Type.Elem(), prefix+name+"[].")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                       "0s",
		30 * time.Second:        "30s",
		60 * time.Second:        "60s",
		time.Hour:               "1h",
		168 * time.Hour:         "168h",
		1500 * time.Millisecond: "1.5s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestYAMLStringRoundTrips(t *testing.T) {
	for _, s := range []string{"", "info", "180", "1.2", "true", "no", "null", "sipwake:", ":9090", "./data/x.db", "a b", `q"x`, "#x", "- x", "[x]", "ünï", "on_behalf"} {
		var got map[string]string
		if err := yaml.Unmarshal([]byte("k: "+yamlString(s)+"\n"), &got); err != nil {
			t.Errorf("%q written as %s: %v", s, yamlString(s), err)
			continue
		}
		if got["k"] != s {
			t.Errorf("%q written as %s reads back as %q", s, yamlString(s), got["k"])
		}
	}
}
