// Package pipe is the control API's transport on Windows: a named pipe
// (\\.\pipe\zlmesh by default) with a security descriptor, as a
// net.Listener for the node's HTTP server and a dialer for the CLI's
// client. It uses golang.org/x/sys/windows directly (go-winio's pipes hang
// under Wine, where the Windows tests run; these do not): overlapped
// handles, which os.NewFile puts on the runtime's I/O completion port, so
// connections have deadlines and Close unblocks a pending Read.
//
// Access: SYSTEM and the local Administrators have full access; one more
// group, if given, may read and write (that is: use the whole API; treat it
// like the docker-users group). Remote clients are refused.
//
// Elsewhere Listen and Dial return ErrUnsupported (the control API is a
// Unix socket there).
package pipe

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// Sentinel errors, wrapped with the operation and the pipe's name.
var (
	// ErrUnsupported: not Windows.
	ErrUnsupported = errors.New("named pipes are a Windows thing")
	// ErrInUse: another process (a second zlmesh) owns the pipe name.
	ErrInUse = errors.New("pipe name in use by another process")
	// ErrNotFound: no server listens on the pipe (Dial).
	ErrNotFound = errors.New("no such pipe (is zlmesh running?)")
	// ErrBadGroup: the group given for access does not resolve to a SID.
	ErrBadGroup = errors.New("unknown group")
)

// Addr is a pipe's address (net.Addr): its name.
type Addr string

func (Addr) Network() string  { return "pipe" }
func (a Addr) String() string { return string(a) }

var _ net.Addr = Addr("")

// Config of a listener.
type Config struct {
	// GroupSID is the string SID ("S-1-5-32-545") of a group that may use
	// the pipe besides SYSTEM and Administrators; empty: none. Windows'
	// ResolveGroup turns a group name into it.
	GroupSID string
}

// SDDL returns the security descriptor of a pipe for c, in SDDL: a
// protected DACL (nothing inherited) with full access (GA) for SYSTEM (SY)
// and the local Administrators (BA) and read/write (GRGW) for the group.
func (c Config) SDDL() (string, error) {
	d := "D:P(A;;GA;;;SY)(A;;GA;;;BA)"
	if c.GroupSID != "" {
		if !validSID(c.GroupSID) {
			return "", fmt.Errorf("group SID %q: %w", c.GroupSID, ErrBadGroup)
		}
		d += "(A;;GRGW;;;" + c.GroupSID + ")"
	}
	return d, nil
}

// validSID accepts the string form of a SID: S-1-<authority>(-<sub>)*, all
// decimal.
func validSID(s string) bool {
	parts := strings.Split(s, "-")
	if len(parts) < 3 || parts[0] != "S" || parts[1] != "1" {
		return false
	}
	for _, p := range parts[2:] {
		if p == "" || len(p) > 10 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// IsPipeName reports whether name is a local pipe path (\\.\pipe\...): the
// form Listen and Dial take, and what tells the CLI to dial a pipe rather
// than a Unix socket.
func IsPipeName(name string) bool {
	const prefix = `\\.\pipe\`
	return len(name) > len(prefix) && strings.EqualFold(name[:len(prefix)], prefix) &&
		!strings.ContainsAny(name[len(prefix):], `\`)
}
