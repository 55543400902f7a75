package netproxy

import (
	"io"
	"net"
	"sync"
)

// closeWriter is a connection whose write half can be shut on its own.
type closeWriter interface{ CloseWrite() error }

// splice copies a→b and b→a until both directions end, passing a half
// close on when the connection supports it, then closes both. It returns
// the bytes copied each way.
func splice(a, b net.Conn) (aToB, bToA int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	one := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		var err error
		*n, err = io.Copy(dst, src)
		if err != nil {
			// A reset or a failed write: end both directions.
			a.Close()
			b.Close()
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go one(b, a, &aToB)
	go one(a, b, &bToA)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA
}
