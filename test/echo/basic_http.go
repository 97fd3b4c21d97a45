package echo

// echo-basic's HTTP server: the JSON the suite reads as roundtripper.CapturedRequest,
// and the paths its tests call (/status/NNN, /retry/..., /ws, /health).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/websocket"
)

// BasicAnswer is the JSON body of every echoed HTTP request: echo-basic's
// RequestAssertions, field for field.
type BasicAnswer struct {
	Path    string              `json:"path"` // the request URI as received, query included
	Host    string              `json:"host"`
	Method  string              `json:"method"`
	Proto   string              `json:"proto"`
	Headers map[string][]string `json:"headers"`
	// HTTPPort is the configured HTTP port, whichever port the request came on.
	HTTPPort  string `json:"httpPort"`
	Namespace string `json:"namespace"`
	Ingress   string `json:"ingress"`
	Service   string `json:"service"`
	Pod       string `json:"pod"`
	// TLS is set for requests that came over TLS.
	TLS *BasicTLS `json:"tls,omitempty"`
}

// BasicTLS describes the TLS connection a request came on.
type BasicTLS struct {
	Version            string   `json:"version"` // "TLSv1.3", "TLSv1.2", ...
	PeerCertificates   []string `json:"peerCertificates,omitempty"`
	ServerName         string   `json:"serverName"` // the client's SNI
	NegotiatedProtocol string   `json:"negotiatedProtocol,omitempty"`
	CipherSuite        string   `json:"cipherSuite"`
}

// basicTLS returns the assertions of a TLS connection, nil for none.
func basicTLS(cs *tls.ConnectionState) *BasicTLS {
	if cs == nil {
		return nil
	}
	return &BasicTLS{
		Version:            tlsVersion(cs.Version),
		PeerCertificates:   certPEMs(cs.PeerCertificates),
		ServerName:         cs.ServerName,
		NegotiatedProtocol: cs.NegotiatedProtocol,
		CipherSuite:        tls.CipherSuiteName(cs.CipherSuite),
	}
}

// tlsVersion names a TLS version as echo-basic's HTTP and gRPC answers do.
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1.0"
	}
	return ""
}

// certPEMs encodes certificates as PEM blocks, one string each: the suite compares
// them with the PEM of the certificate it configured.
func certPEMs(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	return out
}

// basicHTTP holds what the handlers share.
type basicHTTP struct {
	id       Identity
	httpPort string
	requests *lockedWriter
	retries  retries
}

func newBasicHTTP(cfg BasicConfig) *basicHTTP {
	w := cfg.Requests
	if w == nil {
		w = io.Discard
	}
	return &basicHTTP{id: cfg.Identity, httpPort: cfg.HTTPPort, requests: &lockedWriter{w: w}, retries: retries{attempts: map[string]int{}}}
}

// BasicHandler is the handler of echo-basic's HTTP and HTTPS ports:
//   - /health: 200 "OK";
//   - /status/NNN (exactly, no query): an empty answer with status NNN; other
//     /status/... requests: 400;
//   - /retry/...?uuid=U&succeedAfter=N[&responseCode=C][&delayRetry=D]: the first N
//     requests with uuid U fail (after D): the connection is reset, or answered with
//     status C; later ones are echoed;
//   - /ws: a WebSocket that sends every message back, text as text, binary as binary;
//   - anything else: 200 with the BasicAnswer, after ?delay=D if given.
//
// A request header X-Echo-Set-Header: "Name:value,Name2:value2" makes the echo set
// those response headers. Doubled slashes in the path are collapsed for routing only.
func BasicHandler(cfg BasicConfig) http.Handler { return newBasicHTTP(cfg).handler() }

func (b *basicHTTP) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "OK") })
	mux.HandleFunc("/status/", statusCode)
	mux.HandleFunc("/retry/", b.retry)
	mux.Handle("/ws", websocket.Handler(echoFrames))
	mux.HandleFunc("/", b.echo)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.ReplaceAll(r.URL.Path, "//", "/")
		mux.ServeHTTP(w, r)
	})
}

// h2cHandler is the handler of the h2c port: HTTP/2 requests (and HTTP/1.1 ones
// asking to upgrade to h2c) are echoed, whatever their path; others get 400.
func (b *basicHTTP) h2cHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 && r.Header.Get("Upgrade") != "h2c" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, "Expected h2c request")
			return
		}
		b.echo(w, r)
	})
}

func (b *basicHTTP) echo(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(b.requests, "Echoing back request made to %s to client (%s)\n", r.RequestURI, r.RemoteAddr)
	if err := delay(r, "delay"); err != nil {
		basicError(w, err, http.StatusInternalServerError)
		return
	}
	body, err := json.MarshalIndent(BasicAnswer{
		Path:      r.RequestURI,
		Host:      r.Host,
		Method:    r.Method,
		Proto:     r.Proto,
		Headers:   r.Header,
		HTTPPort:  b.httpPort,
		Namespace: b.id.Namespace,
		Ingress:   b.id.Ingress,
		Service:   b.id.Service,
		Pod:       b.id.Pod,
		TLS:       basicTLS(r.TLS),
	}, "", " ")
	if err != nil {
		basicError(w, err, http.StatusInternalServerError)
		return
	}
	setEchoHeaders(w.Header(), r.Header["X-Echo-Set-Header"])
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}

// setEchoHeaders sets the response headers X-Echo-Set-Header asks for: each value is
// "Name:value" pairs separated by commas. Names keep their case; a name given twice
// gets its values joined by commas.
func setEchoHeaders(h http.Header, requested []string) {
	for _, list := range requested {
		for kv := range strings.SplitSeq(list, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(kv), ":")
			if len(h[name]) == 0 {
				h[name] = []string{value}
			} else {
				h[name][0] += "," + strings.TrimSpace(value)
			}
		}
	}
}

var statusPath = regexp.MustCompile(`^/status/(\d\d\d)$`)

func statusCode(w http.ResponseWriter, r *http.Request) {
	code := http.StatusBadRequest
	if m := statusPath.FindStringSubmatch(r.RequestURI); m != nil {
		code, _ = strconv.Atoi(m[1])
	}
	w.WriteHeader(code)
}

// retries counts the failed attempts of each retry simulation, by uuid.
type retries struct {
	mu       sync.Mutex
	attempts map[string]int
}

// fail reports whether this attempt of uuid must fail, counting it if so.
func (r *retries) fail(uuid string, succeedAfter int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts[uuid] >= succeedAfter {
		return false
	}
	r.attempts[uuid]++
	return true
}

func (b *basicHTTP) retry(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	uuid := q.Get("uuid")
	if uuid == "" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "uuid is required")
		return
	}
	succeedAfter, err := strconv.Atoi(q.Get("succeedAfter"))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "succeedAfter is required")
		return
	}
	if !b.retries.fail(uuid, succeedAfter) {
		b.echo(w, r)
		return
	}
	if err := delay(r, "delayRetry"); err != nil {
		basicError(w, err, http.StatusInternalServerError)
		return
	}
	if code, err := strconv.Atoi(q.Get("responseCode")); err == nil {
		w.WriteHeader(code)
		return
	}
	if err := reset(w); err != nil {
		basicError(w, err, http.StatusInternalServerError)
	}
}

// reset drops the request's connection, with a TCP RST where it can (not under TLS,
// nor on HTTP/2, where connections cannot be taken over: that is a 500).
func reset(w http.ResponseWriter) error {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return err
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		if err := tcp.SetLinger(0); err != nil {
			conn.Close()
			return err
		}
	}
	return conn.Close()
}

// delay waits for the duration in the request's form value key, if any.
func delay(r *http.Request, key string) error {
	v := r.FormValue(key)
	if v == "" {
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
	return nil
}

// basicError answers {"message": err} with code.
func basicError(w http.ResponseWriter, err error, code int) {
	body, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{err.Error()})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// wsFrame is one WebSocket message and its frame type (text or binary).
type wsFrame struct {
	data []byte
	typ  byte
}

var frameCodec = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		f := v.(wsFrame)
		return f.data, f.typ, nil
	},
	Unmarshal: func(data []byte, typ byte, v any) error {
		f := v.(*wsFrame)
		f.data, f.typ = data, typ
		return nil
	},
}

// echoFrames sends every message back with its frame type until the client leaves.
func echoFrames(c *websocket.Conn) {
	defer c.Close()
	for {
		var f wsFrame
		if err := frameCodec.Receive(c, &f); err != nil {
			return
		}
		if err := frameCodec.Send(c, f); err != nil {
			return
		}
	}
}

// lockedWriter serialises the request lines of concurrent handlers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// basicHTTPServers listens on the HTTP (HTTP/1.1), h2c (HTTP/1.1 and h2c) and, with
// a key pair, HTTPS (h2 and http/1.1 by ALPN) ports. HTTP and HTTPS share one handler,
// and so the retry counts.
func basicHTTPServers(cfg BasicConfig) ([]server, error) {
	b := newBasicHTTP(cfg)
	h := b.handler()
	var tlsCfg *tls.Config
	if cfg.TLS() {
		var err error
		if tlsCfg, err = serverTLS(cfg.CertFile, cfg.KeyFile, cfg.ClientCAFile); err != nil {
			return nil, err
		}
	}
	var servers []server
	add := func(name, port string, hs *http.Server, serve func(*http.Server, net.Listener) error) error {
		l, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, port))
		if err != nil {
			stopAll(servers)
			return fmt.Errorf("listen %s: %w", name, err)
		}
		hs.ReadHeaderTimeout = 10 * time.Second
		servers = append(servers, server{
			name: name, addr: l.Addr().String(),
			serve: func() error {
				if err := serve(hs, l); !errors.Is(err, http.ErrServerClosed) {
					return err
				}
				return nil
			},
			stop: func() {
				ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
				defer cancel()
				if hs.Shutdown(ctx) != nil {
					hs.Close()
				}
			},
		})
		return nil
	}
	plain := func(hs *http.Server, l net.Listener) error { return hs.Serve(l) }
	http1 := new(http.Protocols)
	http1.SetHTTP1(true)
	if err := add("http", cfg.HTTPPort, &http.Server{Handler: h, Protocols: http1}, plain); err != nil {
		return nil, err
	}
	h2c := new(http.Protocols)
	h2c.SetHTTP1(true)
	h2c.SetUnencryptedHTTP2(true)
	if err := add("h2c", cfg.H2CPort, &http.Server{Handler: b.h2cHandler(), Protocols: h2c}, plain); err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		withTLS := func(hs *http.Server, l net.Listener) error { return hs.ServeTLS(l, "", "") }
		if err := add("https", cfg.HTTPSPort, &http.Server{Handler: h, TLSConfig: tlsCfg}, withTLS); err != nil {
			return nil, err
		}
	}
	return servers, nil
}
