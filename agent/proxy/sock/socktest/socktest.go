// Package socktest gives tests connected loopback TCP sockets.
package socktest

import (
	"net"
	"testing"
)

// Pair returns both ends of a loopback TCP connection, closed at the
// test's end.
func Pair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sc, err := ln.Accept() // the kernel completed the handshake: it is queued
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	return c.(*net.TCPConn), sc.(*net.TCPConn)
}
