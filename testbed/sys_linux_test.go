//go:build linux

package testbed

import (
	"os"
	"slices"
	"testing"
)

func TestParseStat(t *testing.T) {
	tail := " S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 12345 20 21"
	cases := []struct {
		name   string
		in     string
		start  uint64
		zombie bool
		ok     bool
	}{
		{"plain", "42 (sleep)" + tail, 12345, false, true},
		{"spaces and parens in the name", "42 (a) b (c))" + tail, 12345, false, true},
		{"zombie", "42 (x) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 7 20", 7, true, true},
		{"no name", "42 sleep S 1", 0, false, false},
		{"short", "42 (x) S 1 2 3", 0, false, false},
		{"bad start", "42 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x 20", 0, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start, zombie, err := parseStat(c.in)
			if (err == nil) != c.ok || start != c.start || zombie != c.zombie {
				t.Errorf("parseStat = %d %v %v, want %d %v ok=%v", start, zombie, err, c.start, c.zombie, c.ok)
			}
		})
	}
	if _, _, err := procStartTime(os.Getpid()); err != nil {
		t.Errorf("own start time: %v", err)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add("42 (sleep) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 12345 20 21")
	f.Add("1 ()) Z")
	f.Fuzz(func(t *testing.T, s string) {
		parseStat(s) // must not panic
	})
}

func TestParseMountPoints(t *testing.T) {
	in := `21 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
43 42 0:4 net:[4026532319] /run/zt\040x/netns/zt-h1 rw shared:2 - nsfs nsfs rw
44 42 0:4 net:[1] /a\134b\011c rw - nsfs nsfs rw
short line
45 1 0:5 / /bad\9 rw - tmpfs t rw
`
	got := parseMountPoints(in)
	want := []string{"/run/netns", "/run/zt x/netns/zt-h1", "/a\\b\tc", "/bad\\9"}
	if !slices.Equal(got, want) {
		t.Errorf("parseMountPoints = %q, want %q", got, want)
	}
}

func FuzzParseMountPoints(f *testing.F) {
	f.Add("21 27 254:0 / /run/a\\040b rw - ext4 /dev/vda rw\n")
	f.Fuzz(func(t *testing.T, s string) {
		parseMountPoints(s) // must not panic
	})
}
