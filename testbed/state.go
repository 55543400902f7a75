package testbed

import (
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/zlmesh/zlmesh/internal/statefile"
)

// stateFile is the name of the state file in the testbed directory.
const stateFile = "testbed.json"

// stateVersion is bumped when the state file changes incompatibly.
const stateVersion = 1

// state is everything a testbed made, as saved in <dir>/testbed.json. It is
// enough for another process (Load, Destroy, the CLI) to drive the testbed and
// to remove it all.
type state struct {
	Version      int    `json:"version"`
	Prefix       string `json:"prefix"`
	Dir          string `json:"dir"`
	DirCreated   bool   `json:"dir_created"`
	Binary       string `json:"binary,omitempty"`
	Seed         int    `json:"seed"`
	MeshDNS      string `json:"mesh_dns"`
	SearchDomain string `json:"search_domain"`
	// Underlay is the underlay's family ("" in files of older testbeds:
	// IPv4).
	Underlay UnderlayFamily `json:"underlay,omitempty"`
	// Owner is the process that made the testbed. Ephemeral marks one made
	// by New for a single test: once its owner is gone (a test binary
	// killed by its timeout cannot run its cleanups), the next New removes
	// it.
	Owner     *procState `json:"owner,omitempty"`
	Ephemeral bool       `json:"ephemeral,omitempty"`
	// Namespaces are the names of every network namespace made, in order.
	Namespaces []string `json:"namespaces"`
	// EtcNetns are the /etc/netns/<ns> directories made.
	EtcNetns   []string          `json:"etc_netns,omitempty"`
	Resolver   *procState        `json:"resolver,omitempty"`
	Hosts      []*hostState      `json:"hosts"`
	Containers []*containerState `json:"containers,omitempty"`
	// Background are processes started by StartOutside and StartProcess.
	Background []*procState `json:"background,omitempty"`
	// keepDir is set for a sweep of a directory that may not be the
	// testbed's: its files stay.
	keepDir bool
	// Cut are the hosts whose switch port is down.
	Cut []string `json:"cut,omitempty"`
	// Partition are the host groups of the current partition (nil: healed).
	Partition [][]string `json:"partition,omitempty"`
}

// hostState is one host as saved.
type hostState struct {
	Name     string     `json:"name"`
	Index    int        `json:"index"`
	Netns    string     `json:"netns"`
	Underlay netip.Addr `json:"underlay"`
	// Underlay6 is the host's IPv6 underlay address (zero without IPv6).
	Underlay6 netip.Addr `json:"underlay6,omitzero"`
	// Command is the daemon command chosen when the host was made; LastArgv
	// is what the last Start ran (Command plus Start's extras).
	Command  []string   `json:"command"`
	LastArgv []string   `json:"last_argv,omitempty"`
	Holder   *procState `json:"holder,omitempty"`
	Daemon   *procState `json:"daemon,omitempty"`
	// Userspace: the daemon runs unprivileged in userspace mode.
	Userspace bool `json:"userspace,omitempty"`
}

// containerState is one container as saved.
type containerState struct {
	Name  string `json:"name"`
	Host  string `json:"host"`
	Netns string `json:"netns"`
}

// procState is a process the testbed started. Start is its start time in
// clock ticks since boot (/proc/<pid>/stat field 22): a PID is only signalled
// while its start time still matches, so a recycled PID is never hit.
type procState struct {
	PID   int      `json:"pid"`
	Start uint64   `json:"start"`
	Argv  []string `json:"argv"`
	Log   string   `json:"log,omitempty"`
	// Where names the namespace it runs in (for the status and for
	// removing a container's processes with it).
	Where string `json:"where,omitempty"`
}

func (p *procState) String() string {
	if p == nil {
		return "<none>"
	}
	return fmt.Sprintf("pid %d (%s)", p.PID, filepath.Base(first(p.Argv)))
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func readState(dir string) (*state, error) {
	var st state
	if err := statefile.ReadJSON(filepath.Join(dir, stateFile), &st); err != nil {
		return nil, err
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("testbed state %s: version %d, want %d", filepath.Join(dir, stateFile), st.Version, stateVersion)
	}
	if !prefixRE.MatchString(st.Prefix) {
		return nil, fmt.Errorf("testbed state %s: bad prefix %q", filepath.Join(dir, stateFile), st.Prefix)
	}
	return &st, nil
}

func writeState(st *state) error {
	return statefile.WriteJSON(filepath.Join(st.Dir, stateFile), st)
}
