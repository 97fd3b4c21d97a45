// Package relay copies bytes between two connections, both ways at once,
// propagating half-closes: the L4 forwarding of the node proxy and the
// gateway. (The inbound splices a tunnel stream to its pod with its own
// copy, which a policy change can take back: inbound.Server.splice.)
package relay

import (
	"io"
	"sync"
)

// HalfCloser is a connection that can end its sending side alone: a tunnel
// stream, a TCP or a TLS connection.
type HalfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Splice copies both directions, propagating half-closes, and returns when
// both are done (or one side fails, which closes both): sent is what it
// copied from c to up, received from up to c.
func Splice(c io.ReadWriteCloser, up HalfCloser) (sent, received int64) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		bp := bufPool.Get().(*[]byte)
		var err error
		sent, err = io.CopyBuffer(up, c, *bp)
		bufPool.Put(bp)
		if err != nil {
			up.Close()
			c.Close()
			return
		}
		up.CloseWrite()
	}()
	bp := bufPool.Get().(*[]byte)
	received, err := io.CopyBuffer(c, up, *bp)
	bufPool.Put(bp)
	if cw, ok := c.(interface{ CloseWrite() error }); ok && err == nil {
		cw.CloseWrite()
	} else {
		c.Close()
		up.Close()
	}
	<-done
	return sent, received
}
