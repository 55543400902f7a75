//go:build linux

package natd

import (
	"fmt"
	"os"
	"strings"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ApplySysctls writes every setting of Sysctls under /proc/sys that does not
// already hold its value, in the network namespace of the calling thread
// (lock the thread when calling it inside another namespace). It stops at
// the first failure and names the setting.
func ApplySysctls() error {
	_, err := applySysctls(Sysctls())
	return err
}

// ApplySysctls6 writes the settings of Sysctls6 as ApplySysctls does, and
// returns every setting it changed (for the caller to log), in the order it
// changed them.
//
// When it is the one to switch IPv6 forwarding on (it was off), it first
// sets net.ipv6.conf.<if>.accept_ra=2 on every interface that holds an IPv6
// default route learned from a router advertisement (proto ra) and whose
// accept_ra is 1: with forwarding on, accept_ra=1 ignores advertisements,
// and that route and the SLAAC addresses would expire, cutting the host's
// IPv6 egress. accept_ra=2 keeps accepting them on that uplink only. Every
// other interface (bridges, veths, the overlay) keeps accept_ra as it is,
// so that with forwarding on none accepts advertisements: a container
// cannot make the host take it for a router. When forwarding was already on,
// the operator has chosen and no accept_ra is touched.
func ApplySysctls6() ([]Sysctl, error) {
	var changed []Sysctl
	const fwd = "/proc/sys/net/ipv6/conf/all/forwarding"
	cur, err := os.ReadFile(fwd)
	if err != nil {
		return nil, fmt.Errorf("read sysctl net.ipv6.conf.all.forwarding: %w", err)
	}
	if strings.TrimSpace(string(cur)) != "1" {
		links, err := raUplinks()
		if err != nil {
			return nil, fmt.Errorf("find interfaces with a default route from router advertisements: %w", err)
		}
		for _, name := range links {
			s := Sysctl{
				Name:  "net.ipv6.conf." + strings.ReplaceAll(name, ".", "/") + ".accept_ra",
				Value: "2",
				Why:   "keep the IPv6 default route learned from router advertisements on " + name + " once forwarding is on",
			}
			path := "/proc/sys/net/ipv6/conf/" + name + "/accept_ra"
			v, err := os.ReadFile(path)
			if err != nil {
				return changed, fmt.Errorf("read sysctl %s: %w", s.Name, err)
			}
			if strings.TrimSpace(string(v)) != "1" {
				continue // 0: not wanted; 2: already so
			}
			if err := os.WriteFile(path, []byte("2\n"), 0o644); err != nil {
				return changed, fmt.Errorf("set sysctl %s=2: %w", s.Name, err)
			}
			changed = append(changed, s)
		}
	}
	more, err := applySysctls(Sysctls6())
	return append(changed, more...), err
}

// applySysctls writes every setting of ss that does not hold its value yet
// and returns those it wrote.
func applySysctls(ss []Sysctl) ([]Sysctl, error) {
	var changed []Sysctl
	for _, s := range ss {
		path := "/proc/sys/" + strings.ReplaceAll(s.Name, ".", "/")
		cur, err := os.ReadFile(path)
		if err != nil {
			return changed, fmt.Errorf("read sysctl %s: %w", s.Name, err)
		}
		if strings.TrimSpace(string(cur)) == s.Value {
			continue
		}
		if err := os.WriteFile(path, []byte(s.Value+"\n"), 0o644); err != nil {
			return changed, fmt.Errorf("set sysctl %s=%s: %w", s.Name, s.Value, err)
		}
		changed = append(changed, s)
	}
	return changed, nil
}

// raUplinks names the interfaces holding an IPv6 default route (main
// table) learned from a router advertisement, in the calling thread's
// namespace, each once.
func raUplinks() ([]string, error) {
	routes, err := vnl.RouteListFiltered(vnl.FAMILY_V6, &vnl.Route{Table: unix.RT_TABLE_MAIN}, vnl.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	var names []string
	seen := map[int]bool{}
	add := func(idx int) error {
		if idx == 0 || seen[idx] {
			return nil
		}
		seen[idx] = true
		l, err := vnl.LinkByIndex(idx)
		if err != nil {
			return fmt.Errorf("interface %d: %w", idx, err)
		}
		names = append(names, l.Attrs().Name)
		return nil
	}
	for _, r := range routes {
		if !isDefault(r.Dst) || r.Protocol != unix.RTPROT_RA {
			continue
		}
		if err := add(r.LinkIndex); err != nil {
			return nil, err
		}
		for _, nh := range r.MultiPath {
			if err := add(nh.LinkIndex); err != nil {
				return nil, err
			}
		}
	}
	return names, nil
}
