package echo

// The "advanced" surface: what the Gateway API mesh conformance suite expects of its
// echo-advanced image (Istio's echo app). The server answers with Key=Value lines and
// the client, exec'd as `client URL [--method=M] [-H K:V]... [--count=N]`, prints them
// in the shape conformance/utils/echo/parse.go reads: one block of lines per request,
// blocks separated by a blank line.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/test/echo/echopb"
)

// AdvancedConfig configures ServeAdvanced. It takes the flags of the echo-advanced
// image: --port, --grpc, --tcp (repeatable) and --tls (ports that want TLS: not served).
type AdvancedConfig struct {
	Identity  Identity
	HTTPPorts []int
	GRPCPorts []int
	TCPPorts  []int
	TLSPorts  []int
	Version   string
	Logger    *slog.Logger
}

type intList []int

func (l *intList) String() string { return fmt.Sprint(*l) }
func (l *intList) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("bad port %q", s)
	}
	*l = append(*l, n)
	return nil
}

// ParseAdvancedFlags reads the echo-advanced server flags. With no port flags it
// serves HTTP on 8080 and gRPC on 7070, as the image does.
func ParseAdvancedFlags(args []string) (AdvancedConfig, error) {
	fs := flag.NewFlagSet("advanced", flag.ContinueOnError)
	var cfg AdvancedConfig
	var httpPorts, grpcPorts, tcpPorts, tlsPorts intList
	fs.Var(&httpPorts, "port", "HTTP port (repeatable)")
	fs.Var(&grpcPorts, "grpc", "gRPC port (repeatable)")
	fs.Var(&tcpPorts, "tcp", "TCP echo port (repeatable)")
	fs.Var(&tlsPorts, "tls", "port that wants TLS (not served here)")
	fs.String("crt", "", "ignored (TLS)")
	fs.String("key", "", "ignored (TLS)")
	fs.StringVar(&cfg.Version, "version", "", "ServiceVersion to report")
	fs.String("cluster", "", "ignored")
	if err := fs.Parse(args); err != nil {
		return cfg, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%w: unexpected arguments %q", ErrBadConfig, fs.Args())
	}
	if len(httpPorts) == 0 && len(grpcPorts) == 0 && len(tcpPorts) == 0 {
		httpPorts, grpcPorts = intList{8080}, intList{7070}
	}
	cfg.HTTPPorts, cfg.GRPCPorts, cfg.TCPPorts, cfg.TLSPorts = httpPorts, grpcPorts, tcpPorts, tlsPorts
	return cfg, nil
}

// ServeAdvanced serves every configured port until ctx is done.
func ServeAdvanced(ctx context.Context, cfg AdvancedConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var lns []net.Listener
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	listen := func(port int) (net.Listener, error) {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("listen %d: %w", port, err)
		}
		lns = append(lns, l)
		return l, nil
	}
	errc := make(chan error, len(cfg.HTTPPorts)+len(cfg.GRPCPorts)+len(cfg.TCPPorts))
	var servers []*http.Server
	var grpcs []*grpc.Server
	for _, port := range cfg.HTTPPorts {
		if slices.Contains(cfg.TLSPorts, port) {
			log.Info("TLS port not served", "port", port)
			continue
		}
		l, err := listen(port)
		if err != nil {
			return err
		}
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		hs := &http.Server{Handler: AdvancedHandler(cfg.Identity, cfg.Version, port), Protocols: p, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, hs)
		go func() { errc <- hs.Serve(l) }()
	}
	for _, port := range cfg.GRPCPorts {
		l, err := listen(port)
		if err != nil {
			return err
		}
		gs := NewGRPCServer(cfg.Identity)
		grpcs = append(grpcs, gs)
		go func() { errc <- gs.Serve(l) }()
	}
	for _, port := range cfg.TCPPorts {
		l, err := listen(port)
		if err != nil {
			return err
		}
		go func() { errc <- serveTCPEcho(l) }()
	}
	log.Info("weft-echo advanced serving", "http", cfg.HTTPPorts, "grpc", cfg.GRPCPorts, "tcp", cfg.TCPPorts, "pod", cfg.Identity.Pod)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, hs := range servers {
		_ = hs.Shutdown(sctx)
	}
	for _, gs := range grpcs {
		gs.Stop()
	}
	closeAll()
	return err
}

// serveTCPEcho writes back whatever each connection sends.
func serveTCPEcho(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// AdvancedHandler answers every HTTP request with 200 and Key=Value lines: the
// request's facts (Host, URL, Method, Proto, one RequestHeader=K:V per value, IP)
// and the pod's (ServiceVersion, ServicePort, Hostname = pod name).
func AdvancedHandler(id Identity, version string, port int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		line := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, v) }
		if version != "" {
			line("ServiceVersion", version)
		}
		line("ServicePort", strconv.Itoa(port))
		line("Host", r.Host)
		line("URL", r.RequestURI)
		line("Method", r.Method)
		line("Proto", r.Proto)
		if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			line("IP", ip)
		}
		for _, k := range sortedKeys(r.Header) {
			for _, v := range r.Header[k] {
				line("RequestHeader", k+":"+v)
			}
		}
		line("Hostname", id.Pod)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, b.String())
	})
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// AdvancedClientConfig is one `client` invocation.
type AdvancedClientConfig struct {
	URL     string // http://host[:port]/path or grpc://host:port
	Method  string // HTTP method (default GET)
	Headers [][2]string
	Count   int
	Timeout time.Duration
}

// ParseAdvancedClientArgs reads `URL [--method=M] [-H K:V]... [--count=N]`; flags may
// come before or after the URL.
func ParseAdvancedClientArgs(args []string) (AdvancedClientConfig, error) {
	cfg := AdvancedClientConfig{Count: 1, Timeout: 5 * time.Second}
	var headers headerList
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Method, "method", "", "HTTP method")
	fs.Var(&headers, "H", "K:V header (repeatable)")
	fs.IntVar(&cfg.Count, "count", 1, "number of requests")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of each request")
	for {
		if err := fs.Parse(args); err != nil {
			return cfg, fmt.Errorf("%w: %v", ErrBadConfig, err)
		}
		if fs.NArg() == 0 {
			break
		}
		if cfg.URL != "" {
			return cfg, fmt.Errorf("%w: more than one URL: %q and %q", ErrBadConfig, cfg.URL, fs.Arg(0))
		}
		cfg.URL, args = fs.Arg(0), fs.Args()[1:]
	}
	if cfg.URL == "" {
		return cfg, fmt.Errorf("%w: no URL", ErrBadConfig)
	}
	if cfg.Count <= 0 {
		return cfg, fmt.Errorf("%w: --count must be positive", ErrBadConfig)
	}
	cfg.Headers = headers
	return cfg, nil
}

type headerList [][2]string

func (h *headerList) String() string { return fmt.Sprint(*h) }
func (h *headerList) Set(s string) error {
	kv, err := ParseHeader(s)
	if err != nil {
		return err
	}
	*h = append(*h, kv)
	return nil
}

// ErrRequestFailed means at least one request got no answer.
var ErrRequestFailed = errors.New("request failed")

// RunAdvancedClient sends cfg.Count requests one after the other and writes one block
// per answer to out (HTTP blocks also say when the answer arrived: Time=RFC 3339, UTC).
// Redirects are not followed. A request without an answer stops
// the run with ErrRequestFailed (the blocks written so far stay).
func RunAdvancedClient(ctx context.Context, cfg AdvancedClientConfig, out io.Writer) error {
	if cfg.Count <= 0 {
		cfg.Count = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	switch {
	case strings.HasPrefix(cfg.URL, "grpc://"):
		return runAdvancedGRPC(ctx, cfg, out)
	case strings.HasPrefix(cfg.URL, "http://"):
		return runAdvancedHTTP(ctx, cfg, out)
	default:
		return fmt.Errorf("%w: url %q is not http:// or grpc://", ErrBadConfig, cfg.URL)
	}
}

func runAdvancedHTTP(ctx context.Context, cfg AdvancedClientConfig, out io.Writer) error {
	method := cfg.Method
	if method == "" {
		method = http.MethodGet
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{
		Transport:     tr,
		Timeout:       cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for i := 0; i < cfg.Count; i++ {
		req, err := http.NewRequestWithContext(ctx, method, cfg.URL, nil)
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
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrRequestFailed, err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%w: read body: %v", ErrRequestFailed, err)
		}
		var b strings.Builder
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "[%d] StatusCode=%d\n", i, resp.StatusCode)
		fmt.Fprintf(&b, "[%d] Time=%s\n", i, time.Now().UTC().Format(time.RFC3339Nano))
		for _, k := range sortedKeys(resp.Header) {
			for _, v := range resp.Header[k] {
				fmt.Fprintf(&b, "[%d] ResponseHeader=%s:%s\n", i, k, v)
			}
		}
		writeBody(&b, i, string(body))
		if _, err := io.WriteString(out, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// writeBody copies the answer's Key=Value lines, each prefixed with the request's
// index; other lines (an error page, say) are dropped so that no blank line splits a
// block.
func writeBody(b *strings.Builder, i int, body string) {
	for l := range strings.SplitSeq(body, "\n") {
		l = strings.TrimRight(l, "\r")
		if k, _, ok := strings.Cut(l, "="); ok && k != "" && !strings.ContainsAny(k, " \t") {
			fmt.Fprintf(b, "[%d body] %s\n", i, l)
		}
	}
}

func runAdvancedGRPC(ctx context.Context, cfg AdvancedClientConfig, out io.Writer) error {
	target := strings.TrimSuffix(strings.TrimPrefix(cfg.URL, "grpc://"), "/")
	if target == "" || strings.Contains(target, "/") {
		return fmt.Errorf("%w: want grpc://host:port, got %q", ErrBadConfig, cfg.URL)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	var md metadata.MD
	for _, h := range cfg.Headers {
		if strings.EqualFold(h[0], "host") {
			opts = append(opts, grpc.WithAuthority(h[1]))
			continue
		}
		md = metadata.Join(md, metadata.Pairs(h[0], h[1]))
	}
	conn, err := grpc.NewClient("passthrough:///"+target, opts...)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	defer conn.Close()
	client := echopb.NewEchoClient(conn)
	for i := 0; i < cfg.Count; i++ {
		cctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, md), cfg.Timeout)
		var hdr metadata.MD
		rep, err := client.Echo(cctx, &echopb.EchoRequest{Message: fmt.Sprintf("request %d", i+1)}, grpc.Header(&hdr))
		cancel()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrRequestFailed, status.Convert(err).Message())
		}
		var b strings.Builder
		if i > 0 {
			b.WriteString("\n")
		}
		// An OK call reports 200, as the echo-advanced client does.
		fmt.Fprintf(&b, "[%d] StatusCode=200\n", i)
		for _, k := range sortedKeys(hdr) {
			for _, v := range hdr[k] {
				fmt.Fprintf(&b, "[%d] ResponseHeader=%s:%s\n", i, k, v)
			}
		}
		fmt.Fprintf(&b, "[%d body] Host=%s\n", i, rep.GetHost())
		fmt.Fprintf(&b, "[%d body] Method=%s\n", i, rep.GetMethod())
		fmt.Fprintf(&b, "[%d body] Proto=%s\n", i, rep.GetProto())
		for _, k := range sortedKeys(rep.GetHeaders()) {
			for _, v := range rep.GetHeaders()[k].GetValues() {
				fmt.Fprintf(&b, "[%d body] RequestHeader=%s:%s\n", i, k, v)
			}
		}
		fmt.Fprintf(&b, "[%d body] Hostname=%s\n", i, rep.GetPod())
		if _, err := io.WriteString(out, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// PodName is the pod's name as the server reports it: POD_NAME, else the hostname
// (a pod's hostname is its name).
func PodName() string {
	if p := os.Getenv("POD_NAME"); p != "" {
		return p
	}
	h, _ := os.Hostname()
	return h
}
