package outbound

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// HTTP/1.1 to a backend without net/http's Transport: the request is written
// and the response read in the handler's own goroutine, over a kept-alive
// tunnel stream (or direct connection, to a pod not in the mesh). The Transport would hand each request to a writer goroutine
// and each response to a reader goroutine; on a proxy those two hand-offs
// are a large share of the CPU per request. Used for requests with a known
// body length and no protocol upgrade; everything else takes the Transport.

// maxIdlePerKey bounds the idle upstream connections kept per endpoint.
const maxIdlePerKey = 64

type h1key struct {
	src, dst spiffeid.ID
	node     string
	addr     netip.AddrPort
	plain    bool
}

type h1conn struct {
	key h1key
	c   net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
}

type h1pool struct {
	dial dialFunc
	mu   sync.Mutex
	idle map[h1key][]*h1conn
	done bool
}

func newH1Pool(dial dialFunc) *h1pool {
	return &h1pool{dial: dial, idle: make(map[h1key][]*h1conn)}
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// get returns an idle connection (reused=true) or dials a new one.
func (p *h1pool) get(ctx context.Context, k h1key) (*h1conn, bool, error) {
	p.mu.Lock()
	if l := p.idle[k]; len(l) > 0 {
		c := l[len(l)-1]
		p.idle[k] = l[:len(l)-1]
		p.mu.Unlock()
		return c, true, nil
	}
	p.mu.Unlock()
	tc, err := p.dial(ctx, k.src, k.dst, k.node, k.addr, k.plain)
	if err != nil {
		return nil, false, err
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(tc)
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(tc)
	return &h1conn{key: k, c: tc, br: br, bw: bw}, false, nil
}

func (p *h1pool) put(c *h1conn) {
	p.mu.Lock()
	if !p.done && len(p.idle[c.key]) < maxIdlePerKey && c.br.Buffered() == 0 {
		p.idle[c.key] = append(p.idle[c.key], c)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	c.close()
}

func (c *h1conn) close() {
	c.c.Close()
	c.br.Reset(nil)
	readerPool.Put(c.br)
	c.bw.Reset(nil)
	writerPool.Put(c.bw)
}

func (p *h1pool) closeAll() {
	p.mu.Lock()
	p.done = true
	var all []*h1conn
	for k, l := range p.idle {
		all = append(all, l...)
		delete(p.idle, k)
	}
	p.mu.Unlock()
	for _, c := range all {
		c.close()
	}
}

var errStale = errors.New("reused upstream connection closed before answering")

// roundTrip sends out on a pooled connection to k and reads the response.
// The response body returns the connection to the pool when read to the end
// and closed. A reused connection that turns out closed is retried once on a
// fresh one when the body can be replayed.
func (p *h1pool) roundTrip(ctx context.Context, k h1key, out *http.Request) (*http.Response, error) {
	for try := 0; ; try++ {
		c, reused, err := p.get(ctx, k)
		if err != nil {
			return nil, err
		}
		resp, err := c.exchange(ctx, out)
		if err == nil {
			resp.Body.(*h1body).pool = p
			return resp, nil
		}
		if reused && try == 0 && errors.Is(err, errStale) && (out.GetBody != nil || out.Body == nil || out.Body == http.NoBody) {
			if out.GetBody != nil {
				if out.Body, err = out.GetBody(); err != nil {
					return nil, err
				}
			}
			continue
		}
		return nil, err
	}
}

func (c *h1conn) exchange(ctx context.Context, out *http.Request) (*http.Response, error) {
	var aborted atomic.Bool
	stop := context.AfterFunc(ctx, func() { aborted.Store(true); c.c.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.close()
		if aborted.Load() {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	if err := out.Write(c.bw); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err)
	}
	for {
		resp, err := http.ReadResponse(c.br, out)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = errors.Join(errStale, err)
			}
			return fail(err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // interim responses are not forwarded
		}
		resp.Body = &h1body{ReadCloser: resp.Body, c: c, stop: stop, keep: !resp.Close && !out.Close}
		return resp, nil
	}
}

// h1body gives the connection back once the body was read to its end.
type h1body struct {
	io.ReadCloser
	c    *h1conn
	stop func() bool
	keep bool
	eof  bool
	done bool
	pool *h1pool
}

func (b *h1body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *h1body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	err := b.ReadCloser.Close()
	if b.stop() && b.eof && b.keep && err == nil && b.pool != nil {
		b.pool.put(b.c)
		return nil
	}
	b.c.close()
	return err
}
