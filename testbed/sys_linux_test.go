//go:build linux

package testbed

import (
	"os"
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
