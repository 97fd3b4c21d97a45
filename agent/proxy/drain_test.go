package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func TestShutdownDrainsInFlight(t *testing.T) {
	e := newEnv(t)
	arrived := make(chan struct{}, 1)
	ep := e.handlerPod("web", "web", func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		time.Sleep(400 * time.Millisecond)
		io.WriteString(w, "done")
	})
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	e.apply()
	caller := e.caller("app")
	c := e.client(caller, vip)
	got := make(chan int, 1)
	go func() {
		resp, err := c.Get("http://" + vip + "/slow")
		if err != nil {
			got <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	<-arrived // the request is in flight at the backend
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.p.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if code := <-got; code != http.StatusOK {
		t.Fatalf("in-flight request got %d during the drain", code)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("drain took %v", time.Since(start))
	}
	if _, err := e.dialErr(caller, vip); err == nil {
		t.Error("new connections accepted after shutdown")
	}
}

func TestShutdownGracePeriodEnds(t *testing.T) {
	e := newEnv(t)
	arrived := make(chan struct{}, 1)
	ep := e.handlerPod("web", "web", func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	})
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	e.apply()
	c := e.client(e.caller("app"), vip)
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Get("http://" + vip + "/forever")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		errc <- err
	}()
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := e.p.Shutdown(ctx)
	if err == nil {
		t.Fatal("shutdown reported a clean drain with a request still running")
	}
	// the error says what the grace period cut (the agent logs it): the
	// request at the source, and its tunnel stream at the destination,
	// here the same proxy, unless that stream ended (the outbound closed
	// its end) before the inbound's drain looked, or just after
	t.Logf("shutdown: %v", err)
	want := regexp.MustCompile(`^outbound: 1 client connections, 1 requests in flight: context deadline exceeded` +
		`(; inbound: (1 tunnel streams open \(spiffe://cluster.local/ns/app/sa/client from 127\.0\.0\.1: 1\)|tunnel streams open at the deadline, closed since): context deadline exceeded)?$`)
	if !errors.Is(err, context.DeadlineExceeded) || !want.MatchString(err.Error()) {
		t.Errorf("shutdown: %q, want it to match %s", err, want)
	}
	select {
	case <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("request still running after the grace period")
	}
}

// A connection the proxy accepted just before the drain began (not even
// classified yet) is served, not closed: its client never sent a request
// and could not retry. Its answer closes the connection.
func TestShutdownServesConnectionsAcceptedBeforeIt(t *testing.T) {
	e := newEnv(t)
	ep := e.handlerPod("web", "web", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	e.apply()
	caller := e.caller("app")
	hold := make(chan struct{})
	e.look.mu.Lock()
	e.look.hold, e.look.entered = hold, make(chan struct{}, 1)
	entered := e.look.entered
	e.look.mu.Unlock()
	c := e.dial(caller, vip)
	defer c.Close()
	<-entered // accepted, being classified

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- e.p.Shutdown(ctx)
	}()
	// the drain has begun once the listener refuses
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := net.DialTimeout("tcp", e.out, time.Second)
		if err != nil {
			break
		}
		d.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts after Shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.look.mu.Lock()
	e.look.hold = nil
	e.look.mu.Unlock()
	close(hold)

	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("connection accepted before the drain: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "hello" || !resp.Close {
		t.Fatalf("got %d %q close=%v, want 200 hello with Connection: close", resp.StatusCode, body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}
