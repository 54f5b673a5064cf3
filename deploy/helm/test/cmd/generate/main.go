// Command generate rewrites what is derived from the sipwake chart: the config
// part of deploy/helm/sipwake/values.schema.json (from deploy/config/sipwake.yaml)
// and the plain manifests in deploy/kubernetes (the chart rendered with its
// default values). make manifests runs it; the tests in the parent package fail
// when either is stale.
package main

import (
	"fmt"
	"os"

	charttest "github.com/sipwake/sipwake/deploy/helm/test"
)

func main() {
	root, err := charttest.RepoRoot()
	if err == nil {
		err = charttest.Generate(root)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s and %s/\n", charttest.SchemaFile, charttest.ManifestsDir)
}
