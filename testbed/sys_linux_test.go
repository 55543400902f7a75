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

func TestQuotesEcho(t *testing.T) {
	// An ICMP error quotes the IP header of our request and its first 8
	// bytes: type, code, checksum, id, sequence.
	echo := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}
	v4 := append(append([]byte{0x45}, make([]byte, 19)...), echo...)
	v4opts := append(append([]byte{0x46}, make([]byte, 23)...), echo...)
	v6 := append(make([]byte, 40), echo...)
	cases := []struct {
		name string
		q    []byte
		v6   bool
		id   uint16
		want bool
	}{
		{"ipv4", v4, false, 0x1234, true},
		{"ipv4 with options", v4opts, false, 0x1234, true},
		{"ipv6", v6, true, 0x1234, true},
		{"other id", v4, false, 0x4321, false},
		{"truncated", v4[:25], false, 0x1234, false},
		{"empty", nil, false, 0x1234, false},
		{"bad header length", append([]byte{0x4f}, make([]byte, 30)...), false, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := quotesEcho(c.q, c.v6, c.id, 1); got != c.want {
				t.Errorf("quotesEcho = %v, want %v", got, c.want)
			}
		})
	}
}

func FuzzQuotesEcho(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 0}, false)
	f.Add(make([]byte, 48), true)
	f.Fuzz(func(t *testing.T, q []byte, v6 bool) {
		quotesEcho(q, v6, 1, 1) // must not panic
	})
}
