//go:build linux

package tun

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/zlmesh/zlmesh/internal/nstest"
	"github.com/zlmesh/zlmesh/tun/tuntest"
	"golang.org/x/sys/unix"
)

// injectBed is a kernel TUN in its own namespace, with 10.99.0.1/24 on it,
// and a UDP socket on 10.99.0.1:7000 that injected packets reach.
type injectBed struct {
	w    *Wrapper
	conn *net.UDPConn
	from netip.AddrPort
	to   netip.AddrPort
}

func newInjectBed(tb testing.TB) *injectBed {
	tb.Helper()
	ns := nstest.New(tb, "zlt-tun")
	var b [4]byte
	rand.Read(b[:])
	name := "zlt" + hex.EncodeToString(b[:])
	var dev Device
	var conn *net.UDPConn
	err := ns.Do(func() error {
		var err error
		if dev, err = Create(name, 0); err != nil {
			return err
		}
		if err := setAddressAt(ns.NL, name, netip.MustParsePrefix("10.99.0.1/24")); err != nil {
			return err
		}
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.99.0.1"), Port: 7000})
		return err
	})
	if err != nil {
		tb.Fatalf("tun in %s: %v", ns.Name, err)
	}
	go func() {
		for range dev.Events() {
		}
	}()
	w := NewWrapper(dev)
	tb.Cleanup(func() {
		conn.Close()
		w.Close()
	})
	return &injectBed{w: w, conn: conn,
		from: netip.MustParseAddrPort("10.98.0.5:9000"), to: netip.MustParseAddrPort("10.99.0.1:7000")}
}

// InjectInbound on a kernel TUN takes the single-packet path, and it may
// run concurrently with Write batches: every packet of both arrives whole.
func TestInjectConcurrentWithWrite(t *testing.T) {
	bed := newInjectBed(t)
	if _, ok := bed.w.Unwrap().(oneWriter); !ok {
		t.Fatalf("%T does not write single packets itself", bed.w.Unwrap())
	}
	const perWorker, workers = 100, 4
	bed.conn.SetReadBuffer(1 << 20)
	got := make(chan map[string]bool, 1)
	go func() {
		seen := map[string]bool{}
		buf := make([]byte, 1500)
		bed.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(seen) < 2*perWorker*workers {
			n, err := bed.conn.Read(buf)
			if err != nil {
				break
			}
			seen[string(buf[:n])] = true
		}
		got <- seen
	}()
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := range perWorker {
				pkt := tuntest.UDP(bed.from, bed.to, fmt.Appendf(nil, "%d-inject", g*perWorker+i))
				if err := bed.w.InjectInbound(pkt); err != nil {
					t.Errorf("inject: %v", err)
					return
				}
			}
		})
		wg.Go(func() {
			for i := 0; i < perWorker; i += 4 {
				var bufs [][]byte
				for j := i; j < i+4; j++ {
					p := tuntest.UDP(bed.from, bed.to, fmt.Appendf(nil, "%d-write", g*perWorker+j))
					bufs = append(bufs, append(make([]byte, 16), p...))
				}
				if _, err := bed.w.Write(bufs, 16); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if seen := <-got; len(seen) != 2*perWorker*workers {
		t.Errorf("the socket received %d distinct packets, want %d", len(seen), 2*perWorker*workers)
	}
	if c := bed.w.Counters(Inbound); c.Injected != perWorker*workers {
		t.Errorf("injected %d, want %d", c.Injected, perWorker*workers)
	}
}

// BenchmarkInjectInboundTUN is one DNS-answer-sized packet into a real TUN:
// through wireguard-go's Write (a batch of one) and through InjectInbound's
// single-packet path. Both include the kernel's delivery to a UDP socket,
// which is not read (once its buffer is full the kernel drops at the socket,
// the same for both), so ns/op is mostly the kernel's; user-ns/op is the
// process's user CPU time per packet (getrusage), the part in Go.
func BenchmarkInjectInboundTUN(b *testing.B) {
	bed := newInjectBed(b)
	pkt := tuntest.UDP(bed.from, bed.to, make([]byte, 60))
	b.Run("wireguard-go-write", func(b *testing.B) {
		dev := bed.w.Unwrap()
		bufs := [][]byte{append(make([]byte, injectHeadroom), pkt...)}
		b.ReportAllocs()
		u0 := userTime()
		for b.Loop() {
			if _, err := dev.Write(bufs, injectHeadroom); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(userTime()-u0)/float64(b.N), "user-ns/op")
	})
	b.Run("inject", func(b *testing.B) {
		b.ReportAllocs()
		u0 := userTime()
		for b.Loop() {
			if err := bed.w.InjectInbound(pkt); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(userTime()-u0)/float64(b.N), "user-ns/op")
	})
}

// userTime is the process's user CPU time so far.
func userTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano())
}
