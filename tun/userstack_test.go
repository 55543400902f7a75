package tun

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/tun/tuntest"
)

func TestUserStackAddress(t *testing.T) {
	s, err := NewUserStack(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Addr().IsValid() {
		t.Fatalf("new stack has address %s", s.Addr())
	}
	tests := []struct {
		addr string
		bad  bool
	}{
		{"10.200.1.1/16", false},
		{"10.200.1.1/16", false}, // idempotent
		{"10.200.2.1/16", false}, // renumbered
		{"0.0.0.0/0", true},
		{"224.0.0.1/32", true},
	}
	for _, tt := range tests {
		err := s.SetAddress(netip.MustParsePrefix(tt.addr))
		if (err != nil) != tt.bad {
			t.Fatalf("SetAddress(%s): %v", tt.addr, err)
		}
	}
	if got := s.Addr(); got != netip.MustParsePrefix("10.200.2.1/16") {
		t.Fatalf("Addr %s", got)
	}
	// The IPv6 twin goes beside it; the IPv4 address stays.
	if err := s.SetAddress(netip.MustParsePrefix("fd12:3456:789a:8::1/48")); err != nil {
		t.Fatal(err)
	}
	if got, got6 := s.Addr(), s.Addr6(); got != netip.MustParsePrefix("10.200.2.1/16") || got6 != netip.MustParsePrefix("fd12:3456:789a:8::1/48") {
		t.Fatalf("Addr %s, Addr6 %s", got, got6)
	}
	// Only the new address answers an echo request.
	for _, dst := range []string{"10.200.1.1", "10.200.2.1"} {
		s.Write([][]byte{tuntest.ICMPEcho(netip.MustParseAddr("10.200.9.9"), netip.MustParseAddr(dst), 1, 1, nil)}, 0)
	}
	bufs := [][]byte{make([]byte, 1500), make([]byte, 1500)}
	sizes := make([]int, 2)
	n, err := s.Read(bufs, sizes, 0)
	if err != nil || n != 1 {
		t.Fatalf("Read = %d, %v; want the one reply", n, err)
	}
	var p Packet
	p.Decode(bufs[0][:sizes[0]])
	if p.Src != netip.MustParseAddr("10.200.2.1") {
		t.Fatalf("reply from %s", p.Src)
	}
}

func TestUserStackClose(t *testing.T) {
	s, err := NewUserStack(1280)
	if err != nil {
		t.Fatal(err)
	}
	if mtu, _ := s.MTU(); mtu != 1280 {
		t.Errorf("MTU %d", mtu)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Read([][]byte{make([]byte, 1500)}, []int{0}, 0)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	s.Close()
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
	if _, err := s.Write([][]byte{{0x45}}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if _, err := NewUserStack(10); err == nil {
		t.Fatal("NewUserStack(10) accepted an MTU below 68")
	}
}
