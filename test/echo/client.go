package echo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/test/echo/echopb"
)

// ClientConfig configures Run.
type ClientConfig struct {
	// URL is an http:// URL, or host:port with GRPC.
	URL   string
	Count int
	// Headers are sent with every request (gRPC: as metadata).
	Headers [][2]string
	// Cookies keeps the cookies answers set and sends them back (HTTP only).
	Cookies bool
	// GRPC calls the Echo service instead of sending HTTP requests.
	GRPC bool
	// H2C speaks HTTP/2 without TLS (prior knowledge) instead of HTTP/1.1.
	H2C bool
	// KeepAlive reuses one connection for every HTTP request; by default each request
	// opens its own connection, so L4 load balancing (kube-proxy) spreads them.
	KeepAlive bool
	// Method is the HTTP method (default GET) or the gRPC method: Echo (default), Ping,
	// Stream, or a full /service/method name.
	Method string
	// Timeout bounds each request (default 5s).
	Timeout time.Duration
	// Rate, when positive, starts HTTP requests at this many per second,
	// each on a connection of its own, without waiting for the earlier ones
	// (a client that keeps opening connections while some wait); 0: one
	// after the other.
	Rate float64
}

// Result is what the client prints: how many requests, how many failed without an
// answer, which pods answered and with which status (HTTP code, or gRPC code name).
type Result struct {
	Requests  int            `json:"requests"`
	Errors    int            `json:"errors"`
	Pods      map[string]int `json:"pods"`
	Status    map[string]int `json:"status"`
	LastError string         `json:"lastError,omitempty"`
	// Remotes (HTTP) counts the peer address each answer's backend saw (the
	// answer's "remote", without the port): a pod's own IP means the
	// connection reached the backend directly, not through the mesh.
	Remotes map[string]int `json:"remotes,omitempty"`
	// Failures (HTTP) are the first MaxFailures requests that got no
	// answer, with when each started and ended, so that a caller can tell
	// a request cut in flight from one refused or timed out.
	Failures []Failure `json:"failures,omitempty"`
}

// Failure is one HTTP request that got no answer.
type Failure struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Dialed: the connection was established (the error came after it).
	Dialed bool   `json:"dialed"`
	Error  string `json:"error"`
}

// MaxFailures bounds Result.Failures.
const MaxFailures = 20

func newResult() Result {
	return Result{Pods: map[string]int{}, Status: map[string]int{}, Remotes: map[string]int{}}
}

// ErrBadConfig reports a client configuration that cannot be run.
var ErrBadConfig = errors.New("bad client config")

// ParseHeader parses "Name:Value" (value may contain ':').
func ParseHeader(s string) ([2]string, error) {
	k, v, ok := strings.Cut(s, ":")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return [2]string{}, fmt.Errorf("%w: header %q is not Name:Value", ErrBadConfig, s)
	}
	return [2]string{k, strings.TrimSpace(v)}, nil
}

// Run sends cfg.Count requests one after the other and returns the tally. HTTP: a
// request that got any answer counts its status code; one that got none counts as an
// error. gRPC: every call counts its status code name; calls not OK also count as errors.
func Run(ctx context.Context, cfg ClientConfig) (Result, error) {
	if cfg.Count <= 0 {
		cfg.Count = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.URL == "" {
		return Result{}, fmt.Errorf("%w: no --url", ErrBadConfig)
	}
	if cfg.GRPC {
		return runGRPC(ctx, cfg)
	}
	return runHTTP(ctx, cfg)
}

func runHTTP(ctx context.Context, cfg ClientConfig) (Result, error) {
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return Result{}, fmt.Errorf("%w: url %q is not http:// or https://", ErrBadConfig, cfg.URL)
	}
	method := cfg.Method
	if method == "" {
		method = http.MethodGet
	}
	tr := &http.Transport{DisableKeepAlives: !cfg.KeepAlive, MaxIdleConnsPerHost: 1}
	if cfg.H2C {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = p
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: cfg.Timeout}
	if cfg.Cookies {
		jar, err := cookiejar.New(nil)
		if err != nil {
			return Result{}, err
		}
		hc.Jar = jar
	}
	res := newResult()
	var mu sync.Mutex
	one := func() error {
		var dialed atomic.Bool
		trace := &httptrace.ClientTrace{ConnectDone: func(_, _ string, err error) { dialed.Store(err == nil) }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, cfg.URL, nil)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadConfig, err)
		}
		for _, h := range cfg.Headers {
			if strings.EqualFold(h[0], "host") {
				req.Host = h[1]
				continue
			}
			req.Header.Add(h[0], h[1])
		}
		start := time.Now()
		a, code, err := doHTTP(hc, req)
		mu.Lock()
		defer mu.Unlock()
		res.Requests++
		if code != 0 {
			res.Status[strconv.Itoa(code)]++
		}
		if err != nil {
			res.Errors++
			res.LastError = err.Error()
			if len(res.Failures) < MaxFailures {
				res.Failures = append(res.Failures, Failure{Start: start, End: time.Now(), Dialed: dialed.Load(), Error: err.Error()})
			}
			return nil
		}
		if a.Pod != "" {
			res.Pods[a.Pod]++
		}
		if host, _, err := net.SplitHostPort(a.Remote); err == nil {
			res.Remotes[host]++
		}
		return nil
	}
	if err := repeat(ctx, cfg.Count, cfg.Rate, one); err != nil {
		return Result{}, err
	}
	return res, nil
}

// doHTTP sends req and decodes the answer; code is 0 when none came.
func doHTTP(hc *http.Client, req *http.Request) (Answer, int, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return Answer{}, 0, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return Answer{}, resp.StatusCode, fmt.Errorf("read body: %v", err)
	}
	var a Answer
	_ = json.Unmarshal(body, &a) // not every server answers with an Answer
	return a, resp.StatusCode, nil
}

// repeat calls one n times (until ctx ends): one after the other, or with
// rate > 0 started at that rate, concurrently. It stops at one's first
// error.
func repeat(ctx context.Context, n int, rate float64, one func() error) error {
	if rate <= 0 {
		for i := 0; i < n && ctx.Err() == nil; i++ {
			if err := one(); err != nil {
				return err
			}
		}
		return nil
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		wg.Go(func() { errc <- one() })
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return err
		}
	}
	return nil
}

func runGRPC(ctx context.Context, cfg ClientConfig) (Result, error) {
	target := strings.TrimPrefix(cfg.URL, "grpc://")
	if strings.Contains(target, "/") {
		return Result{}, fmt.Errorf("%w: --grpc wants host:port, got %q", ErrBadConfig, cfg.URL)
	}
	method := cfg.Method
	switch method {
	case "", "Echo":
		method = echopb.Echo_Echo_FullMethodName
	case "Ping":
		method = echopb.Echo_Ping_FullMethodName
	case "Stream":
		method = echopb.Echo_Stream_FullMethodName
	}
	if !strings.HasPrefix(method, "/") {
		return Result{}, fmt.Errorf("%w: gRPC method %q: want Echo, Ping, Stream or /service/method", ErrBadConfig, cfg.Method)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	var md metadata.MD
	for _, h := range cfg.Headers {
		if strings.EqualFold(h[0], "host") || h[0] == ":authority" {
			opts = append(opts, grpc.WithAuthority(h[1]))
			continue
		}
		md = metadata.Join(md, metadata.Pairs(h[0], h[1]))
	}
	conn, err := grpc.NewClient("passthrough:///"+target, opts...)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	defer conn.Close()
	res := newResult()
	for i := 0; i < cfg.Count; i++ {
		if ctx.Err() != nil {
			break
		}
		res.Requests++
		cctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, md), cfg.Timeout)
		rep, err := callGRPC(cctx, conn, method, i)
		cancel()
		st := status.Convert(err)
		res.Status[st.Code().String()]++
		if err != nil {
			res.Errors++
			res.LastError = err.Error()
			continue
		}
		if rep.GetPod() != "" {
			res.Pods[rep.GetPod()]++
		}
	}
	return res, nil
}

func callGRPC(ctx context.Context, conn *grpc.ClientConn, method string, i int) (*echopb.EchoReply, error) {
	req := &echopb.EchoRequest{Message: fmt.Sprintf("request %d", i+1)}
	if method != echopb.Echo_Stream_FullMethodName {
		rep := new(echopb.EchoReply)
		err := conn.Invoke(ctx, method, req, rep)
		return rep, err
	}
	stream, err := echopb.NewEchoClient(conn).Stream(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(req); err != nil {
		return nil, err
	}
	rep, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("stream: more replies than requests")
		}
		return nil, err
	}
	return rep, nil
}
