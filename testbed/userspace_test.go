package testbed

import (
	"slices"
	"strings"
	"testing"
)

func TestUserspaceOptions(t *testing.T) {
	tests := []struct {
		hosts int
		us    []string
		bad   bool
	}{
		{3, []string{"h3"}, false},
		{3, []string{"h1", "h3"}, false},
		{3, nil, false},
		{3, []string{"h4"}, true},
		{3, []string{"web"}, true},
	}
	for _, tt := range tests {
		_, err := Options{Hosts: tt.hosts, Userspace: tt.us, NoStart: true, Prefix: "zq"}.withDefaults()
		if (err != nil) != tt.bad {
			t.Errorf("Userspace %v on %d hosts: %v, want bad=%v", tt.us, tt.hosts, err, tt.bad)
		}
	}
}

func TestUnprivilegedArgv(t *testing.T) {
	argv, err := unprivilegedArgv([]string{"/bin/zlmesh", "up", "--userspace"})
	if err != nil {
		t.Skip(err) // no user nobody here
	}
	if argv[0] != "setpriv" || !slices.Equal(argv[len(argv)-3:], []string{"/bin/zlmesh", "up", "--userspace"}) {
		t.Fatalf("argv %v", argv)
	}
	joined := strings.Join(argv, " ")
	for _, want := range []string{"--clear-groups", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs", "--reuid", "--regid"} {
		if !strings.Contains(joined, want) {
			t.Errorf("argv lacks %s: %s", want, joined)
		}
	}
}
