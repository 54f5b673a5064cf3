package main

import (
	"runtime"
	"runtime/debug"
)

// Set at link time, e.g.
//
//	go build -ldflags "-X main.version=v1.2.0 -X main.commit=$(git rev-parse HEAD)" ./cmd/sipwake
//
// When empty, the module version and VCS revision recorded by the Go toolchain are used.
var (
	version = ""
	commit  = ""
)

// sipLibraryPath is the module whose version `sipwake version` and sipwake_build_info report.
const sipLibraryPath = "github.com/emiago/sipgo"

// buildInfo describes the running binary.
type buildInfo struct {
	Version    string `json:"version"`
	Commit     string `json:"commit"`
	GoVersion  string `json:"go_version"`
	SIPLibrary string `json:"sip_library"` // "github.com/emiago/sipgo v1.7.2"
}

// currentBuildInfo combines the link-time variables with what debug.ReadBuildInfo knows.
func currentBuildInfo() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	return makeBuildInfo(version, commit, bi, ok)
}

// makeBuildInfo is currentBuildInfo with its inputs passed in, for tests.
func makeBuildInfo(ver, rev string, bi *debug.BuildInfo, ok bool) buildInfo {
	out := buildInfo{Version: ver, Commit: rev, GoVersion: runtime.Version(), SIPLibrary: sipLibraryPath + " unknown"}
	if ok && bi != nil {
		if bi.GoVersion != "" {
			out.GoVersion = bi.GoVersion
		}
		if out.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			out.Version = bi.Main.Version
		}
		if out.Commit == "" {
			var modified bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					out.Commit = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if out.Commit != "" && modified {
				out.Commit += "-dirty"
			}
		}
		for _, d := range bi.Deps {
			if d.Path != sipLibraryPath {
				continue
			}
			v := d.Version
			if d.Replace != nil && d.Replace.Version != "" {
				v = d.Replace.Version
			}
			out.SIPLibrary = sipLibraryPath + " " + v
		}
	}
	if out.Version == "" {
		out.Version = "devel"
	}
	if out.Commit == "" {
		out.Commit = "unknown"
	}
	return out
}
