// Package charttest renders the sipwake Helm chart (deploy/helm/sipwake) with
// Helm's own Go packages, and generates what is derived from it: the plain
// manifests in deploy/kubernetes and the config part of the chart's
// values.schema.json. Its tests lint the chart and decode every rendered
// object strictly into the Kubernetes API types.
//
// It is a module of its own so that the sipwake module does not depend on
// Helm and the Kubernetes libraries.
package charttest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

// Fixed names of a render. The plain manifests are this release, without a
// namespace (kubectl apply -n picks it).
const (
	ReleaseName = "sipwake"
	Namespace   = "sipwake"
	// KubeVersion is the cluster version renders assume.
	KubeVersion = "v1.33.0"
)

// Paths relative to the repository root.
const (
	ChartDir      = "deploy/helm/sipwake"
	ManifestsDir  = "deploy/kubernetes"
	ReferenceYAML = "deploy/config/sipwake.yaml"
	SchemaFile    = ChartDir + "/values.schema.json"
)

// RepoRoot finds the repository root: the nearest directory at or above the
// working directory holding the chart.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, ChartDir, "Chart.yaml")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no " + ChartDir + "/Chart.yaml at or above the working directory")
		}
		dir = parent
	}
}

// LoadChart loads the chart from the repository at root.
func LoadChart(root string) (*chart.Chart, error) {
	return loader.Load(filepath.Join(root, ChartDir))
}

// Capabilities are those of a KubeVersion cluster.
func Capabilities() (*chartutil.Capabilities, error) {
	caps := chartutil.DefaultCapabilities.Copy()
	kv, err := chartutil.ParseKubeVersion(KubeVersion)
	if err != nil {
		return nil, err
	}
	caps.KubeVersion = *kv
	return caps, nil
}

// Render renders the chart at root with vals over its values.yaml, as `helm
// template` would (schema validation included), with strict templates (a
// reference to a missing value fails). It returns the rendered templates of
// the chart itself by file name (deployment.yaml, ...), NOTES.txt and empty
// ones left out. The redis dependency is never part of it: it is not
// vendored, and only Helm fetches it.
func Render(root string, vals map[string]any) (map[string]string, error) {
	chrt, err := LoadChart(root)
	if err != nil {
		return nil, err
	}
	if vals == nil {
		vals = map[string]any{}
	}
	if err := chartutil.ProcessDependenciesWithMerge(chrt, vals); err != nil {
		return nil, err
	}
	caps, err := Capabilities()
	if err != nil {
		return nil, err
	}
	opts := chartutil.ReleaseOptions{Name: ReleaseName, Namespace: Namespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValues(chrt, vals, opts, caps)
	if err != nil {
		return nil, err
	}
	out, err := engine.Engine{Strict: true}.Render(chrt, top)
	if err != nil {
		return nil, err
	}
	prefix := chrt.Name() + "/templates/"
	files := map[string]string{}
	for name, body := range out {
		if !strings.HasPrefix(name, prefix) || path.Base(name) == "NOTES.txt" {
			continue
		}
		if strings.TrimSpace(body) == "" {
			continue
		}
		files[strings.TrimPrefix(name, prefix)] = body
	}
	return files, nil
}

// ReadValuesFile reads a values file.
func ReadValuesFile(name string) (map[string]any, error) {
	v, err := chartutil.ReadValuesFile(name)
	if err != nil {
		return nil, err
	}
	return v.AsMap(), nil
}

// Document is one YAML document of a render.
type Document struct {
	Template string // file name, e.g. deployment.yaml
	Body     string
}

// Documents splits rendered templates into their YAML documents, in file
// name order, comment-only documents left out.
func Documents(files map[string]string) []Document {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var docs []Document
	for _, n := range names {
		for _, part := range splitYAML(files[n]) {
			docs = append(docs, Document{Template: n, Body: part})
		}
	}
	return docs
}

// splitYAML splits a multi-document YAML stream on "---" lines, dropping
// documents that hold only comments and blank lines.
func splitYAML(s string) []string {
	var docs []string
	var cur []string
	flush := func() {
		body := strings.Join(cur, "\n")
		cur = nil
		for _, l := range strings.Split(body, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, strings.TrimSpace(body)+"\n")
				return
			}
		}
	}
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimRight(l, " \t") == "---" || strings.HasPrefix(l, "--- ") {
			flush()
			continue
		}
		cur = append(cur, l)
	}
	flush()
	return docs
}

// manifestHeader starts every generated file in deploy/kubernetes.
const manifestHeader = `# Generated by "make manifests" from deploy/helm/sipwake/templates/%s with the
# chart's default values (release %q). Do not edit: change the chart and run
# make manifests. Apply with: kubectl apply -n <namespace> -k deploy/kubernetes
`

// Manifests turns a default render into the files of deploy/kubernetes: one
// per template, plus a kustomization.yaml listing them.
func Manifests(files map[string]string) map[string][]byte {
	out := map[string][]byte{}
	var names []string
	for _, d := range Documents(files) {
		b, ok := out[d.Template]
		if !ok {
			b = fmt.Appendf(nil, manifestHeader, d.Template, ReleaseName)
			names = append(names, d.Template)
		}
		b = append(b, "---\n"...)
		b = append(b, d.Body...)
		out[d.Template] = b
	}
	var k bytes.Buffer
	k.WriteString("# Generated by \"make manifests\": the plain manifests of deploy/helm/sipwake with\n")
	k.WriteString("# its default values. kubectl apply -n <namespace> -k deploy/kubernetes\n")
	k.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n")
	for _, n := range names {
		fmt.Fprintf(&k, "  - %s\n", n)
	}
	out["kustomization.yaml"] = k.Bytes()
	return out
}

// ConfigSchema derives a JSON schema for the chart's config value from the
// reference configuration (deploy/config/sipwake.yaml): every key of it,
// typed as its default is, and no other.
func ConfigSchema(reference []byte) (map[string]any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(reference, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("reference config: not one YAML document")
	}
	s, err := nodeSchema(doc.Content[0], "")
	if err != nil {
		return nil, err
	}
	s["description"] = "sipwake.yaml: the keys of deploy/config/sipwake.yaml (sipwake config default); regenerated by make manifests."
	return s, nil
}

func nodeSchema(n *yaml.Node, key string) (map[string]any, error) {
	switch n.Kind {
	case yaml.MappingNode:
		props := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			child := key + "." + k
			if key == "" {
				child = k
			}
			s, err := nodeSchema(n.Content[i+1], child)
			if err != nil {
				return nil, err
			}
			if c := strings.TrimSpace(strings.TrimPrefix(n.Content[i].HeadComment, "#")); c != "" {
				s["description"] = strings.Join(strings.Fields(strings.ReplaceAll(c, "\n#", " ")), " ")
			}
			props[k] = s
		}
		return map[string]any{"type": "object", "properties": props, "additionalProperties": false}, nil
	case yaml.SequenceNode:
		s := map[string]any{"type": "array"}
		if len(n.Content) > 0 {
			item, err := nodeSchema(n.Content[0], key+"[]")
			if err != nil {
				return nil, err
			}
			delete(item, "description")
			s["items"] = item
		}
		return s, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return map[string]any{"type": "string"}, nil
		case "!!int":
			return map[string]any{"type": "integer"}, nil
		case "!!float":
			return map[string]any{"type": "number"}, nil
		case "!!bool":
			return map[string]any{"type": "boolean"}, nil
		}
		return nil, fmt.Errorf("reference config: %s: scalar of tag %s", key, n.ShortTag())
	}
	return nil, fmt.Errorf("reference config: %s: unexpected YAML node kind %v", key, n.Kind)
}

// Schema returns values.schema.json as it should be: the file at root with
// its properties.config replaced by ConfigSchema of the reference config, in
// a stable form (sorted keys, two-space indent).
func Schema(root string) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(root, SchemaFile))
	if err != nil {
		return nil, err
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		return nil, fmt.Errorf("%s: %w", SchemaFile, err)
	}
	props, ok := schema["properties"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: no properties object", SchemaFile)
	}
	ref, err := os.ReadFile(filepath.Join(root, ReferenceYAML))
	if err != nil {
		return nil, err
	}
	cfg, err := ConfigSchema(ref)
	if err != nil {
		return nil, err
	}
	props["config"] = cfg
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(schema); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Generate writes the derived files: values.schema.json first (the render
// validates against it), then deploy/kubernetes from a default render, with
// files no longer rendered removed.
func Generate(root string) error {
	schema, err := Schema(root)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, SchemaFile), schema, 0o644); err != nil {
		return err
	}
	files, err := Render(root, nil)
	if err != nil {
		return err
	}
	want := Manifests(files)
	dir := filepath.Join(root, ManifestsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := want[e.Name()]; !ok && !e.IsDir() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), want[n], 0o644); err != nil {
			return err
		}
	}
	return nil
}
