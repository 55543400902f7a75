package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/zlmesh/zlmesh/testbed"
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

func TestTestbedUnderlayFlag(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want testbed.UnderlayFamily
		ok   bool
	}{
		{nil, testbed.UnderlayIPv4, true},
		{[]string{"--underlay", "ipv6"}, testbed.UnderlayIPv6, true},
		{[]string{"--underlay=dual"}, testbed.UnderlayDual, true},
		{[]string{"--underlay", "ipx"}, "", false},
	} {
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f := underlayFlag(fs)
		err := fs.Parse(tt.args)
		if (err == nil) != tt.ok || (tt.ok && *f != tt.want) {
			t.Errorf("%q: %q, %v", tt.args, *f, err)
		}
	}
}
