package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
)

// runFloor runs one hop of the Go floor peer: the least a Go HTTP/1.1 proxy
// pair can do in nginx's shape. Each client connection gets its own upstream
// connection (role a: TLS 1.3 with a client certificate, as nginx's
// keepalive upstream; role b: plaintext to the backend) and one goroutine
// that moves a request up and its response back, message by message: no
// hand-off between goroutines, no multiplexing, no header map, no routing.
// It parses only what it must to find a message's end (Content-Length; no
// chunked bodies), so it is a bound on Go's runtime and crypto/tls in this
// shape, not a proxy to use.
func runFloor(ctx context.Context, c rpConfig) error {
	tc, err := floorTLS(c)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	dial := func() (net.Conn, error) { return tls.Dial("tcp", c.upstream, tc) }
	if c.role == "b" {
		l = tls.NewListener(l, tc)
		dial = func() (net.Conn, error) { return net.Dial("tcp", c.upstream) }
	}
	var conns sync.Map
	go func() {
		<-ctx.Done()
		l.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
	}()
	for {
		cc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		conns.Store(cc, nil)
		go func() {
			defer conns.Delete(cc)
			defer cc.Close()
			up, err := dial()
			if err != nil {
				fmt.Fprintln(os.Stderr, "floor: upstream:", err)
				return
			}
			defer up.Close()
			floorRelay(cc, up, c.handoff)
		}()
	}
}

// floorTLS is a floor hop's TLS: role a's client configuration (it
// dials hop b), role b's server one (it requires a client certificate).
func floorTLS(c rpConfig) (*tls.Config, error) {
	cert, pool, err := peerPKI(c.pki)
	if err != nil {
		return nil, err
	}
	switch c.role {
	case "a":
		return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "mesh", MinVersion: tls.VersionTLS13,
			ClientSessionCache: tls.NewLRUClientSessionCache(64)}, nil
	case "b":
		return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}, nil
	}
	return nil, fmt.Errorf("floor role %q", c.role)
}

// floorRelay carries request/response exchanges between client and up until
// either side ends or sends what the floor does not parse. With handoff, a
// goroutine of the upstream connection reads each response whole and passes
// it to the goroutine that sent the request, which writes it to the client:
// one hand-off per response, as a proxy whose upstream reads happen
// elsewhere (a multiplexed connection's reader) has.
func floorRelay(client, up net.Conn, handoff bool) {
	cr, cw := bufio.NewReaderSize(client, 16<<10), bufio.NewWriterSize(client, 16<<10)
	ur, uw := bufio.NewReaderSize(up, 16<<10), bufio.NewWriterSize(up, 16<<10)
	respond := func() error { return copyMessage(cw, ur) }
	if handoff {
		// one buffer goes round: neither send ever waits, and closing
		// free ends the reader once the relay is done
		resp := make(chan *bytes.Buffer, 1)
		free := make(chan *bytes.Buffer, 1)
		free <- new(bytes.Buffer)
		go func() {
			defer close(resp)
			for b := range free {
				b.Reset()
				bw := bufio.NewWriter(b)
				if copyMessage(bw, ur) != nil || bw.Flush() != nil {
					return
				}
				resp <- b
			}
		}()
		defer close(free)
		respond = func() error {
			b, ok := <-resp
			if !ok {
				return io.ErrUnexpectedEOF
			}
			cw.Write(b.Bytes())
			free <- b
			return nil
		}
	}
	for {
		if err := copyMessage(uw, cr); err != nil {
			return
		}
		if uw.Flush() != nil || respond() != nil || cw.Flush() != nil {
			return
		}
	}
}

var (
	contentLength    = []byte("content-length:")
	transferEncoding = []byte("transfer-encoding:")
	errChunked       = errors.New("floor: no chunked bodies")
)

// copyMessage copies one HTTP/1.1 message head and its Content-Length body.
func copyMessage(w *bufio.Writer, r *bufio.Reader) error {
	n := int64(0)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		w.Write(line)
		if len(line) <= 2 {
			break
		}
		if err := bodyLength(line, &n); err != nil {
			return err
		}
	}
	_, err := io.CopyN(w, r, n)
	return err
}

// bodyLength sets *n from a Content-Length header line; a chunked body
// (Transfer-Encoding) is an error.
func bodyLength(line []byte, n *int64) error {
	if len(line) > len(contentLength) && bytes.EqualFold(line[:len(contentLength)], contentLength) {
		v, err := strconv.ParseInt(string(bytes.TrimSpace(line[len(contentLength):])), 10, 64)
		if err != nil {
			return err
		}
		*n = v
	}
	if len(line) > len(transferEncoding) && bytes.EqualFold(line[:len(transferEncoding)], transferEncoding) {
		return errChunked
	}
	return nil
}
