package testbed

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
)

// Userspace hosts (Options.Userspace) run zlmesh in userspace mode as an
// unprivileged user: the daemon is started through setpriv as uid/gid
// nobody with every capability set empty (effective, permitted,
// inheritable, ambient and bounding) and no_new_privs, and its mount
// namespace has no /dev/net/tun (an empty tmpfs covers /dev/net). The host's
// directory, state dir and WireGuard dir belong to that user, and it gets
// its own copy of the cluster key (<Dir>/cluster.key), since the testbed's
// is root's. The daemon gets --userspace and that key file.

// UserspaceUser is the user a userspace host's daemon runs as.
const UserspaceUser = "nobody"

// userspaceIDs returns UserspaceUser's uid and primary gid.
func userspaceIDs() (uid, gid int, err error) {
	u, err := user.Lookup(UserspaceUser)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s: %w", UserspaceUser, err)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("user %s: uid %q", UserspaceUser, u.Uid)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return 0, 0, fmt.Errorf("user %s: gid %q", UserspaceUser, u.Gid)
	}
	return uid, gid, nil
}

// isUserspace reports whether host name is in Options.Userspace.
func (o Options) isUserspace(name string) bool { return slices.Contains(o.Userspace, name) }

// checkUserspace validates Options.Userspace against the host count.
func (o Options) checkUserspace() error {
	for _, name := range o.Userspace {
		ok := false
		for i := 1; i <= o.Hosts; i++ {
			ok = ok || name == hostName(i)
		}
		if !ok {
			return fmt.Errorf("testbed %s: userspace host %q is not one of h1…h%d", o.Prefix, name, o.Hosts)
		}
	}
	return nil
}

// userKeyFile is the cluster key copy of a userspace host.
func (h *Host) userKeyFile() string { return filepath.Join(h.Dir, "cluster.key") }

// prepareUserspaceHost hands h's directories to the unprivileged user and
// gives it its own copy of the cluster key.
func (tb *Testbed) prepareUserspaceHost(h *Host) error {
	uid, gid, err := userspaceIDs()
	if err != nil {
		return err
	}
	key, err := os.ReadFile(tb.KeyFile)
	if err != nil {
		return fmt.Errorf("cluster key for %s: %w", h.Name, err)
	}
	if err := os.WriteFile(h.userKeyFile(), key, 0o600); err != nil {
		return fmt.Errorf("cluster key for %s: %w", h.Name, err)
	}
	for _, p := range []string{h.Dir, h.StateDir, h.WireGuardDir, h.userKeyFile()} {
		if err := os.Chown(p, uid, gid); err != nil {
			return fmt.Errorf("host %s: hand %s to %s: %w", h.Name, p, UserspaceUser, err)
		}
	}
	return nil
}

// unprivilegedArgv wraps argv so that it runs as UserspaceUser with no
// capability at all.
func unprivilegedArgv(argv []string) ([]string, error) {
	uid, gid, err := userspaceIDs()
	if err != nil {
		return nil, err
	}
	return append([]string{"setpriv",
		"--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(gid), "--clear-groups",
		"--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs",
		"--"}, argv...), nil
}
