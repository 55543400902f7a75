package pipe

import (
	"errors"
	"testing"
)

func TestSDDL(t *testing.T) {
	cases := []struct {
		name, sid, want string
		err             error
	}{
		{"admins only", "", "D:P(A;;GA;;;SY)(A;;GA;;;BA)", nil},
		{"plus Users", "S-1-5-32-545", "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;S-1-5-32-545)", nil},
		{"domain group", "S-1-5-21-1004336348-1177238915-682003330-1010",
			"D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;S-1-5-21-1004336348-1177238915-682003330-1010)", nil},
		{"a name, not a SID", "zlmesh-users", "", ErrBadGroup},
		{"SDDL injection", "S-1-5-32-545)(A;;GA;;;WD", "", ErrBadGroup},
		{"alias", "BU", "", ErrBadGroup},
		{"empty sub-authority", "S-1-5--1", "", ErrBadGroup},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Config{GroupSID: tc.sid}.SDDL()
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("SDDL(%q) = %q, %v; want %q, %v", tc.sid, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestIsPipeName(t *testing.T) {
	for name, want := range map[string]bool{
		`\\.\pipe\zlmesh`:          true,
		`\\.\PIPE\zlmesh`:          true,
		`\\.\pipe\`:                false,
		`\\.\pipe\a\b`:             false,
		`\\server\pipe\zlmesh`:     false,
		`/run/zlmesh/zlmesh.sock`:  false,
		`C:\ProgramData\zlmesh.sk`: false,
	} {
		if got := IsPipeName(name); got != want {
			t.Errorf("IsPipeName(%q) = %v", name, got)
		}
	}
}
