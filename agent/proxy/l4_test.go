package proxy_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// tcpPod accepts connections and runs serve on each.
func (e *env) tcpPod(ns, sa string, serve func(net.Conn)) *weftv1.Endpoint {
	l, ep := e.pod(ns, sa)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return ep
}

func TestL4RawTCPEcho(t *testing.T) {
	e := newEnv(t)
	ep := e.tcpPod("db", "db", func(c net.Conn) { io.Copy(c, c) })
	e.cluster("db/db:5432", weftv1.Protocol_PROTOCOL_TCP, ep)
	e.service("db", "db", "10.96.0.20", 5432, weftv1.Protocol_PROTOCOL_TCP, "db/db:5432")
	e.apply()
	c := e.dial(e.caller("app"), "10.96.0.20:5432")
	defer c.Close()
	// bytes that look like HTTP are not interpreted on an L4 port
	msg := "GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01binary"
	c.Write([]byte(msg))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != msg {
		t.Fatalf("echo %q %v", b, err)
	}
}

func TestL4ServerFirstAnswersImmediately(t *testing.T) {
	e := newEnv(t)
	ep := e.tcpPod("mail", "smtp", func(c net.Conn) {
		io.WriteString(c, "220 ready\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "250 "+line)
	})
	e.cluster("mail/smtp:25", weftv1.Protocol_PROTOCOL_TCP, ep)
	e.service("mail", "smtp", "10.96.0.25", 25, weftv1.Protocol_PROTOCOL_UNSPECIFIED, "mail/smtp:25")
	e.apply()
	c := e.dial(e.caller("app"), "10.96.0.25:25")
	defer c.Close()
	// the client says nothing: the banner must still arrive
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || line != "220 ready\r\n" {
		t.Fatalf("banner %q %v", line, err)
	}
	io.WriteString(c, "HELO x\r\n")
	line, err = br.ReadString('\n')
	if err != nil || line != "250 HELO x\r\n" {
		t.Fatalf("reply %q %v", line, err)
	}
}

func TestL4TCPRouteWeights(t *testing.T) {
	e := newEnv(t)
	a := e.tcpPod("db", "db", func(c net.Conn) { io.WriteString(c, "a") })
	b := e.tcpPod("db", "db", func(c net.Conn) { io.WriteString(c, "b") })
	e.cluster("db/a:1", weftv1.Protocol_PROTOCOL_TCP, a)
	e.cluster("db/b:1", weftv1.Protocol_PROTOCOL_TCP, b)
	sp := e.service("db", "db", "10.96.0.21", 1, weftv1.Protocol_PROTOCOL_TCP, "db/a:1")
	sp.Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_TCP,
		Rules: []*weftv1.Rule{{Route: "db/t", RouteKind: weftv1.RouteKind_ROUTE_KIND_TCP, Backends: backends("db/a:1", 0, "db/b:1", 1)}}}
	e.apply()
	caller := e.caller("app")
	for range 5 {
		c := e.dial(caller, "10.96.0.21:1")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "b" {
			t.Fatalf("weight 0:1 went to %q %v", got, err)
		}
	}
}
