package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/weft-mesh/weft/agent/proxy/evloop"
)

// runLoop runs one hop of the event-loop floor (floor -loop): the floor's
// work (per client connection one upstream connection, TLS 1.3 with a client
// certificate between the hops, only message boundaries parsed) in nginx's
// shape instead of a goroutine per connection: every socket of the process
// is served by one evloop.Loop (agent/proxy/evloop), with crypto/tls over its
// non-blocking sockets. Connections are accepted, dialed and handshaken
// outside the loop, then handed to it; chunked bodies and every other HTTP
// feature are out of scope.
func runLoop(ctx context.Context, c rpConfig) error {
	tc, err := floorTLS(c)
	if err != nil {
		return err
	}
	l, err := evloop.New()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	go func() {
		for {
			cc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				if err := loopPair(ctx, l, cc, c, tc); err != nil {
					fmt.Fprintln(os.Stderr, "floor loop:", err)
				}
			}()
		}
	}()
	return l.Run(ctx)
}

// loopPair dials cc's upstream, runs the TLS handshake on the side that
// speaks it, and hands both sockets to l.
func loopPair(ctx context.Context, l *evloop.Loop, cc net.Conn, c rpConfig, tc *tls.Config) error {
	uc, err := net.Dial("tcp", c.upstream)
	if err != nil {
		cc.Close()
		return err
	}
	client, up := &side{l: l}, &side{l: l}
	var plain, secure *side
	var pc, sc net.Conn
	if c.role == "a" {
		plain, pc, secure, sc = client, cc, up, uc
	} else {
		plain, pc, secure, sc = up, uc, client, cc
	}
	conn, s, err := evloop.Handshake(ctx, sc, tc, c.role == "a")
	if err != nil {
		pc.Close()
		return err
	}
	secure.s, secure.rw = s, conn
	if plain.s, err = evloop.Take(pc); err != nil {
		s.Close()
		return err
	}
	plain.rw = plain.s
	client.peer, up.peer = up, client
	l.Post(func() {
		for _, x := range []*side{client, up} {
			if err := l.Add(x.s.FD(), x); err != nil {
				fmt.Fprintln(os.Stderr, "floor loop:", err)
				client.close()
				return
			}
		}
		// what came with the handshake raised no event
		client.Ready(evloop.Readable)
		up.Ready(evloop.Readable)
	})
	return nil
}

// side is one socket of a relayed pair, served in the loop.
type side struct {
	l    *evloop.Loop
	s    *evloop.Socket
	rw   io.ReadWriter // the socket, or a tls.Conn over it
	in   []byte        // plaintext read, not yet a whole message
	peer *side
}

var loopBuf = make([]byte, 64<<10) // the loop's goroutine only

func (x *side) Ready(ev evloop.Events) {
	if x.s == nil {
		return // closed
	}
	if err := x.s.Notify(ev); err != nil {
		x.close()
		return
	}
	if err := x.pull(); err != nil {
		x.close()
		return
	}
	if ev&evloop.Writable != 0 && x.s.Pending() == 0 && x.peer.s != nil {
		if err := x.peer.pull(); err != nil { // x takes writes again: its peer reads on
			x.close()
		}
	}
}

// pull reads what x holds and sends its whole messages to x's peer, while
// the peer takes them.
func (x *side) pull() error {
	for x.peer.s.Pending() == 0 {
		n, err := x.rw.Read(loopBuf)
		x.in = append(x.in, loopBuf[:n]...)
		if end, perr := wholeMessages(x.in); perr != nil {
			return perr
		} else if end > 0 {
			if _, werr := x.peer.rw.Write(x.in[:end]); werr != nil {
				return werr
			}
			x.in = x.in[:copy(x.in, x.in[end:])]
		}
		if errors.Is(err, evloop.ErrWouldBlock) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (x *side) close() {
	for _, y := range []*side{x, x.peer} {
		if y != nil && y.s != nil {
			x.l.Remove(y.s.FD())
			y.s.Close()
			y.s = nil
		}
	}
}

var crlf2 = []byte("\r\n\r\n")

// wholeMessages returns how many of b's bytes are whole HTTP/1.1 messages
// (a head and its Content-Length body).
func wholeMessages(b []byte) (int, error) {
	end := 0
	for {
		h := bytes.Index(b[end:], crlf2)
		if h < 0 {
			return end, nil
		}
		head := b[end : end+h+2]
		n := int64(0)
		for len(head) > 0 {
			line, rest, _ := bytes.Cut(head, []byte("\r\n"))
			head = rest
			if err := bodyLength(line, &n); err != nil {
				return 0, err
			}
		}
		m := end + h + 4 + int(n)
		if m > len(b) {
			return end, nil
		}
		end = m
	}
}
