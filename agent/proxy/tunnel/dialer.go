package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// Target is one tunnelled connection: the pod address to reach, the node
// proxy that delivers to it and the identities on both ends.
type Target struct {
	// Node is the destination node's inbound proxy address ("ip:15008").
	Node string
	// Addr is the destination pod's ip:port (the CONNECT :authority).
	Addr netip.AddrPort
	// Source is the local workload whose SVID the tunnel presents.
	Source spiffeid.ID
	// Dest is the identity the destination must present (from the endpoint).
	Dest spiffeid.ID
}

// DialerConfig configures a Dialer.
type DialerConfig struct {
	Identities Identities
	// DialTimeout bounds TCP connect + TLS handshake to a node proxy; 5s when zero.
	DialTimeout time.Duration
	// IdleTimeout closes pooled TLS connections with no streams; 90s when zero.
	IdleTimeout time.Duration
}

// ErrRefused: the destination proxy answered the CONNECT with a non-200 status.
var ErrRefused = errors.New("tunnel refused")

// Dialer opens CONNECT streams to node proxies. TLS connections are pooled
// and multiplexed per (source identity, destination identity, node): one
// HTTP/2 transport per identity pair, whose pool is keyed by node address.
type Dialer struct {
	cfg  DialerConfig
	mu   sync.Mutex
	tr   map[pairKey]*http.Transport
	done bool
}

type pairKey struct{ src, dst spiffeid.ID }

// NewDialer returns a Dialer; Close releases its pooled connections.
func NewDialer(cfg DialerConfig) *Dialer {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	return &Dialer{cfg: cfg, tr: make(map[pairKey]*http.Transport)}
}

var errClosed = errors.New("tunnel dialer closed")

func (d *Dialer) transport(src, dst spiffeid.ID) (*http.Transport, error) {
	k := pairKey{src, dst}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return nil, errClosed
	}
	if t, ok := d.tr[k]; ok {
		return t, nil
	}
	tc := tlsconfig.MTLSClientConfig(SVIDSource(d.cfg.Identities, src), BundleSource(d.cfg.Identities), tlsconfig.AuthorizeID(dst))
	tc.MinVersion = tls.VersionTLS13
	tc.ServerName = ServerName(dst)
	tc.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	var p http.Protocols
	p.SetHTTP2(true)
	nd := &net.Dialer{Timeout: d.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		DialContext:         nd.DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: d.cfg.DialTimeout,
		IdleConnTimeout:     d.cfg.IdleTimeout,
		Protocols:           &p,
		DisableCompression:  true,
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerConnection: 16 << 20,
			MaxReceiveBufferPerStream:     4 << 20,
			PingTimeout:                   15 * time.Second,
			SendPingTimeout:               30 * time.Second,
		},
	}
	d.tr[k] = t
	return t, nil
}

// Dial opens one CONNECT stream to t.Addr through t.Node. ctx bounds the
// dial only; the stream lives until the returned conn is closed.
func (d *Dialer) Dial(ctx context.Context, t Target) (*Conn, error) {
	tr, err := d.transport(t.Source, t.Dest)
	if err != nil {
		return nil, err
	}
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	pr, pw := io.Pipe()
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Scheme: "https", Host: t.Node},
		Host:          t.Addr.String(),
		Header:        http.Header{HeaderDestinationIdentity: {t.Dest.String()}},
		Body:          pr,
		ContentLength: -1,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
	}).WithContext(streamCtx)
	resp, err := tr.RoundTrip(req)
	if !stop() {
		// the dial deadline fired: the stream (if any) is already cancelled
		if err == nil {
			resp.Body.Close()
		}
		pw.Close()
		cancel()
		return nil, fmt.Errorf("tunnel to %s via %s: %w", t.Addr, t.Node, context.Cause(ctx))
	}
	if err != nil {
		pw.Close()
		cancel()
		return nil, fmt.Errorf("tunnel to %s via %s: %w", t.Addr, t.Node, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		pw.Close()
		cancel()
		return nil, fmt.Errorf("tunnel to %s via %s: %w: %s", t.Addr, t.Node, ErrRefused, resp.Status)
	}
	return &Conn{r: resp.Body, w: pw, cancel: cancel, target: t}, nil
}

// Close closes every pooled connection; later Dials fail.
func (d *Dialer) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done = true
	for _, t := range d.tr {
		t.CloseIdleConnections()
	}
}

// CloseIdle closes pooled connections that carry no stream.
func (d *Dialer) CloseIdle() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, t := range d.tr {
		t.CloseIdleConnections()
	}
}
