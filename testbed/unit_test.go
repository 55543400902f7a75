package testbed

import (
	"strings"
	"testing"
)

func TestPartitionRules(t *testing.T) {
	got := partitionRules([][]string{{"h1", "h2"}, {"h3"}})
	want := `table bridge zltestbed
delete table bridge zltestbed
table bridge zltestbed {
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname { "h1", "h2" } oifname { "h3" } drop
		iifname { "h3" } oifname { "h1", "h2" } drop
	}
}
`
	if got != want {
		t.Errorf("partitionRules:\n%s\nwant:\n%s", got, want)
	}
	if h := healRules(); !strings.HasPrefix(got, h) {
		t.Errorf("a partition does not start by removing the old one")
	}
}

func TestChecksum(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want uint16
	}{
		{"echo request", []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}, 0xe5ca},
		{"odd length", []byte{0xff}, 0x00ff},
		{"all ones", []byte{0xff, 0xff}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := checksum(c.in); got != c.want {
				t.Errorf("checksum = %#04x, want %#04x", got, c.want)
			}
		})
	}
}
