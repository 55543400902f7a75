package tun

import (
	"fmt"
	"testing"

	"github.com/zlmesh/zlmesh/tun/tuntest"
)

// The benchmarks run over templateDevice, which fills each batch with
// copies of one packet and has no channels or syscalls, so what is added on
// top of the bare device is the Wrapper's own cost. Each reports ns/packet
// (the time of one op divided by the packets in it) next to ns/op and
// allocs/op.

var benchPkt = tuntest.UDP(a4, b4, make([]byte, 100)) // 128 bytes

func accept(*Packet) Verdict { return Accept }

func BenchmarkRead(b *testing.B) {
	for _, batch := range []int{1, 128} {
		for _, tc := range []struct {
			name  string
			hooks int // -1: the bare device, no Wrapper
		}{
			{"bare", -1},
			{"nohooks", 0},
			{"onehook", 1},
			{"threehooks", 3},
		} {
			b.Run(fmt.Sprintf("batch=%d/%s", batch, tc.name), func(b *testing.B) {
				var dev Device = &templateDevice{pkt: benchPkt, batch: batch}
				if tc.hooks >= 0 {
					w := NewWrapper(dev)
					for i := range tc.hooks {
						w.AddHook(Outbound, i, "accept", accept)
					}
					dev = w
				}
				bufs, sizes := makeBufs(batch, 16+2048)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if n, err := dev.Read(bufs, sizes, 16); n != batch || err != nil {
						b.Fatalf("Read = %d, %v", n, err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/packet")
			})
		}
	}
}

func BenchmarkWrite(b *testing.B) {
	const batch = 128
	for _, tc := range []struct {
		name  string
		hooks int
	}{
		{"bare", -1},
		{"nohooks", 0},
		{"onehook", 1},
	} {
		b.Run(fmt.Sprintf("batch=%d/%s", batch, tc.name), func(b *testing.B) {
			var dev Device = &templateDevice{pkt: benchPkt, batch: batch}
			if tc.hooks >= 0 {
				w := NewWrapper(dev)
				for i := range tc.hooks {
					w.AddHook(Inbound, i, "accept", accept)
				}
				dev = w
			}
			bufs := make([][]byte, batch)
			for i := range bufs {
				bufs[i] = append(make([]byte, 16), benchPkt...)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if n, err := dev.Write(bufs, 16); n != batch || err != nil {
					b.Fatalf("Write = %d, %v", n, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/packet")
		})
	}
}

func BenchmarkInjectInbound(b *testing.B) {
	w := NewWrapper(&templateDevice{pkt: benchPkt, batch: 1})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := w.InjectInbound(benchPkt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	var p Packet
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"udp4", benchPkt},
		{"udp6", tuntest.UDP(a6, b6, make([]byte, 100))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				p.Decode(tc.pkt)
			}
		})
	}
}
