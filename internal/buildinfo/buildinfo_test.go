package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	deps := []*debug.Module{
		{Path: WireGuardModule, Version: "v0.0.0-20260522210424-ecfc5a8d5446"},
		{Path: MemberlistModule, Version: "v0.7.0"},
		{Path: "github.com/miekg/dns", Version: "v1.1.73"},
	}
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want Info
	}{
		{"none", nil, Info{Version: "devel", Commit: Unknown, GoVersion: runtime.Version(), WireGuard: Unknown, Memberlist: Unknown}},
		{"test binary", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Deps: deps},
			Info{Version: "devel", Commit: Unknown, GoVersion: "go1.26.0", WireGuard: "v0.0.0-20260522210424-ecfc5a8d5446", Memberlist: "v0.7.0"}},
		{"release", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.3"}, Deps: deps,
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "false"}}},
			Info{Version: "v1.2.3", Commit: "abc123", GoVersion: "go1.26.0", WireGuard: "v0.0.0-20260522210424-ecfc5a8d5446", Memberlist: "v0.7.0"}},
		{"dirty tree", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.0.0-20261206073800-b4dc9d8aaaaa+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "b4dc9d8aaaaa"}, {Key: "vcs.modified", Value: "true"}}},
			Info{Version: "v0.0.0-20261206073800-b4dc9d8aaaaa+dirty", Commit: "b4dc9d8aaaaa-dirty", GoVersion: "go1.26.0", WireGuard: Unknown, Memberlist: Unknown}},
		{"replaced module", &debug.BuildInfo{Main: debug.Module{Version: "v1.0.0"},
			Deps: []*debug.Module{{Path: MemberlistModule, Version: "v0.7.0", Replace: &debug.Module{Path: "../memberlist", Version: "v0.7.1-local"}}}},
			Info{Version: "v1.0.0", Commit: Unknown, GoVersion: runtime.Version(), WireGuard: Unknown, Memberlist: "v0.7.1-local"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FromBuildInfo(tc.bi); got != tc.want {
				t.Errorf("FromBuildInfo = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestGet checks the running test binary: its dependencies are in the build
// info, so the library versions are known.
func TestGet(t *testing.T) {
	i := Get()
	if i.GoVersion != runtime.Version() {
		t.Errorf("GoVersion = %q, want %q", i.GoVersion, runtime.Version())
	}
	if i.Version == "" || i.Commit == "" {
		t.Errorf("empty field in %+v", i)
	}
	if i != Get() {
		t.Error("Get changed between calls")
	}
}
