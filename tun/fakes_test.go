package tun

import (
	"os"
	"sync"
	"sync/atomic"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// templateDevice is a device without channels for benchmarks and
// allocation tests: Read fills a whole batch with copies of a template
// packet, Write counts and discards.
type templateDevice struct {
	pkt     []byte
	batch   int
	written atomic.Uint64
}

func (d *templateDevice) File() *os.File { return nil }
func (d *templateDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := min(d.batch, len(bufs))
	for i := range n {
		sizes[i] = copy(bufs[i][offset:], d.pkt)
	}
	return n, nil
}
func (d *templateDevice) Write(bufs [][]byte, offset int) (int, error) {
	d.written.Add(uint64(len(bufs)))
	return len(bufs), nil
}
func (d *templateDevice) MTU() (int, error)          { return DefaultMTU, nil }
func (d *templateDevice) Name() (string, error)      { return "template", nil }
func (d *templateDevice) Events() <-chan wgtun.Event { return nil }
func (d *templateDevice) Close() error               { return nil }
func (d *templateDevice) BatchSize() int             { return d.batch }

// scriptDevice returns scripted reads (packets and an error per call) and
// records every Write call with its offset.
type scriptDevice struct {
	reads []scriptRead

	mu     sync.Mutex
	writes []scriptWrite
}

type scriptRead struct {
	pkts [][]byte
	err  error
}

type scriptWrite struct {
	pkts   [][]byte // copies of bufs[i][offset:]
	offset int
	head   []int // len(bufs[i][:offset]) as given
}

func (d *scriptDevice) File() *os.File { return nil }
func (d *scriptDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(d.reads) == 0 {
		return 0, os.ErrClosed
	}
	r := d.reads[0]
	d.reads = d.reads[1:]
	for i, p := range r.pkts {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(r.pkts), r.err
}
func (d *scriptDevice) Write(bufs [][]byte, offset int) (int, error) {
	w := scriptWrite{offset: offset}
	for _, b := range bufs {
		w.pkts = append(w.pkts, append([]byte(nil), b[offset:]...))
		w.head = append(w.head, len(b[:offset]))
	}
	d.mu.Lock()
	d.writes = append(d.writes, w)
	d.mu.Unlock()
	return len(bufs), nil
}
func (d *scriptDevice) MTU() (int, error)          { return DefaultMTU, nil }
func (d *scriptDevice) Name() (string, error)      { return "script", nil }
func (d *scriptDevice) Events() <-chan wgtun.Event { return nil }
func (d *scriptDevice) Close() error               { return nil }
func (d *scriptDevice) BatchSize() int             { return 8 }

// makeBufs returns n buffers of size bytes each, like wireguard-go's.
func makeBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}
