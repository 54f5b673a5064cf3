package charttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsyaml "sigs.k8s.io/yaml"
)

// The image's user (deploy/docker/Dockerfile: USER 65532:65532).
const nonRootID = 65532

// scenario is one set of values the chart must render.
type scenario struct {
	name   string
	values string // file under testdata; "" for the defaults
}

var scenarios = []scenario{
	{"default", ""},
	{"full", "full-values.yaml"},
	{"loadbalancer", "loadbalancer-values.yaml"},
	{"redis-dependency", "redis-dependency-values.yaml"},
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func loadValues(t *testing.T, file string) map[string]any {
	t.Helper()
	if file == "" {
		return nil
	}
	v, err := ReadValuesFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLint runs Helm's linter (helm lint --strict, as a library) with the
// default values and with every scenario's values. The one warning allowed is
// the redis dependency missing from charts/: it is fetched by Helm, not
// vendored.
func TestLint(t *testing.T) {
	root := repoRoot(t)
	caps, err := Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			vals := loadValues(t, sc.values)
			if vals == nil {
				vals = map[string]any{}
			}
			l := lint.AllWithKubeVersion(filepath.Join(root, ChartDir), vals, Namespace, &caps.KubeVersion)
			for _, m := range l.Messages {
				switch {
				case m.Severity == support.InfoSev:
					t.Logf("lint: %s", m)
				case m.Severity == support.WarningSev && strings.Contains(m.Err.Error(), "chart directory is missing these dependencies: redis"):
					t.Logf("lint (expected, the dependency is not vendored): %s", m)
				default:
					t.Errorf("lint: %s", m)
				}
			}
		})
	}
}

// rendered caches the renders, one per scenario.
var rendered sync.Map

func render(t *testing.T, sc scenario) map[string]string {
	t.Helper()
	if v, ok := rendered.Load(sc.name); ok {
		return v.(map[string]string)
	}
	files, err := Render(repoRoot(t), loadValues(t, sc.values))
	if err != nil {
		t.Fatalf("render %s: %v", sc.name, err)
	}
	rendered.Store(sc.name, files)
	return files
}

// objects is a render decoded into typed objects.
type objects struct {
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	serviceAccounts []*corev1.ServiceAccount
	pvcs            []*corev1.PersistentVolumeClaim
	pdbs            []*policyv1.PodDisruptionBudget
	serviceMonitors []*ServiceMonitor
}

var codecs = func() serializer.CodecFactory {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict)
}()

// decodeStrict decodes one document into its Kubernetes API type: an unknown
// or duplicated field, a wrong type or an unknown kind fails.
func decodeStrict(doc Document) (any, error) {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal([]byte(doc.Body), &tm); err != nil {
		return nil, err
	}
	if tm.APIVersion == "monitoring.coreos.com/v1" && tm.Kind == "ServiceMonitor" {
		var sm ServiceMonitor
		if err := sigsyaml.UnmarshalStrict([]byte(doc.Body), &sm); err != nil {
			return nil, err
		}
		return &sm, nil
	}
	obj, gvk, err := codecs.UniversalDeserializer().Decode([]byte(doc.Body), nil, nil)
	if err != nil {
		return nil, err
	}
	if gvk.GroupVersion().String() != tm.APIVersion || gvk.Kind != tm.Kind {
		return nil, fmt.Errorf("decoded as %v, document says %s %s", gvk, tm.APIVersion, tm.Kind)
	}
	return obj, nil
}

func decodeAll(t *testing.T, files map[string]string) objects {
	t.Helper()
	var o objects
	for _, doc := range Documents(files) {
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Errorf("%s: %v\n%s", doc.Template, err, doc.Body)
			continue
		}
		switch x := obj.(type) {
		case *appsv1.Deployment:
			o.deployments = append(o.deployments, x)
		case *corev1.Service:
			o.services = append(o.services, x)
		case *corev1.ConfigMap:
			o.configMaps = append(o.configMaps, x)
		case *corev1.ServiceAccount:
			o.serviceAccounts = append(o.serviceAccounts, x)
		case *corev1.PersistentVolumeClaim:
			o.pvcs = append(o.pvcs, x)
		case *policyv1.PodDisruptionBudget:
			o.pdbs = append(o.pdbs, x)
		case *ServiceMonitor:
			o.serviceMonitors = append(o.serviceMonitors, x)
		default:
			t.Errorf("%s: unexpected object %T", doc.Template, obj)
		}
	}
	if len(o.deployments) != 1 || len(o.configMaps) != 1 {
		t.Fatalf("want one Deployment and one ConfigMap, got %d and %d", len(o.deployments), len(o.configMaps))
	}
	return o
}

// TestStrictDecode renders every scenario and decodes each object strictly.
func TestStrictDecode(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			o := decodeAll(t, render(t, sc))
			kinds := map[string]int{
				"Deployment": len(o.deployments), "Service": len(o.services), "ConfigMap": len(o.configMaps),
				"ServiceAccount": len(o.serviceAccounts), "PersistentVolumeClaim": len(o.pvcs),
				"PodDisruptionBudget": len(o.pdbs), "ServiceMonitor": len(o.serviceMonitors),
			}
			t.Logf("objects: %v", kinds)
		})
	}
}

// The decoder must refuse what a typo in a template would produce.
func TestStrictDecodeRefusesUnknownFields(t *testing.T) {
	for _, body := range []string{
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  externalTrafficPolicyy: Local\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n          securitycontext: {}\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n    - port: \"many\"\n",
		"apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  endpoints:\n    - port: ops\n      intervall: 30s\n",
		"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
	} {
		if _, err := decodeStrict(Document{Template: "t.yaml", Body: body}); err == nil {
			t.Errorf("decoded without error:\n%s", body)
		}
	}
}

// TestSemantics checks what the types cannot: names, references between
// objects, probes, security, traffic policy, the grace period and the
// config file.
func TestSemantics(t *testing.T) {
	root := repoRoot(t)
	refKeys := referenceKeys(t, root)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			files := render(t, sc)
			vals := coalescedValues(t, sc)
			o := decodeAll(t, files)
			dep := o.deployments[0]
			pod := dep.Spec.Template
			checkNames(t, o)

			sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
			if err != nil {
				t.Fatal(err)
			}
			podLabels := labels.Set(pod.Labels)
			if !sel.Matches(podLabels) {
				t.Errorf("deployment selector %v does not match its pod labels %v", dep.Spec.Selector, pod.Labels)
			}
			if len(pod.Spec.Containers) != 1 {
				t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
			}
			c := pod.Spec.Containers[0]
			ports := map[string]corev1.ContainerPort{}
			for _, p := range c.Ports {
				if len(p.Name) > 15 || len(validation.IsValidPortName(p.Name)) > 0 {
					t.Errorf("container port name %q is not a valid port name", p.Name)
				}
				if pod.Spec.HostNetwork && p.HostPort != p.ContainerPort {
					t.Errorf("hostNetwork: port %s hostPort %d != containerPort %d", p.Name, p.HostPort, p.ContainerPort)
				}
				ports[p.Name] = p
			}
			opsPort := intValue(t, vals, "ops.port")
			if p, ok := ports["ops"]; !ok || int(p.ContainerPort) != opsPort || p.Protocol != corev1.ProtocolTCP {
				t.Errorf("container port ops = %+v, want TCP %d", p, opsPort)
			}

			// Probes on the ops port.
			for name, pr := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				want := "/livez"
				if name == "readiness" {
					want = "/readyz"
				}
				if pr == nil || pr.HTTPGet == nil {
					t.Errorf("%s probe: missing or not httpGet", name)
					continue
				}
				if pr.HTTPGet.Path != want || pr.HTTPGet.Port != intstr.FromString("ops") {
					t.Errorf("%s probe: %s on %s, want %s on ops", name, pr.HTTPGet.Path, pr.HTTPGet.Port.String(), want)
				}
			}

			// Security context, pod and container.
			psc, csc := pod.Spec.SecurityContext, c.SecurityContext
			if psc == nil || csc == nil {
				t.Fatal("missing pod or container securityContext")
			}
			if !isTrue(psc.RunAsNonRoot) || !isTrue(csc.RunAsNonRoot) {
				t.Error("runAsNonRoot is not true on pod and container")
			}
			for _, id := range []*int64{psc.RunAsUser, psc.RunAsGroup, psc.FSGroup, csc.RunAsUser, csc.RunAsGroup} {
				if id == nil || *id != nonRootID {
					t.Errorf("runAsUser/runAsGroup/fsGroup %v, want %d", id, nonRootID)
				}
			}
			if !isTrue(csc.ReadOnlyRootFilesystem) {
				t.Error("readOnlyRootFilesystem is not true")
			}
			if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation is not false")
			}
			if csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0 {
				t.Errorf("capabilities %+v, want drop [ALL] and nothing added", csc.Capabilities)
			}
			for _, sp := range []*corev1.SeccompProfile{psc.SeccompProfile, csc.SeccompProfile} {
				if sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("seccompProfile %+v, want RuntimeDefault", sp)
				}
			}
			if isTrue(pod.Spec.AutomountServiceAccountToken) || pod.Spec.AutomountServiceAccountToken == nil {
				t.Error("the pod mounts a service account token; sipwake needs none")
			}

			// Volumes: every mount names a volume with exactly one source.
			vols := map[string]corev1.Volume{}
			for _, v := range pod.Spec.Volumes {
				vols[v.Name] = v
				if n := volumeSources(v); n != 1 {
					t.Errorf("volume %s has %d sources", v.Name, n)
				}
			}
			for _, m := range c.VolumeMounts {
				if _, ok := vols[m.Name]; !ok {
					t.Errorf("volumeMount %s names no volume", m.Name)
				}
			}
			if m, ok := mountAt(c, "/var/lib/sipwake"); !ok {
				t.Error("no data volume at /var/lib/sipwake")
			} else if boolValue(t, vals, "persistence.enabled") != (vols[m.Name].PersistentVolumeClaim != nil) {
				t.Errorf("data volume %+v does not follow persistence.enabled", vols[m.Name].VolumeSource)
			}

			// Config: YAML, only known keys, consistent with the pod.
			cm := o.configMaps[0]
			text, ok := cm.Data["sipwake.yaml"]
			if !ok {
				t.Fatal("ConfigMap has no sipwake.yaml")
			}
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
				t.Fatalf("sipwake.yaml: %v", err)
			}
			for _, k := range configKeys(cfg, "") {
				if !refKeys[k] {
					t.Errorf("sipwake.yaml key %s is not in %s", k, ReferenceYAML)
				}
			}
			if m, ok := mountAt(c, "/etc/sipwake/sipwake.yaml"); !ok || vols[m.Name].ConfigMap == nil || vols[m.Name].ConfigMap.Name != cm.Name {
				t.Errorf("sipwake.yaml is not mounted from ConfigMap %s", cm.Name)
			}
			if !slices.Equal(c.Args, []string{"serve", "-c", "/etc/sipwake/sipwake.yaml"}) {
				t.Errorf("args %v", c.Args)
			}
			if want := fmt.Sprintf(":%d", opsPort); cfg["ops"].(map[string]any)["listen"] != want {
				t.Errorf("ops.listen %v, want %s", cfg["ops"].(map[string]any)["listen"], want)
			}
			checkListeners(t, cfg, ports)
			checkSecretFiles(t, cfg, c, vols)

			// Store and replicas.
			driver, _ := lookup(cfg, "store.driver").(string)
			if *dep.Spec.Replicas > 1 && driver != "redis" {
				t.Errorf("%d replicas on store %q", *dep.Spec.Replicas, driver)
			}
			if boolValue(t, vals, "redis.enabled") {
				if driver != "redis" || !slices.Equal(toStrings(lookup(cfg, "store.redis.addresses")), []string{ReleaseName + "-redis-master:6379"}) {
					t.Errorf("redis.enabled: store %v, addresses %v", driver, lookup(cfg, "store.redis.addresses"))
				}
				if lookup(cfg, "store.redis.password_file") != "/etc/sipwake/secrets/redis/redis-password" {
					t.Errorf("redis.enabled: password_file %v", lookup(cfg, "store.redis.password_file"))
				}
				if v := secretVolume(vols, ReleaseName+"-redis"); v == nil {
					t.Error("redis.enabled: the redis chart's Secret is not mounted")
				}
			}

			// Grace period = drain.delay + drain.timeout + margin, unless set.
			wantGrace := int64(durationValue(t, cfg, "drain.delay", 5*time.Second)+durationValue(t, cfg, "drain.timeout", 60*time.Second)) + int64(intValue(t, vals, "drainMarginSeconds"))
			if v, ok := vals["terminationGracePeriodSeconds"]; ok && v != nil {
				wantGrace = int64(intValue(t, vals, "terminationGracePeriodSeconds"))
			}
			if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g != wantGrace {
				t.Errorf("terminationGracePeriodSeconds %v, want %d", g, wantGrace)
			}

			// Advertised address from the environment.
			checkAdvertise(t, sc, c, cfg)

			// Services.
			for _, s := range o.services {
				ssel := labels.SelectorFromSet(s.Spec.Selector)
				if len(s.Spec.Selector) == 0 || !ssel.Matches(podLabels) {
					t.Errorf("service %s selector %v does not select the pods", s.Name, s.Spec.Selector)
				}
				for _, p := range s.Spec.Ports {
					cp, ok := ports[p.TargetPort.String()]
					if !ok || cp.Protocol != p.Protocol {
						t.Errorf("service %s port %s targets %s, which is no %s container port", s.Name, p.Name, p.TargetPort.String(), p.Protocol)
					}
				}
				switch s.Spec.Type {
				case corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeNodePort:
					if strings.HasSuffix(s.Name, "-sip") && s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
						t.Errorf("SIP service %s: externalTrafficPolicy %q, want Local (keeps the source address)", s.Name, s.Spec.ExternalTrafficPolicy)
					}
				default:
					if s.Spec.ExternalTrafficPolicy != "" {
						t.Errorf("service %s of type %s sets externalTrafficPolicy", s.Name, s.Spec.Type)
					}
				}
			}
			if boolValue(t, vals, "service.sip.enabled") {
				s := serviceNamed(o, "-sip")
				if s == nil {
					t.Fatal("no SIP service")
				}
				var protos []string
				for _, p := range s.Spec.Ports {
					protos = append(protos, string(p.Protocol)+"/"+p.Name)
				}
				want := []string{"UDP/sip-udp", "TCP/sip-tcp"}
				if boolValue(t, vals, "sip.tls.enabled") {
					want = append(want, "TCP/sip-tls")
				}
				if !slices.Equal(protos, want) {
					t.Errorf("SIP service ports %v, want %v", protos, want)
				}
			}

			// PDB and ServiceMonitor select what they should.
			for _, pdb := range o.pdbs {
				s, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
				if err != nil || !s.Matches(podLabels) {
					t.Errorf("PDB selector %v does not select the pods", pdb.Spec.Selector)
				}
				if (pdb.Spec.MinAvailable == nil) == (pdb.Spec.MaxUnavailable == nil) {
					t.Error("PDB needs exactly one of minAvailable and maxUnavailable")
				}
			}
			if boolValue(t, vals, "podDisruptionBudget.enabled") != (len(o.pdbs) == 1) {
				t.Errorf("%d PDBs with podDisruptionBudget.enabled %v", len(o.pdbs), vals["podDisruptionBudget"])
			}
			if boolValue(t, vals, "serviceMonitor.enabled") != (len(o.serviceMonitors) == 1) {
				t.Errorf("%d ServiceMonitors with serviceMonitor.enabled", len(o.serviceMonitors))
			}
			for _, sm := range o.serviceMonitors {
				checkServiceMonitor(t, sm, o)
			}
		})
	}
}

// TestManifestsUpToDate: deploy/kubernetes is the default render.
func TestManifestsUpToDate(t *testing.T) {
	root := repoRoot(t)
	want := Manifests(render(t, scenarios[0]))
	dir := filepath.Join(root, ManifestsDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("%v (run make manifests)", err)
	}
	have := map[string]bool{}
	for _, e := range entries {
		have[e.Name()] = true
		if _, ok := want[e.Name()]; !ok {
			t.Errorf("%s/%s is not rendered by the chart any more: run make manifests", ManifestsDir, e.Name())
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s/%s: %v: run make manifests", ManifestsDir, name, err)
			continue
		}
		if !bytes.Equal(got, want[name]) {
			t.Errorf("%s/%s differs from the chart's default render: run make manifests\n%s", ManifestsDir, name, firstDiff(string(got), string(want[name])))
		}
	}
}

// TestSchemaUpToDate: values.schema.json's config part matches the reference
// configuration, and the file is in its generated form.
func TestSchemaUpToDate(t *testing.T) {
	root := repoRoot(t)
	want, err := Schema(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, SchemaFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale (deploy/config/sipwake.yaml changed?): run make manifests\n%s", SchemaFile, firstDiff(string(got), string(want)))
	}
}

// TestRenderRefuses: values the chart must turn down, with a message saying why.
func TestRenderRefuses(t *testing.T) {
	root := repoRoot(t)
	for _, tc := range []struct {
		name, values, want string
	}{
		{"replicas on the embedded store", "replicaCount: 2", "replicaCount 2 needs store.driver redis"},
		{"replicas on redis but a ReadWriteOnce volume", "replicaCount: 2\nconfig: {store: {driver: redis}}\npersistence: {enabled: true}", "cannot share a ReadWriteOnce volume"},
		{"both PDB fields", "podDisruptionBudget: {minAvailable: 1, maxUnavailable: 1}", "not both"},
		{"a managed key in config", `config: {sip: {listen: ["udp://0.0.0.0:5999"]}}`, "config.sip.listen is set to"},
		{"a secret path in config too", "config: {admin: {token_file: /x}}\nsecrets: {adminToken: {existingSecret: a, key: token}}", "config.admin.token_file"},
		{"TLS without a certificate", "sip: {tls: {enabled: true}}", "sip.tls.enabled needs a certificate"},
		{"no listener", "sip: {udp: {enabled: false}, tcp: {enabled: false}}", "no SIP listener"},
		{"advertise address missing", "sip: {advertise: {mode: address}}", "needs sip.advertise.address"},
		{"unknown value", "replicas: 2", "replicas"},
		{"unknown config key", "config: {store: {drvier: redis}}", "drvier"},
		{"config key of the wrong type", "config: {wake: {missed_call_push: \"yes\"}}", "missed_call_push"},
		{"bad service type", "service: {sip: {type: External}}", "type"},
		{"bad traffic policy", "service: {sip: {externalTrafficPolicy: Remote}}", "externalTrafficPolicy"},
		{"ServiceMonitor without the ops Service", "serviceMonitor: {enabled: true}\nservice: {ops: {enabled: false}}", "needs service.ops.enabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(tc.values), &vals); err != nil {
				t.Fatal(err)
			}
			_, err := Render(root, vals)
			if err == nil {
				t.Fatalf("rendered %q without error", tc.values)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestConfigValidates runs the real binary's `sipwake validate` on each
// rendered sipwake.yaml with the environment the pod gets (downward API
// values faked). The secret files only exist in a cluster: the problems
// allowed are "no such file" for exactly the files the chart mounts.
func TestConfigValidates(t *testing.T) {
	root := repoRoot(t)
	bin := buildSipwake(t, root)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			o := decodeAll(t, render(t, sc))
			c := o.deployments[0].Spec.Template.Spec.Containers[0]
			dir := t.TempDir()
			file := filepath.Join(dir, "sipwake.yaml")
			if err := os.WriteFile(file, []byte(o.configMaps[0].Data["sipwake.yaml"]), 0o644); err != nil {
				t.Fatal(err)
			}
			env := podEnv(t, c)
			cmd := exec.Command(bin, "validate", "-o", "json", "-c", file)
			cmd.Dir = dir
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			runErr := cmd.Run()
			var res struct {
				OK       bool `json:"ok"`
				Problems []struct {
					Key    string `json:"key"`
					Reason string `json:"reason"`
				} `json:"problems"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
				t.Fatalf("validate output %q (%v, stderr %q): %v", stdout.String(), runErr, stderr.String(), err)
			}
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(o.configMaps[0].Data["sipwake.yaml"]), &cfg); err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{}
			for _, f := range mountedFiles(cfg) {
				want[f.key] = true
			}
			got := map[string]bool{}
			for _, p := range res.Problems {
				got[p.Key] = true
				if !want[p.Key] || !strings.Contains(p.Reason, "no such file or directory") {
					t.Errorf("sipwake validate: %s: %s", p.Key, p.Reason)
				}
			}
			for k := range want {
				if !got[k] {
					t.Errorf("sipwake validate did not look at %s (is the chart's path wired?)", k)
				}
			}
			if len(want) == 0 && (!res.OK || runErr != nil) {
				t.Errorf("sipwake validate: ok %v, %v, stderr %s", res.OK, runErr, stderr.String())
			}
			t.Logf("validate with env %v: %d problems, all for missing mounted files", env, len(res.Problems))
		})
	}
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildSipwake builds ./cmd/sipwake of the main module once.
func buildSipwake(t *testing.T, root string) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sipwake-chart-test")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "sipwake")
		gobin := os.Getenv("GO")
		if gobin == "" {
			gobin = "go"
		}
		// The image's build flags (deploy/docker/Dockerfile), so that make
		// image-check after this test finds the packages compiled.
		cmd := exec.Command(gobin, "build", "-trimpath", "-o", builtBin, "./cmd/sipwake")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/sipwake: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// podEnv is the container's environment as the kubelet would set it, with
// fake downward API values and $(VAR) references expanded.
func podEnv(t *testing.T, c corev1.Container) []string {
	t.Helper()
	fake := map[string]string{"metadata.name": "sipwake-7d9f8b6c5-x2x9q", "status.hostIP": "192.0.2.10", "status.podIP": "10.42.0.17"}
	vals := map[string]string{}
	var env []string
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		var v string
		switch {
		case e.ValueFrom == nil:
			v = ref.ReplaceAllStringFunc(e.Value, func(m string) string {
				name := ref.FindStringSubmatch(m)[1]
				if x, ok := vals[name]; ok {
					return x
				}
				return m
			})
		case e.ValueFrom.FieldRef != nil:
			x, ok := fake[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("env %s: no fake value for field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			v = x
		default:
			continue
		}
		vals[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	return env
}

func checkAdvertise(t *testing.T, sc scenario, c corev1.Container, cfg map[string]any) {
	t.Helper()
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e, ok := env["SIPWAKE_NODE_ID"]; !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("SIPWAKE_NODE_ID is not the pod name: %+v", e)
	}
	if e, ok := env["SIPWAKE_CONFIG"]; !ok || e.Value != "/etc/sipwake/sipwake.yaml" {
		t.Errorf("SIPWAKE_CONFIG %+v", e)
	}
	adv := ""
	for _, kv := range podEnv(t, c) {
		if v, ok := strings.CutPrefix(kv, "SIPWAKE_SIP_ADVERTISE="); ok {
			adv = v
		}
	}
	want := map[string]string{
		"default":          "",                // a LoadBalancer without a fixed IP: nothing known
		"full":             "192.0.2.10",      // hostNetwork: the node's IP
		"loadbalancer":     "203.0.113.10",    // the LoadBalancer IP
		"redis-dependency": "sip.example.com", // mode address
	}[sc.name]
	if adv != want {
		t.Errorf("SIPWAKE_SIP_ADVERTISE %q, want %q", adv, want)
	}
	if lookup(cfg, "sip.advertise") != nil {
		t.Errorf("sip.advertise in the ConfigMap: %v", lookup(cfg, "sip.advertise"))
	}
}

// checkListeners: sip.listen has one entry per SIP container port, same port.
func checkListeners(t *testing.T, cfg map[string]any, containerPorts map[string]corev1.ContainerPort) {
	t.Helper()
	ports := maps.Clone(containerPorts)
	for _, l := range toStrings(lookup(cfg, "sip.listen")) {
		scheme, hostport, ok := strings.Cut(l, "://")
		if !ok {
			t.Errorf("sip.listen entry %q", l)
			continue
		}
		i := strings.LastIndex(hostport, ":")
		port, err := strconv.Atoi(hostport[i+1:])
		if err != nil {
			t.Errorf("sip.listen entry %q: port", l)
			continue
		}
		p, ok := ports["sip-"+scheme]
		if !ok {
			if scheme == "ws" || scheme == "wss" {
				continue // extraListen, not published by the chart
			}
			t.Errorf("sip.listen %q has no container port sip-%s", l, scheme)
			continue
		}
		if int(p.ContainerPort) != port {
			t.Errorf("sip.listen %q, container port sip-%s is %d", l, scheme, p.ContainerPort)
		}
		delete(ports, "sip-"+scheme)
	}
	for name := range ports {
		if strings.HasPrefix(name, "sip-") {
			t.Errorf("container port %s has no sip.listen entry", name)
		}
	}
}

type mountedFile struct{ key, path string }

// mountedFiles lists the config keys naming files under /etc/sipwake (the
// chart's mounts).
func mountedFiles(cfg map[string]any) []mountedFile {
	var out []mountedFile
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				walk(c, strings.TrimPrefix(key+"."+k, "."))
			}
		case []any:
			for i, c := range x {
				walk(c, fmt.Sprintf("%s[%d]", key, i))
			}
		case string:
			if strings.HasPrefix(x, "/etc/sipwake/") && x != "/etc/sipwake/sipwake.yaml" {
				out = append(out, mountedFile{key, x})
			}
		}
	}
	walk(cfg, "")
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// checkSecretFiles: every file path the config names under /etc/sipwake is a
// key of a Secret mounted read-only in that directory.
func checkSecretFiles(t *testing.T, cfg map[string]any, c corev1.Container, vols map[string]corev1.Volume) {
	t.Helper()
	for _, f := range mountedFiles(cfg) {
		dir, base := path.Split(f.path)
		m, ok := mountAt(c, strings.TrimSuffix(dir, "/"))
		if !ok {
			t.Errorf("%s = %s: nothing mounted at %s", f.key, f.path, dir)
			continue
		}
		if !m.ReadOnly {
			t.Errorf("%s: mount %s is not read-only", f.key, m.MountPath)
		}
		v := vols[m.Name]
		if v.Secret == nil {
			t.Errorf("%s: %s is not a Secret volume", f.key, m.Name)
			continue
		}
		found := false
		for _, it := range v.Secret.Items {
			found = found || it.Path == base
		}
		if !found {
			t.Errorf("%s: Secret %s has no item at %s", f.key, v.Secret.SecretName, base)
		}
		if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
			t.Errorf("%s: Secret volume %s is readable by others", f.key, m.Name)
		}
	}
}

func checkServiceMonitor(t *testing.T, sm *ServiceMonitor, o objects) {
	t.Helper()
	ops := serviceNamed(o, "-ops")
	if ops == nil {
		t.Fatal("ServiceMonitor without an ops service")
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ops.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select service %s (%v)", sm.Spec.Selector, ops.Name, ops.Labels)
	}
	for _, s := range o.services {
		if s != ops && sel.Matches(labels.Set(s.Labels)) {
			t.Errorf("ServiceMonitor also selects service %s", s.Name)
		}
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints %d", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != "ops" || ep.Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoint %s %s, want port ops path /metrics", ep.Port, ep.Path)
	}
	for _, d := range []string{ep.Interval, ep.ScrapeTimeout} {
		if _, err := time.ParseDuration(d); d != "" && err != nil {
			t.Errorf("ServiceMonitor duration %q: %v", d, err)
		}
	}
	for _, r := range append(slices.Clone(ep.Relabelings), ep.MetricRelabelings...) {
		if !validRelabelAction[strings.ToLower(r.Action)] {
			t.Errorf("relabel action %q", r.Action)
		}
	}
}

var validRelabelAction = map[string]bool{"": true, "replace": true, "keep": true, "drop": true, "keepequal": true, "dropequal": true,
	"hashmod": true, "labelmap": true, "labeldrop": true, "labelkeep": true, "lowercase": true, "uppercase": true}

// checkNames: object names are DNS labels (Services) or subdomains.
func checkNames(t *testing.T, o objects) {
	t.Helper()
	for _, s := range o.services {
		if errs := validation.IsDNS1035Label(s.Name); len(errs) > 0 {
			t.Errorf("service name %q: %v", s.Name, errs)
		}
	}
	var names []metav1.ObjectMeta
	for _, d := range o.deployments {
		names = append(names, d.ObjectMeta)
	}
	for _, c := range o.configMaps {
		names = append(names, c.ObjectMeta)
	}
	for _, p := range o.pvcs {
		names = append(names, p.ObjectMeta)
	}
	for _, p := range o.pdbs {
		names = append(names, p.ObjectMeta)
	}
	for _, s := range o.serviceAccounts {
		names = append(names, s.ObjectMeta)
	}
	for _, m := range names {
		if errs := validation.IsDNS1123Subdomain(m.Name); len(errs) > 0 {
			t.Errorf("name %q: %v", m.Name, errs)
		}
		if m.Namespace != "" {
			t.Errorf("%s sets namespace %q; the plain manifests take it from kubectl", m.Name, m.Namespace)
		}
		for k, v := range m.Labels {
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				t.Errorf("%s: label key %q: %v", m.Name, k, errs)
			}
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Errorf("%s: label %s value %q: %v", m.Name, k, v, errs)
			}
		}
	}
	for _, d := range o.deployments {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if errs := validation.IsDNS1123Label(v.Name); len(errs) > 0 {
				t.Errorf("volume name %q: %v", v.Name, errs)
			}
		}
	}
}

// ServiceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the
// chart writes; strict decoding into it refuses any other field.
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ServiceMonitorSpec `json:"spec"`
}

// ServiceMonitorSpec is ServiceMonitor.spec.
type ServiceMonitorSpec struct {
	JobLabel          string               `json:"jobLabel,omitempty"`
	Selector          metav1.LabelSelector `json:"selector"`
	NamespaceSelector struct {
		Any        bool     `json:"any,omitempty"`
		MatchNames []string `json:"matchNames,omitempty"`
	} `json:"namespaceSelector,omitempty"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one ServiceMonitor endpoint.
type Endpoint struct {
	Port              string          `json:"port,omitempty"`
	Path              string          `json:"path,omitempty"`
	Scheme            string          `json:"scheme,omitempty"`
	Interval          string          `json:"interval,omitempty"`
	ScrapeTimeout     string          `json:"scrapeTimeout,omitempty"`
	HonorLabels       bool            `json:"honorLabels,omitempty"`
	Relabelings       []RelabelConfig `json:"relabelings,omitempty"`
	MetricRelabelings []RelabelConfig `json:"metricRelabelings,omitempty"`
}

// RelabelConfig is a Prometheus relabelling rule as the operator takes it.
type RelabelConfig struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    *string  `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// --- helpers

// referenceKeys: every key path of deploy/config/sipwake.yaml ("a.b.c";
// lists of mappings contribute "a.b[].c" from their documented item keys).
func referenceKeys(t *testing.T, root string) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, ReferenceYAML))
	if err != nil {
		t.Fatal(err)
	}
	var ref map[string]any
	if err := yaml.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, k := range configKeys(ref, "") {
		keys[k] = true
	}
	// Items of push.fcm.projects (an empty list in the reference, its item
	// keys documented in its comment).
	if keys["push.fcm.projects"] {
		keys["push.fcm.projects[].project_id"] = true
		keys["push.fcm.projects[].credentials_file"] = true
	}
	return keys
}

// configKeys lists the leaf key paths of a config tree, a list of mappings
// as key[].field.
func configKeys(v any, prefix string) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			sub := configKeys(c, p)
			if len(sub) == 0 {
				sub = []string{p}
			}
			out = append(out, sub...)
		}
	case []any:
		for _, c := range x {
			if m, ok := c.(map[string]any); ok {
				out = append(out, configKeys(m, prefix+"[]")...)
			}
		}
		if len(out) == 0 {
			out = []string{prefix}
		}
	default:
		out = []string{prefix}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func lookup(cfg map[string]any, key string) any {
	var cur any = cfg
	for _, k := range strings.Split(key, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// coalescedValues: the chart's values.yaml with the scenario's values over it.
func coalescedValues(t *testing.T, sc scenario) map[string]any {
	t.Helper()
	chrt, err := LoadChart(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	base := deepCopy(chrt.Values)
	over := loadValues(t, sc.values)
	merge(base, over)
	return base
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func deepCopy(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

func intValue(t *testing.T, vals map[string]any, key string) int {
	t.Helper()
	switch x := lookup(vals, key).(type) {
	case int:
		return x
	case int64:
		return int(x)
	case float64:
		return int(x)
	}
	t.Fatalf("value %s = %v is not a number", key, lookup(vals, key))
	return 0
}

func boolValue(t *testing.T, vals map[string]any, key string) bool {
	t.Helper()
	b, ok := lookup(vals, key).(bool)
	if !ok {
		t.Fatalf("value %s = %v is not a bool", key, lookup(vals, key))
	}
	return b
}

// durationValue reads a duration key of the config in whole seconds, rounded up.
func durationValue(t *testing.T, cfg map[string]any, key string, def time.Duration) int {
	t.Helper()
	d := def
	if s, ok := lookup(cfg, key).(string); ok {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
	return int((d + time.Second - 1) / time.Second)
}

func toStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, x := range l {
			s, _ := x.(string)
			out = append(out, s)
		}
	}
	return out
}

func isTrue(b *bool) bool { return b != nil && *b }

func mountAt(c corev1.Container, p string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == p {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

func secretVolume(vols map[string]corev1.Volume, name string) *corev1.Volume {
	for _, v := range vols {
		if v.Secret != nil && v.Secret.SecretName == name {
			return &v
		}
	}
	return nil
}

func serviceNamed(o objects, suffix string) *corev1.Service {
	for _, s := range o.services {
		if strings.HasSuffix(s.Name, suffix) {
			return s
		}
	}
	return nil
}

// volumeSources counts the sources a volume sets (exactly one is valid).
func volumeSources(v corev1.Volume) int {
	b, err := json.Marshal(v.VolumeSource)
	if err != nil {
		return -1
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return len(m)
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var a, b string
		if i < len(g) {
			a = g[i]
		}
		if i < len(w) {
			b = w[i]
		}
		if a != b {
			return fmt.Sprintf("line %d:\n  have: %s\n  want: %s", i+1, a, b)
		}
	}
	return ""
}
