// Package buildinfo tells which zlmesh this is: its version and commit, the
// Go toolchain, and the versions of the libraries whose wire formats matter
// between nodes (wireguard-go, memberlist), all read from the build info the
// Go toolchain embeds in the binary (runtime/debug.ReadBuildInfo). `zlmesh
// version` prints it and node gossips Info.Version in its meta, so the two
// always agree.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Module paths whose versions Info reports.
const (
	WireGuardModule  = "golang.zx2c4.com/wireguard"
	MemberlistModule = "github.com/hashicorp/memberlist"
)

// Unknown stands for a field the build info does not carry (a test binary
// has no VCS stamp; a binary built without modules has no versions).
const Unknown = "unknown"

// Info describes this binary. Every field is set; Unknown where the build
// info does not tell.
type Info struct {
	// Version is the main module's version: a release tag (v1.2.3), or
	// the pseudo-version Go stamps from the VCS (v0.0.0-2026…-abcdef…,
	// "+dirty" for a modified tree), or "devel" when Go stamped none.
	Version string `json:"version"`
	// Commit is the VCS revision the binary was built from, with
	// "-dirty" when the tree had changes.
	Commit     string `json:"commit"`
	GoVersion  string `json:"go_version"`
	WireGuard  string `json:"wireguard_go"`
	Memberlist string `json:"memberlist"`
}

var (
	once   sync.Once
	cached Info
)

// Get returns this binary's Info. It reads the build info once.
func Get() Info {
	once.Do(func() {
		bi, ok := debug.ReadBuildInfo()
		if !ok {
			bi = nil
		}
		cached = FromBuildInfo(bi)
	})
	return cached
}

// FromBuildInfo makes an Info out of bi (nil: none available).
func FromBuildInfo(bi *debug.BuildInfo) Info {
	info := Info{Version: "devel", Commit: Unknown, GoVersion: runtime.Version(), WireGuard: Unknown, Memberlist: Unknown}
	if bi == nil {
		return info
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		info.Version = v
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && info.Commit != Unknown {
		info.Commit += "-dirty"
	}
	for _, d := range bi.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		switch d.Path {
		case WireGuardModule:
			info.WireGuard = m.Version
		case MemberlistModule:
			info.Memberlist = m.Version
		}
	}
	return info
}

// String is the one-line form: "v1.2.3 (commit abcdef123456, go1.26.0)".
func (i Info) String() string {
	c := i.Commit
	if len(c) > 12 && !strings.HasSuffix(c, "-dirty") {
		c = c[:12]
	}
	return i.Version + " (commit " + c + ", " + i.GoVersion + ")"
}
