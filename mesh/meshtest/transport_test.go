package meshtest

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func recv(t *testing.T, tr *Transport) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return p
	case <-time.After(time.Second):
		t.Fatal("no packet")
		return nil
	}
}

func noPacket(t *testing.T, tr *Transport) {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		t.Fatalf("unexpected packet %q", p.Buf)
	case <-time.After(20 * time.Millisecond):
	}
}

func TestPacketsPartitionHeal(t *testing.T) {
	n := NewNetwork()
	a, b, c := n.NewTransport("a"), n.NewTransport("b"), n.NewTransport("c")
	if a.Addr() == b.Addr() {
		t.Fatal("same address twice")
	}
	buf := []byte("hello")
	a.WriteTo(buf, b.Addr().String())
	buf[0] = 'X' // the sender's buffer is not shared
	if p := recv(t, b); string(p.Buf) != "hello" || p.From.String() != a.Addr().String() {
		t.Errorf("got %q from %v", p.Buf, p.From)
	}

	n.Partition([]string{"a"}, []string{"b", "c"})
	a.WriteTo([]byte("x"), b.Addr().String())
	noPacket(t, b)
	c.WriteTo([]byte("y"), b.Addr().String())
	recv(t, b)
	if _, err := a.DialTimeout(b.Addr().String(), time.Second); !errors.Is(err, ErrUnreachable) {
		t.Errorf("dial across the partition: %v", err)
	}

	n.Heal()
	n.Cut("c")
	c.WriteTo([]byte("z"), b.Addr().String())
	noPacket(t, b)
	a.WriteTo([]byte("w"), b.Addr().String())
	recv(t, b)
	if s := n.Stats(); s.Dropped != 2 || s.Packets != 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestStreamsAndShutdown(t *testing.T) {
	n := NewNetwork()
	a, b := n.NewTransport("a"), n.NewTransport("b")
	go func() {
		conn := <-b.StreamCh()
		defer conn.Close()
		if conn.RemoteAddr().String() != a.Addr().String() {
			t.Errorf("stream from %v", conn.RemoteAddr())
		}
		io.Copy(conn, conn) // echo until closed
	}()
	conn, err := a.DialTimeout(b.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("ping"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "ping" {
		t.Errorf("echo %q, %v", got, err)
	}
	conn.Close()

	// Nobody accepts: the dial times out.
	if _, err := b.DialTimeout(a.Addr().String(), 20*time.Millisecond); !errors.Is(err, ErrUnreachable) {
		t.Errorf("dial to a node that does not accept: %v", err)
	}
	// After Shutdown the address is free for a restarted node, and the old
	// transport refuses to send.
	addr := b.Addr()
	b.Shutdown()
	b.Shutdown()
	if _, err := n.NewTransportAt("b", addr); err != nil {
		t.Errorf("address not freed: %v", err)
	}
	if _, err := n.NewTransportAt("x", addr); err == nil {
		t.Error("one address given twice")
	}
	if _, err := b.WriteTo([]byte("x"), a.Addr().String()); err == nil {
		t.Error("a shut down transport sent")
	}
}
