//go:build windows

package pipe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// probeTimeout bounds Listen's check for a server on the name already
// (all its instances busy counts as there being one).
const probeTimeout = time.Second

// bufSize is the pipe's in and out buffer size (a hint to Windows).
const bufSize = 64 << 10

// ResolveGroup returns the SID (string form) of a local or domain group
// named name, or name itself when it is a SID already.
func ResolveGroup(name string) (string, error) {
	if sid, err := windows.StringToSid(name); err == nil {
		return sid.String(), nil
	}
	sid, _, _, err := windows.LookupSID("", name)
	if err != nil {
		return "", fmt.Errorf("group %q: %v: %w", name, err, ErrBadGroup)
	}
	return sid.String(), nil
}

// Listener accepts connections on a named pipe. Its methods are safe for
// concurrent use; Close unblocks Accept.
type Listener struct {
	name string
	sa   *windows.SecurityAttributes

	mu     sync.Mutex
	next   windows.Handle // the instance the next Accept waits on
	closed bool
	// waiting is the overlapped of a ConnectNamedPipe in progress (so
	// Close can cancel it), nil when none.
	waiting *windows.Overlapped
}

var _ net.Listener = (*Listener)(nil)

// Listen creates the pipe name (\\.\pipe\...) with c's security descriptor.
// It fails with ErrInUse when another process has the name already.
func Listen(name string, c Config) (net.Listener, error) {
	if !IsPipeName(name) {
		return nil, fmt.Errorf("listen on %s: not a local pipe name (\\\\.\\pipe\\NAME)", name)
	}
	sddl, err := c.SDDL()
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", name, err)
	}
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: security descriptor %s: %w", name, sddl, err)
	}
	l := &Listener{name: name, sa: &windows.SecurityAttributes{
		Length:             uint32(unsafe.Sizeof(windows.SecurityAttributes{})),
		SecurityDescriptor: sd,
	}}
	// FILE_FLAG_FIRST_PIPE_INSTANCE makes a second server fail on
	// Windows; Wine ignores it, so ask first whether anyone answers (as
	// the Unix socket's listener does).
	probe, cancel := context.WithTimeout(context.Background(), probeTimeout)
	other, err := Dial(probe, name)
	cancel()
	if err == nil || !errors.Is(err, ErrNotFound) {
		if other != nil {
			other.Close()
		}
		return nil, fmt.Errorf("listen on %s: a server answers there: %w", name, ErrInUse)
	}
	h, err := l.newInstance(true)
	if err != nil {
		return nil, err
	}
	l.next = h
	return l, nil
}

// newInstance makes one more instance of the pipe; the first one claims the
// name (FILE_FLAG_FIRST_PIPE_INSTANCE), so that a second zlmesh fails.
func (l *Listener) newInstance(first bool) (windows.Handle, error) {
	name, err := windows.UTF16PtrFromString(l.name)
	if err != nil {
		return 0, fmt.Errorf("listen on %s: %w", l.name, err)
	}
	flags := uint32(windows.PIPE_ACCESS_DUPLEX | windows.FILE_FLAG_OVERLAPPED)
	if first {
		flags |= windows.FILE_FLAG_FIRST_PIPE_INSTANCE
	}
	mode := uint32(windows.PIPE_TYPE_BYTE | windows.PIPE_READMODE_BYTE | windows.PIPE_WAIT | windows.PIPE_REJECT_REMOTE_CLIENTS)
	h, err := windows.CreateNamedPipe(name, flags, mode, windows.PIPE_UNLIMITED_INSTANCES, bufSize, bufSize, 0, l.sa)
	if err != nil {
		if first && (errors.Is(err, windows.ERROR_ACCESS_DENIED) || errors.Is(err, windows.ERROR_PIPE_BUSY)) {
			return 0, fmt.Errorf("listen on %s: %v: %w", l.name, err, ErrInUse)
		}
		return 0, fmt.Errorf("listen on %s: %w", l.name, err)
	}
	return h, nil
}

// Accept waits for a client on the current instance, makes the next
// instance (so clients never find the name missing) and returns the
// connection. A client that left before it was accepted is skipped. After
// Close it returns an error wrapping net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.acceptOnce()
		if errors.Is(err, windows.ERROR_NO_DATA) {
			continue // the client came and went; the instance is free again
		}
		return c, err
	}
}

func (l *Listener) acceptOnce() (net.Conn, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, l.closedErr()
	}
	h := l.next
	ev, err := windows.CreateEvent(nil, 1, 0, nil)
	if err != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("accept on %s: %w", l.name, err)
	}
	defer windows.CloseHandle(ev)
	ov := &windows.Overlapped{HEvent: ev}
	l.waiting = ov
	l.mu.Unlock()

	err = windows.ConnectNamedPipe(h, ov)
	switch {
	case errors.Is(err, windows.ERROR_IO_PENDING):
		var n uint32
		err = windows.GetOverlappedResult(h, ov, &n, true)
	case errors.Is(err, windows.ERROR_PIPE_CONNECTED):
		err = nil // the client came between CreateNamedPipe and here
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	l.waiting = nil
	if l.closed {
		return nil, l.closedErr()
	}
	if err != nil {
		// ERROR_NO_DATA: a client that left before we connected;
		// disconnecting makes the instance ready for the next one.
		windows.DisconnectNamedPipe(h)
		return nil, fmt.Errorf("accept on %s: %w", l.name, err)
	}
	next, err := l.newInstance(false)
	if err != nil {
		windows.DisconnectNamedPipe(h)
		return nil, err
	}
	l.next = next
	return newConn(h, l.name), nil
}

func (l *Listener) closedErr() error {
	return fmt.Errorf("accept on %s: %w", l.name, net.ErrClosed)
}

// Close stops accepting: a waiting Accept returns net.ErrClosed. The
// connections already accepted stay open. Close is idempotent.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.waiting != nil {
		windows.CancelIoEx(l.next, l.waiting)
		// Accept still uses l.next until it sees closed; closing the
		// handle after the cancellation is fine (the wait has the
		// event, not the handle).
	}
	return windows.CloseHandle(l.next)
}

// Addr returns the pipe's name.
func (l *Listener) Addr() net.Addr { return Addr(l.name) }

// Dial connects to the pipe name, waiting while every instance is busy
// until ctx ends. A pipe nobody listens on is ErrNotFound.
func Dial(ctx context.Context, name string) (net.Conn, error) {
	if !IsPipeName(name) {
		return nil, fmt.Errorf("dial %s: not a local pipe name (\\\\.\\pipe\\NAME)", name)
	}
	p, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", name, err)
	}
	for {
		// Identification only: the server may learn who we are but not
		// act as us.
		h, err := windows.CreateFile(p, windows.GENERIC_READ|windows.GENERIC_WRITE, 0, nil, windows.OPEN_EXISTING,
			windows.FILE_FLAG_OVERLAPPED|windows.SECURITY_SQOS_PRESENT|windows.SECURITY_IDENTIFICATION, 0)
		switch {
		case err == nil:
			return newConn(h, name), nil
		case errors.Is(err, windows.ERROR_FILE_NOT_FOUND):
			return nil, fmt.Errorf("dial %s: %w", name, ErrNotFound)
		case !errors.Is(err, windows.ERROR_PIPE_BUSY):
			return nil, fmt.Errorf("dial %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial %s: every instance busy: %w", name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// conn is one end of a connected pipe: an os.File on the overlapped
// handle (so it has deadlines and a Close that unblocks Read).
type conn struct {
	*os.File
	name string
}

func newConn(h windows.Handle, name string) *conn {
	return &conn{File: os.NewFile(uintptr(h), name), name: name}
}

func (c *conn) LocalAddr() net.Addr  { return Addr(c.name) }
func (c *conn) RemoteAddr() net.Addr { return Addr(c.name) }

var _ net.Conn = (*conn)(nil)
