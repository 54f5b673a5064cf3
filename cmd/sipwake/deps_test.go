package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyRules checks the import rules of ARCHITECTURE.md with
// `go list` (test files excluded): D1-D3 on transitive dependencies,
// D4-D5 on direct imports.
func TestDependencyRules(t *testing.T) {
	const mod = "github.com/sipwake/sipwake"
	out, err := exec.Command("go", "list", "-json", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	type pkg struct {
		ImportPath string
		Deps       []string // transitive
		Imports    []string // direct
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	has := func(p pkg, dep string) bool {
		for _, d := range p.Deps {
			if d == dep || strings.HasPrefix(d, dep+"/") {
				return true
			}
		}
		return false
	}
	imports := func(p pkg, dep string) bool {
		for _, d := range p.Imports {
			if d == dep || strings.HasPrefix(d, dep+"/") {
				return true
			}
		}
		return false
	}
	internal := func(p pkg, name string) bool {
		for _, d := range p.Deps {
			if d == mod+"/"+name || strings.HasPrefix(d, mod+"/"+name+"/") {
				return true
			}
		}
		return false
	}
	isModule := func(path string) (string, bool) {
		rest, ok := strings.CutPrefix(path, mod+"/proxy/")
		if !ok || strings.HasSuffix(rest, "test") || strings.Contains(rest, "/") {
			return "", false
		}
		return rest, true
	}
	for _, p := range pkgs {
		path := p.ImportPath
		rel := strings.TrimPrefix(path, mod+"/")
		switch {
		case rel == "proxy":
			for _, x := range []string{"registrar", "push", "store"} {
				if internal(p, x) {
					t.Errorf("D1: proxy imports %s", x)
				}
			}
			for _, d := range p.Deps {
				if strings.HasPrefix(d, mod+"/proxy/") {
					t.Errorf("D1: proxy imports %s", d)
				}
			}
		case strings.HasPrefix(rel, "push") || strings.HasPrefix(rel, "store"):
			if has(p, "github.com/emiago/sipgo") {
				t.Errorf("D3: %s imports the SIP library", rel)
			}
			if strings.HasPrefix(rel, "store") && rel != "store/storetest" {
				for _, d := range p.Deps {
					if strings.HasPrefix(d, mod+"/") && !strings.HasPrefix(d, mod+"/store") {
						t.Errorf("D3: %s imports %s", rel, d)
					}
				}
			}
			if rel == "store" && internal(p, "store/") {
				t.Errorf("D3: store imports an internal package")
			}
		}
		if name, ok := isModule(path); ok {
			for _, d := range p.Deps {
				if other, ok := isModule(d); ok && other != name {
					t.Errorf("D2: module %s imports sibling module %s", name, other)
				}
			}
		}
		if rel != "store/redis" && imports(p, "github.com/redis/go-redis") {
			t.Errorf("D4: %s imports go-redis", rel)
		}
		if rel != "push/apns" && imports(p, "github.com/sideshow/apns2") {
			t.Errorf("D4: %s imports apns2", rel)
		}
		if rel != "push/fcm" && imports(p, "github.com/appleboy/go-fcm") {
			t.Errorf("D4: %s imports go-fcm", rel)
		}
		if !strings.HasPrefix(rel, "cmd/sipwake") {
			for _, x := range []string{"github.com/spf13/viper", "github.com/spf13/cobra", "os/signal"} {
				if imports(p, x) {
					t.Errorf("D5: %s imports %s", rel, x)
				}
			}
		}
	}
}
