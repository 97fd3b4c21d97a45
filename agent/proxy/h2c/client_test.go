package h2c

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/weft-mesh/weft/agent/proxy/sock/socktest"
)

// pair connects a ClientConn to a ServerConn serving h.
func pair(t *testing.T, cfg ServerConfig, h http.HandlerFunc) (*ClientConn, *ServerConn) {
	t.Helper()
	a, b := socktest.Pair(t)
	cfg.Handler = h
	type res struct {
		sc  *ServerConn
		err error
	}
	ch := make(chan res, 1)
	go func() { sc, err := NewServerConn(b, nil, &cfg); ch <- res{sc, err} }()
	cc, err := NewClientConn(a, ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	go r.sc.Serve(context.Background())
	t.Cleanup(func() { cc.Close(); r.sc.Close() })
	return cc, r.sc
}

func request(ctx context.Context, method, target string, body io.Reader) *http.Request {
	r, err := http.NewRequestWithContext(ctx, method, "http://svc"+target, body)
	if err != nil {
		panic(err)
	}
	return r
}

func TestRoundTrip(t *testing.T) {
	cc, _ := pair(t, ServerConfig{}, echoHandler)
	resp, err := cc.RoundTrip(request(context.Background(), "GET", "/a/b?c=d", nil))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.Header.Get("X-Path") != "/a/b?c=d" || resp.Header.Get("X-Host") != "svc" || len(b) != 0 {
		t.Fatalf("GET: %d %v %q", resp.StatusCode, resp.Header, b)
	}
	resp, err = cc.RoundTrip(request(context.Background(), "POST", "/p", strings.NewReader("payload")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "payload" || resp.Header.Get("X-Method") != "POST" {
		t.Fatalf("POST: %q %v", b, resp.Header)
	}
}

func TestRoundTripLargeBodiesBothWays(t *testing.T) {
	cc, _ := pair(t, ServerConfig{StreamWindow: 1 << 16, ConnWindow: 1 << 16}, echoHandler)
	body := bytes.Repeat([]byte("0123456789"), 400_000) // 4 MB, 61 windows
	pr, pw := io.Pipe()
	go func() { pw.Write(body); pw.Close() }()
	resp, err := cc.RoundTrip(request(context.Background(), "PUT", "/big", pr))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("echoed %d bytes (%v), want %d", len(got), err, len(body))
	}
}

// wholeBody is a body whose bytes are all buffered (a completer), as this
// package's request bodies are once their END_STREAM arrived.
type wholeBody struct{ *bytes.Reader }

func (wholeBody) complete() bool { return true }
func (wholeBody) Close() error   { return nil }

// TestRoundTripWholeBodyOverSyncMax: a body received whole but larger than
// what leaves with the header starts in the caller's goroutine and streams
// the rest from a goroutine, the read part first.
func TestRoundTripWholeBodyOverSyncMax(t *testing.T) {
	cc, _ := pair(t, ServerConfig{}, echoHandler)
	body := bytes.Repeat([]byte("abcdefgh"), 3*syncBodyMax/8) // 3x syncBodyMax
	resp, err := cc.RoundTrip(request(context.Background(), "PUT", "/whole", wholeBody{bytes.NewReader(body)}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("echoed %d bytes (%v), want %d", len(got), err, len(body))
	}
}

func TestRoundTripConcurrentStreams(t *testing.T) {
	cc, _ := pair(t, ServerConfig{MaxConcurrentStreams: 50}, echoHandler)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := fmt.Sprintf("stream %d %s", i, strings.Repeat("x", i*100))
			for {
				resp, err := cc.RoundTrip(request(context.Background(), "POST", fmt.Sprintf("/%d", i), strings.NewReader(msg)))
				if errors.Is(err, ErrGoingAway) || errors.Is(err, ErrStreamReset) {
					time.Sleep(time.Millisecond) // refused: over the server's limit
					continue
				}
				if err != nil {
					t.Error(err)
					failed.Add(1)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != msg || resp.Header.Get("X-Path") != fmt.Sprintf("/%d", i) {
					t.Errorf("stream %d: %q", i, b)
					failed.Add(1)
				}
				return
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d streams failed", failed.Load())
	}
}

func TestRoundTripTrailersBothWays(t *testing.T) {
	cc, _ := pair(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Write(b)
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Echo-Trailer", r.Trailer.Get("Req-Trailer"))
	})
	pr, pw := io.Pipe()
	req := request(context.Background(), "POST", "/svc/Method", pr)
	req.Header.Set("Te", "trailers")
	req.Trailer = http.Header{"Req-Trailer": nil}
	go func() {
		pw.Write([]byte("msg"))
		req.Trailer.Set("Req-Trailer", "sent")
		pw.Close()
	}()
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "msg" || resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("Echo-Trailer") != "sent" {
		t.Fatalf("body %q trailers %v", b, resp.Trailer)
	}
}

func TestRoundTripTrailersOnly(t *testing.T) {
	cc, _ := pair(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Grpc-Status", "5")
	})
	resp, err := cc.RoundTrip(request(context.Background(), "POST", "/svc/M", strings.NewReader("x")))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Grpc-Status") != "5" || resp.ContentLength != 0 || resp.Body != http.NoBody {
		t.Fatalf("trailers-only answer: %v cl=%d", resp.Header, resp.ContentLength)
	}
}

func TestRoundTripBidiStreaming(t *testing.T) {
	cc, _ := pair(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		buf := make([]byte, 100)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(bytes.ToUpper(buf[:n]))
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
	pr, pw := io.Pipe()
	resp, err := cc.RoundTrip(request(context.Background(), "POST", "/chat", pr))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	for _, m := range []string{"one", "two", "three"} {
		pw.Write([]byte(m)) // each answer arrives before the next message
		n, err := resp.Body.Read(buf)
		if err != nil || string(buf[:n]) != strings.ToUpper(m) {
			t.Fatalf("reply to %q: %q %v", m, buf[:n], err)
		}
	}
	pw.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
}

func TestCancelResetsTheStream(t *testing.T) {
	started := make(chan struct{}, 2)
	canceled := make(chan struct{}, 2)
	cc, _ := pair(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
		}
		started <- struct{}{}
		<-r.Context().Done()
		canceled <- struct{}{}
	})
	// before the response: RoundTrip returns the context's error
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	if _, err := cc.RoundTrip(request(ctx, "GET", "/wait", nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("RoundTrip: %v, want context.Canceled", err)
	}
	waitFor(t, canceled, "server-side cancel before the response")
	// after the response: the body's reads fail, the server sees a reset
	ctx, cancel = context.WithCancel(context.Background())
	resp, err := cc.RoundTrip(request(ctx, "GET", "/stream", nil))
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	waitFor(t, canceled, "server-side cancel after the response")
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("body read to EOF after a cancel")
	}
	resp.Body.Close()
	// closing a body early resets the stream too
	resp, err = cc.RoundTrip(request(context.Background(), "GET", "/stream", nil))
	if err != nil {
		t.Fatal(err)
	}
	<-started
	resp.Body.Close()
	waitFor(t, canceled, "server-side cancel after Body.Close")
	if n := cc.Streams(); n != 0 {
		t.Fatalf("%d streams left open", n)
	}
}

func waitFor(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s", what)
	}
}

// clientPeer starts a ClientConn against a raw peer acting as server.
func clientPeer(t *testing.T) (*ClientConn, *peer) {
	t.Helper()
	a, b := socktest.Pair(t)
	p := newPeer(t, b)
	cc, err := NewClientConn(a, ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(clientPreface))
	io.ReadFull(b, buf)
	p.fr.WriteSettings()
	go p.read()
	t.Cleanup(func() { cc.Close() })
	return cc, p
}

func TestClientGoAwayFailsUnprocessedStreamsRetryably(t *testing.T) {
	cc, p := clientPeer(t)
	type result struct {
		resp *http.Response
		err  error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			resp, err := cc.RoundTrip(request(context.Background(), "GET", "/", nil))
			results <- result{resp, err}
		}()
		p.next(http2.FrameHeaders)
	}
	p.write(func(fr *http2.Framer) error { return fr.WriteGoAway(1, http2.ErrCodeNo, nil) })
	r := <-results
	if !errors.Is(r.err, ErrGoingAway) {
		t.Fatalf("stream 3 after GOAWAY(1): %v, want ErrGoingAway", r.err)
	}
	if cc.Usable() {
		t.Fatal("connection usable after GOAWAY")
	}
	p.headers(1, true, ":status", "204")
	if r := <-results; r.err != nil || r.resp.StatusCode != 204 {
		t.Fatalf("stream 1: %+v", r)
	}
}

func TestClientRejectsBadResponses(t *testing.T) {
	for name, fields := range map[string][]string{
		"no status":       {"x", "y"},
		"bad status":      {":status", "20x"},
		"connection":      {":status", "200", "connection", "close"},
		"two lengths":     {":status", "200", "content-length", "1", "content-length", "2"},
		"request pseudos": {":status", "200", ":path", "/"},
	} {
		t.Run(name, func(t *testing.T) {
			cc, p := clientPeer(t)
			done := make(chan error, 1)
			go func() {
				_, err := cc.RoundTrip(request(context.Background(), "GET", "/", nil))
				done <- err
			}()
			f := p.next(http2.FrameHeaders)
			p.headers(f.stream, true, fields...)
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("malformed response accepted")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("RoundTrip hangs")
			}
		})
	}
}

func TestPoolRetriesOnAnotherConnection(t *testing.T) {
	var dials atomic.Int32
	cl := NewClient(func(ctx context.Context, k string) (net.Conn, error) {
		dials.Add(1)
		a, b := socktest.Pair(t)
		sc, err := NewServerConnAsync(b, &ServerConfig{Handler: http.HandlerFunc(echoHandler)})
		if err != nil {
			return nil, err
		}
		go sc.Serve(context.Background())
		return a, nil
	}, ClientConfig{})
	defer cl.Close()
	for i := range 3 {
		resp, err := cl.RoundTrip(context.Background(), "k", request(context.Background(), "POST", "/", strings.NewReader("r")))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if i == 0 {
			// the server goes away: the next request dials again
			cl.mu.Lock()
			cc := cl.conns["k"][0]
			cl.mu.Unlock()
			cc.c.onGoAway(&http2.GoAwayFrame{LastStreamID: 1})
		}
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2", n)
	}
}

// NewServerConnAsync is NewServerConn for a client that has not written
// its preface yet (the tests' dialers).
func NewServerConnAsync(nc net.Conn, cfg *ServerConfig) (*asyncServer, error) {
	return &asyncServer{nc: nc, cfg: cfg}, nil
}

type asyncServer struct {
	nc  net.Conn
	cfg *ServerConfig
}

func (a *asyncServer) Serve(ctx context.Context) {
	sc, err := NewServerConn(a.nc, nil, a.cfg)
	if err != nil {
		return
	}
	sc.Serve(ctx)
}

// TestInteropWithXNet runs this package's client against x/net's HTTP/2
// server, and x/net's client against this package's server.
func TestInteropWithXNet(t *testing.T) {
	handler := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-T")
		w.Header().Set("X-Path", r.URL.RequestURI())
		w.Write(bytes.Repeat(b, 1000))
		w.Header().Set("X-T", "trailer")
	}
	check := func(t *testing.T, rt func(*http.Request) (*http.Response, error)) {
		for i := range 20 {
			resp, err := rt(request(context.Background(), "POST", fmt.Sprintf("/x/%d", i), strings.NewReader("abcdefgh")))
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || len(b) != 8000 || resp.Header.Get("X-Path") != fmt.Sprintf("/x/%d", i) || resp.Trailer.Get("X-T") != "trailer" {
				t.Fatalf("answer %d: %d bytes %v %v %v", i, len(b), err, resp.Header, resp.Trailer)
			}
		}
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	t.Run("client", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(handler), Protocols: &protos}
		go srv.Serve(l)
		defer srv.Close()
		nc, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		cc, err := NewClientConn(nc, ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		check(t, cc.RoundTrip)
	})
	t.Run("server", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				nc, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					sc, err := NewServerConn(nc, nil, &ServerConfig{Handler: http.HandlerFunc(handler)})
					if err == nil {
						sc.Serve(context.Background())
					}
				}()
			}
		}()
		tr := &http.Transport{Protocols: &protos}
		defer tr.CloseIdleConnections()
		check(t, func(r *http.Request) (*http.Response, error) {
			r.URL.Host = l.Addr().String()
			resp, err := tr.RoundTrip(r)
			if err == nil && resp.ProtoMajor != 2 {
				t.Fatalf("answered over %s", resp.Proto)
			}
			return resp, err
		})
	})
}

// RFC 9113 §8.1: a server that sent its whole response may reset the
// stream with NO_ERROR to stop a request body it does not need (grpc-go
// does when it answers a unary call before the request's END_STREAM); the
// client must not discard that response. It failed about one gRPC call in
// 50,000 through the proxy when the reset was read before the body.
func TestClientKeepsACompleteResponseResetWithNoError(t *testing.T) {
	cc, p := clientPeer(t)
	body, bodyW := io.Pipe() // the request body never ends
	defer bodyW.Close()
	type result struct {
		resp *http.Response
		err  error
	}
	results := make(chan result, 1)
	go func() {
		resp, err := cc.RoundTrip(request(context.Background(), "POST", "/pkg.Svc/Call", body))
		results <- result{resp, err}
	}()
	f := p.next(http2.FrameHeaders)
	p.headers(f.stream, false, ":status", "200", "content-type", "application/grpc")
	p.data(f.stream, false, []byte("answer"))
	p.headers(f.stream, true, "grpc-status", "0")
	p.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(f.stream, http2.ErrCodeNo) })
	r := <-results
	if r.err != nil {
		t.Fatalf("RoundTrip: %v", r.err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for cc.Streams() != 0 && time.Now().Before(deadline) { // the reset is processed
		time.Sleep(time.Millisecond)
	}
	got, err := io.ReadAll(r.resp.Body)
	if err != nil || string(got) != "answer" {
		t.Fatalf("body %q, %v; want the whole answer and EOF", got, err)
	}
	if st := r.resp.Trailer.Get("grpc-status"); st != "0" {
		t.Fatalf("trailer grpc-status %q, want 0", st)
	}
	// the request body is no longer wanted: writing it fails
	if _, err := bodyW.Write(make([]byte, 1<<20)); err == nil {
		t.Fatal("request body still taken after the server's reset")
	}
}
