package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// h2cEnv serves h as an h2c pod behind an h2c Service at vip, and returns
// a client speaking cleartext HTTP/2 to it through the outbound proxy.
func h2cEnv(t *testing.T, h http.HandlerFunc) (*env, *http.Client) {
	e := newEnv(t)
	l, ep := e.pod("web", "web")
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	e.cluster("web/h2:80", weftv1.Protocol_PROTOCOL_H2C, ep)
	e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_H2C, "web/h2:80")
	e.apply()
	caller := e.caller("app")
	var cp http.Protocols
	cp.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &cp, DialContext: func(context.Context, string, string) (net.Conn, error) { return e.dialErr(caller, vip) }}
	t.Cleanup(tr.CloseIdleConnections)
	return e, &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// TestH2CLargeBodiesOnConcurrentStreams: bodies far over every window
// (64 KiB towards the client's connection, the tunnel's and the upstream
// connection's), both ways, on concurrent streams of one connection.
func TestH2CLargeBodiesOnConcurrentStreams(t *testing.T) {
	_, c := h2cEnv(t, func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			t.Errorf("upstream request over %s", r.Proto)
		}
		io.Copy(w, r.Body)
	})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := bytes.Repeat([]byte(fmt.Sprintf("%07d|", i)), 128<<10) // 1 MiB
			resp, err := c.Post("http://"+vip+"/echo", "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.ProtoMajor != 2 || !bytes.Equal(got, body) {
				t.Errorf("stream %d: %s, %d of %d bytes back (%v)", i, resp.Proto, len(got), len(body), err)
			}
		}()
	}
	wg.Wait()
}

// TestH2CTrailersBothWays: request trailers reach the pod, the pod's
// trailers (declared or not) reach the client.
func TestH2CTrailersBothWays(t *testing.T) {
	_, c := h2cEnv(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Declared")
		w.Write([]byte("body"))
		w.Header().Set("X-Declared", "d")
		w.Header().Set(http.TrailerPrefix+"X-Undeclared", "u")
		w.Header().Set(http.TrailerPrefix+"X-Echo", r.Trailer.Get("X-Req"))
	})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+vip+"/t", pr)
	req.Trailer = http.Header{"X-Req": nil}
	go func() {
		pw.Write([]byte("payload"))
		req.Trailer.Set("X-Req", "from-client")
		pw.Close()
	}()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body" || resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("X-Undeclared") != "u" || resp.Trailer.Get("X-Echo") != "from-client" {
		t.Fatalf("body %q trailers %v", b, resp.Trailer)
	}
}

// TestH2CClientCancelResetsUpstream: a client that resets its stream ends
// the upstream request (the pod's context is canceled).
func TestH2CClientCancelResetsUpstream(t *testing.T) {
	started := make(chan struct{}, 1)
	ended := make(chan struct{}, 1)
	_, c := h2cEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+vip+"/long", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	cancel()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the pod's request outlived the client's reset")
	}
}

// TestH2CShutdownDrainsInFlight: a drain sends GOAWAY to h2c clients and
// lets the streams they opened finish.
func TestH2CShutdownDrainsInFlight(t *testing.T) {
	arrived := make(chan struct{}, 1)
	e, c := h2cEnv(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	})
	got := make(chan string, 1)
	go func() {
		resp, err := c.Get("http://" + vip + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.p.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if b := <-got; b != "done" {
		t.Fatalf("in-flight h2c request got %q during the drain", b)
	}
}
