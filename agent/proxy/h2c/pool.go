package h2c

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
)

// Client is an HTTP/2 client over connections pooled by key: requests to
// a key share its connections, one more is dialed when they are full (or
// going away).
type Client[K comparable] struct {
	dial    func(ctx context.Context, k K) (net.Conn, error)
	cfg     ClientConfig
	mu      sync.Mutex
	conns   map[K][]*ClientConn
	dialing map[K]*dialCall
	closed  bool
}

type dialCall struct {
	done chan struct{}
	cc   *ClientConn
	err  error
}

// ErrClientClosed: the client was closed.
var ErrClientClosed = errors.New("http2 client closed")

// NewClient returns a Client that opens connections with dial.
func NewClient[K comparable](dial func(ctx context.Context, k K) (net.Conn, error), cfg ClientConfig) *Client[K] {
	return &Client[K]{dial: dial, cfg: cfg, conns: make(map[K][]*ClientConn), dialing: make(map[K]*dialCall)}
}

// RoundTrip sends req on a connection of k. A request the server never
// processed (its connection went away first) is sent once more on
// another connection when it has no body or can replay it.
func (cl *Client[K]) RoundTrip(ctx context.Context, k K, req *http.Request) (*http.Response, error) {
	for try := 0; ; try++ {
		cc, err := cl.conn(ctx, k)
		if err != nil {
			return nil, err
		}
		resp, err := cc.RoundTrip(req)
		if err == nil || try > 0 || !errors.Is(err, ErrGoingAway) || ctx.Err() != nil {
			return resp, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
	}
}

// conn returns a pooled connection with room for a stream, dialing one
// (once per key at a time) when there is none.
func (cl *Client[K]) conn(ctx context.Context, k K) (*ClientConn, error) {
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return nil, ErrClientClosed
	}
	cs := cl.conns[k]
	live := cs[:0]
	var pick *ClientConn
	for _, cc := range cs {
		if cc.Usable() {
			live = append(live, cc)
			if pick == nil {
				pick = cc
			}
		} else if cc.Streams() > 0 {
			live = append(live, cc) // full, or draining: kept for Close
		}
	}
	clear(cs[len(live):])
	if len(live) == 0 {
		delete(cl.conns, k)
	} else {
		cl.conns[k] = live
	}
	if pick != nil {
		cl.mu.Unlock()
		return pick, nil
	}
	call, ok := cl.dialing[k]
	if !ok {
		call = &dialCall{done: make(chan struct{})}
		cl.dialing[k] = call
		// the dial outlives the request that started it: others wait on it
		dctx := context.WithoutCancel(ctx)
		go func() {
			nc, err := cl.dial(dctx, k)
			if err == nil {
				call.cc, err = NewClientConn(nc, cl.cfg)
			}
			call.err = err
			cl.mu.Lock()
			delete(cl.dialing, k)
			if err == nil {
				if cl.closed {
					call.cc.Close()
					call.err = ErrClientClosed
				} else {
					cl.conns[k] = append(cl.conns[k], call.cc)
				}
			}
			cl.mu.Unlock()
			close(call.done)
		}()
	}
	cl.mu.Unlock()
	select {
	case <-call.done:
		return call.cc, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close closes every connection; later requests fail.
func (cl *Client[K]) Close() {
	cl.mu.Lock()
	cl.closed = true
	var all []*ClientConn
	for _, cs := range cl.conns {
		all = append(all, cs...)
	}
	clear(cl.conns)
	cl.mu.Unlock()
	for _, cc := range all {
		cc.Close()
	}
}
