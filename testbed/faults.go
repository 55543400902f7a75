package testbed

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Cut takes h off the underlay: its switch port goes down, so nothing
// reaches it or leaves it (its eth0 loses carrier). Cutting a cut host
// succeeds.
func (tb *Testbed) Cut(h *Host) error { return tb.setCut(h, true) }

// Restore puts h back on the underlay (its switch port up again).
func (tb *Testbed) Restore(h *Host) error { return tb.setCut(h, false) }

func (tb *Testbed) setCut(h *Host, cut bool) error {
	if h == nil || h.tb != tb {
		return fmt.Errorf("cut/restore: host is not part of testbed %s", tb.Prefix)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return ErrClosed
	}
	if err := setPortUp(tb.switchNetns(), h.Name, !cut); err != nil {
		return err
	}
	tb.st.Cut = slices.DeleteFunc(tb.st.Cut, func(n string) bool { return n == h.Name })
	if cut {
		tb.st.Cut = append(tb.st.Cut, h.Name)
		tb.opts.Logf("testbed %s: %s cut off", tb.Prefix, h.Name)
	} else {
		tb.opts.Logf("testbed %s: %s restored", tb.Prefix, h.Name)
	}
	return tb.saveLocked()
}

// IsCut reports whether h is cut off (Cut without Restore).
func (tb *Testbed) IsCut(h *Host) bool {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return slices.Contains(tb.st.Cut, h.Name)
}

// partitionTable is the nftables table (bridge family, in the switch
// namespace) that holds the partition's drops.
const partitionTable = "zltestbed"

// Partition drops all traffic between hosts of different groups: every
// frame the switch would forward from a port of one group to a port of
// another (IPv4, ARP, everything). Hosts in the same group, hosts in no
// group, the switch itself and the outside keep talking to everyone. A
// partition replaces the previous one, atomically; fewer than two non-empty
// groups is Heal. A host may be in one group only.
func (tb *Testbed) Partition(groups ...[]*Host) error {
	var names [][]string
	seen := map[*Host]bool{}
	for _, g := range groups {
		var ns []string
		for _, h := range g {
			if h == nil || h.tb != tb {
				return fmt.Errorf("partition: host is not part of testbed %s", tb.Prefix)
			}
			if seen[h] {
				return fmt.Errorf("partition: host %s is in more than one group", h.Name)
			}
			seen[h] = true
			ns = append(ns, h.Name)
		}
		if len(ns) > 0 {
			names = append(names, ns)
		}
	}
	if len(names) < 2 {
		return tb.Heal()
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return ErrClosed
	}
	if err := tb.nftLocked(partitionRules(names)); err != nil {
		return fmt.Errorf("partition %v: %w", names, err)
	}
	tb.st.Partition = names
	tb.opts.Logf("testbed %s: partitioned %v", tb.Prefix, names)
	return tb.saveLocked()
}

// Heal removes the partition. Healing an unpartitioned testbed succeeds.
func (tb *Testbed) Heal() error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return ErrClosed
	}
	if err := tb.nftLocked(healRules()); err != nil {
		return fmt.Errorf("heal: %w", err)
	}
	if tb.st.Partition != nil {
		tb.opts.Logf("testbed %s: healed", tb.Prefix)
	}
	tb.st.Partition = nil
	return tb.saveLocked()
}

// Partitioned returns the groups of the current partition (nil: none).
func (tb *Testbed) Partitioned() [][]string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var g [][]string
	for _, ns := range tb.st.Partition {
		g = append(g, slices.Clone(ns))
	}
	return g
}

// healRules removes the partition table whether or not it exists (declaring
// it first makes the delete never fail), in one transaction.
func healRules() string {
	return fmt.Sprintf("table bridge %[1]s\ndelete table bridge %[1]s\n", partitionTable)
}

// partitionRules replaces the partition table with drops between the ports
// of every ordered pair of groups. Switch ports are named like their hosts.
func partitionRules(groups [][]string) string {
	var b strings.Builder
	b.WriteString(healRules())
	fmt.Fprintf(&b, "table bridge %s {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n", partitionTable)
	for i, from := range groups {
		for j, to := range groups {
			if i == j {
				continue
			}
			fmt.Fprintf(&b, "\t\tiifname { %s } oifname { %s } drop\n", quoteAll(from), quoteAll(to))
		}
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `"` + n + `"`
	}
	return strings.Join(q, ", ")
}

// nftLocked loads an nft script in the switch namespace. tb.mu is held.
func (tb *Testbed) nftLocked(script string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	argv := []string{"nft", "-f", "-"}
	cmd := command(ctx, netnsArgv(tb.switchNetns(), argv))
	cmd.Stdin = strings.NewReader(script)
	_, err := run(cmd, tb.switchNetns(), argv)
	return err
}
