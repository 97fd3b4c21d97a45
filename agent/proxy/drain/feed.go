package drain

import (
	"net"
	"sync"
)

// Feed is a net.Listener whose connections are pushed by the proxy's own
// accept loop once it has classified them: it hands them to an
// http.Server (Serve(feed)), which then owns them.
type Feed struct {
	ch     chan net.Conn
	done   chan struct{}
	closer sync.Once
}

// NewFeed returns an open Feed.
func NewFeed() *Feed {
	return &Feed{ch: make(chan net.Conn), done: make(chan struct{})}
}

// Push hands c to the server; false when the feed is closed (the caller
// closes c).
func (l *Feed) Push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// Accept returns the next pushed connection.
func (l *Feed) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close ends Accept; later Pushes fail.
func (l *Feed) Close() error {
	l.closer.Do(func() { close(l.done) })
	return nil
}

// Addr is a placeholder: the feed has no address of its own.
func (l *Feed) Addr() net.Addr { return &net.TCPAddr{} }
