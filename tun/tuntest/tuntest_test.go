package tuntest

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	gvcsum "gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	src4 = netip.MustParseAddrPort("10.0.0.1:1000")
	dst4 = netip.MustParseAddrPort("10.0.0.2:53")
	src6 = netip.MustParseAddrPort("[fd00::1]:1000")
	dst6 = netip.MustParseAddrPort("[fd00::2]:53")
)

// TestBuilders checks the packets against gVisor's header code, which
// shares nothing with the builders.
func TestBuilders(t *testing.T) {
	tests := []struct {
		name     string
		pkt      []byte
		proto    uint8
		src, dst netip.Addr
		tlen     int
	}{
		{"udp4", UDP(src4, dst4, []byte("abc")), protoUDP, src4.Addr(), dst4.Addr(), 11},
		{"udp6", UDP(src6, dst6, []byte("abcd")), protoUDP, src6.Addr(), dst6.Addr(), 12},
		{"syn4", TCPSYN(src4, dst4), protoTCP, src4.Addr(), dst4.Addr(), 20},
		{"syn6", TCPSYN(src6, dst6), protoTCP, src6.Addr(), dst6.Addr(), 20},
		{"echo4", ICMPEcho(src4.Addr(), dst4.Addr(), 1, 2, []byte("xyz")), protoICMP, src4.Addr(), dst4.Addr(), 11},
		{"echo6", ICMPEcho(src6.Addr(), dst6.Addr(), 1, 2, []byte("xyz")), protoICMPv6, src6.Addr(), dst6.Addr(), 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seg []byte
			var from, to tcpip.Address
			if tt.src.Is4() {
				h := header.IPv4(tt.pkt)
				if !h.IsValid(len(tt.pkt)) || !h.IsChecksumValid() || h.Protocol() != tt.proto {
					t.Fatalf("gVisor rejects the IPv4 header")
				}
				seg, from, to = h.Payload(), h.SourceAddress(), h.DestinationAddress()
			} else {
				h := header.IPv6(tt.pkt)
				if !h.IsValid(len(tt.pkt)) || h.NextHeader() != tt.proto {
					t.Fatalf("gVisor rejects the IPv6 header")
				}
				seg, from, to = h.Payload(), h.SourceAddress(), h.DestinationAddress()
			}
			if from != tcpip.AddrFromSlice(tt.src.AsSlice()) || to != tcpip.AddrFromSlice(tt.dst.AsSlice()) || len(seg) != tt.tlen {
				t.Fatalf("addresses %v %v, %d transport bytes", from, to, len(seg))
			}
			var initial uint16
			if tt.proto != protoICMP {
				initial = header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(tt.proto), from, to, uint16(len(seg)))
			}
			if gvcsum.Checksum(seg, initial) != 0xffff {
				t.Fatalf("transport checksum wrong")
			}
			if !ValidChecksums(tt.pkt) {
				t.Fatalf("ValidChecksums rejects a valid packet")
			}
			// A flipped bit anywhere a checksum covers must be caught:
			// all of IPv4 but the total length (which makes another
			// packet), IPv6 from the addresses on.
			for i := range tt.pkt {
				if tt.src.Is4() && (i == 2 || i == 3) || tt.src.Is6() && i < 8 {
					continue
				}
				bad := bytes.Clone(tt.pkt)
				bad[i] ^= 0x10
				if ValidChecksums(bad) {
					t.Fatalf("ValidChecksums accepts a flipped bit in byte %d", i)
				}
			}
		})
	}
}

func TestDevice(t *testing.T) {
	d := NewBatched(1280, 2)
	if mtu, _ := d.MTU(); mtu != 1280 || d.BatchSize() != 2 {
		t.Fatalf("MTU %d batch %d", mtu, d.BatchSize())
	}
	for _, s := range []string{"one", "two", "three"} {
		d.FromOS <- []byte(s)
	}
	bufs := [][]byte{make([]byte, 64), make([]byte, 64), make([]byte, 64)}
	sizes := make([]int, 3)
	for _, want := range [][]string{{"one", "two"}, {"three"}} {
		n, err := d.Read(bufs, sizes, 4)
		if err != nil || n != len(want) {
			t.Fatalf("Read = %d, %v; want %d", n, err, len(want))
		}
		for i, w := range want {
			if got := string(bufs[i][4 : 4+sizes[i]]); got != w {
				t.Fatalf("packet %d = %q, want %q", i, got, w)
			}
		}
	}
	d.FromOS <- make([]byte, 100)
	if _, err := d.Read(bufs, sizes, 4); err == nil {
		t.Fatalf("Read of a packet larger than the buffer succeeded")
	}

	pkt := []byte("hdr.payload")
	if n, err := d.Write([][]byte{pkt}, 4); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	copy(pkt[4:], "XXXXXXX")
	if got := string(<-d.ToOS); got != "payload" {
		t.Fatalf("ToOS got %q, want a copy of %q", got, "payload")
	}

	if ev := <-d.Events(); ev != 1 {
		t.Fatalf("first event %v", ev)
	}
	d.Close()
	d.Close()
	if _, err := d.Read(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if _, err := d.Write([][]byte{pkt}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if _, ok := <-d.Events(); ok {
		t.Fatalf("events open after Close")
	}
}
