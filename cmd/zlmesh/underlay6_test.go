package main

import (
	"strings"
	"testing"
)

// The underlay flags take IPv6 values, in every place settings come from.
func TestUpFlagsIPv6Underlay(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  []string
		file string
	}{
		{name: "flags", args: []string{"--advertise-addr", "2001:db8:0:2::11", "--bind-addr", "::", "--join", "[2001:db8:0:2::12]:7946,[2001:db8:0:2::13]:7946"}},
		{name: "environment", env: []string{"ZLMESH_ADVERTISE_ADDR=2001:db8:0:2::11", "ZLMESH_BIND_ADDR=::", "ZLMESH_JOIN=[2001:db8:0:2::12]:7946,[2001:db8:0:2::13]:7946"}},
		{name: "config file", args: []string{"--config={file}"}, file: "advertise-addr = 2001:db8:0:2::11\nbind-addr = \"::\"\njoin = [2001:db8:0:2::12]:7946,[2001:db8:0:2::13]:7946\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, _, err := parseUp(t, tt.args, tt.env, tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.AdvertiseAddr.String() != "2001:db8:0:2::11" || cfg.BindAddr.String() != "::" ||
				strings.Join(cfg.Join, " ") != "[2001:db8:0:2::12]:7946 [2001:db8:0:2::13]:7946" {
				t.Errorf("advertise %s bind %s join %q", cfg.AdvertiseAddr, cfg.BindAddr, cfg.Join)
			}
		})
	}
	if _, _, _, err := parseUp(t, []string{"--advertise-addr", "[2001:db8:0:2::11]"}, nil, ""); err == nil {
		t.Error("--advertise-addr with brackets was accepted")
	}
}
