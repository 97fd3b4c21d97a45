package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/proxy/forward"
	"github.com/weft-mesh/weft/agent/proxy/h2c"
	"github.com/weft-mesh/weft/agent/proxy/http1"
	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/proxy/route"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// upstreams forwards HTTP requests. HTTP/1.1 goes through the node proxy's
// own HTTP/1.1 client and HTTP/2 (h2c, gRPC, or h2 over a BackendTLSPolicy's
// TLS) through its HTTP/2 client, as the outbound's do: a connection
// carried in a tunnel stream is then not used again once the destination
// node's agent drains, and closes when idle, where net/http's would stay
// pooled and in use until that agent's grace period cut it, with its
// requests. Protocol upgrades (HTTP/1.1) go through net/http: one
// transport without and one with TLS origination, each pooling connections
// per endpoint address.
// Every dialler learns the endpoint from the request's context.
type upstreams struct {
	g     *Gateway
	proxy *httputil.ReverseProxy
	// upgrade carries protocol upgrades, upgradeTLS those to backends
	// whose TLS the Gateway originates
	upgrade, upgradeTLS *http.Transport
	h1                  *http1.Client[upKey]
	h2                  *h2c.Client[upKey]
}

// upKey is what an upstream connection is dialled for.
type upKey struct {
	src, dst spiffeid.ID
	node     string
	addr     netip.AddrPort
	plain    bool
	// tls names the TLS origination: the BackendTLSPolicy's verification
	// (BackendTLS.Key) and the client certificate presented; "" for none.
	// A connection is never reused for other TLS settings, and those of
	// settings no longer applied close once idle.
	tls string
}

type dialKey struct{}

// dialInfo is the endpoint one attempt connects to.
type dialInfo struct {
	snap    *Snapshot
	cluster string
	ep      *outbound.Endpoint
}

func newUpstreams(g *Gateway) *upstreams {
	u := &upstreams{g: g}
	u.upgrade, u.upgradeTLS = u.newTransport(false), u.newTransport(true)
	dial := func(alpn string) func(ctx context.Context, k upKey) (net.Conn, error) {
		return func(ctx context.Context, k upKey) (net.Conn, error) {
			di, ok := ctx.Value(dialKey{}).(*dialInfo)
			if !ok {
				return nil, errors.New("upstream dial without an endpoint")
			}
			ctx, cancel := context.WithTimeout(ctx, g.cfg.DialTimeout)
			defer cancel()
			if k.tls == "" {
				return g.dialCluster(ctx, di.snap, di.cluster, false, nil, di.ep)
			}
			return g.dialTLS(ctx, di, alpn)
		}
	}
	u.h1 = http1.NewClient(dial("http/1.1"), http1.ClientConfig{MaxIdlePerKey: 256})
	u.h2 = h2c.NewClient(dial("h2"), outbound.UpstreamH2)
	u.proxy = newReverseProxy(g, u)
	return u
}

// dialTLS connects to the endpoint with the cluster's TLS origination,
// offering alpn, which the backend must agree to. The connection still
// says when its tunnel goes away.
func (g *Gateway) dialTLS(ctx context.Context, di *dialInfo, alpn string) (net.Conn, error) {
	c, err := g.dialCluster(ctx, di.snap, di.cluster, true, []string{alpn}, di.ep)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*tls.Conn)
	if !ok { // no BackendTLSPolicy any more: the next try dials anew
		c.Close()
		return nil, fmt.Errorf("%w: cluster %s has no backend TLS", forward.ErrConnect, di.cluster)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != alpn && (alpn == "h2" || p != "") {
		tc.Close()
		return nil, fmt.Errorf("%w: backend %s negotiated %q, not %s", forward.ErrConnect, di.ep.Addr, p, alpn)
	}
	if ga, ok := tc.NetConn().(interface{ GoingAway() <-chan struct{} }); ok {
		return tlsGoingAway{tc, ga.GoingAway()}, nil
	}
	return tc, nil
}

// tlsGoingAway is a TLS connection over a tunnel stream, which says when
// the tunnel goes away (see tunnel.Conn.GoingAway).
type tlsGoingAway struct {
	*tls.Conn
	away <-chan struct{}
}

func (c tlsGoingAway) GoingAway() <-chan struct{} { return c.away }

func (u *upstreams) newTransport(originate bool) *http.Transport {
	alpn := []string{"http/1.1"}
	var p http.Protocols
	p.SetHTTP1(true)
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		di, ok := ctx.Value(dialKey{}).(*dialInfo)
		if !ok {
			return nil, errors.New("upstream dial without an endpoint")
		}
		ctx, cancel := context.WithTimeout(ctx, u.g.cfg.DialTimeout)
		defer cancel()
		return u.g.dialCluster(ctx, di.snap, di.cluster, originate, alpn, di.ep)
	}
	t := &http.Transport{
		Protocols:           &p,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	if originate {
		t.DialTLSContext = dial
	} else {
		t.DialContext = dial
	}
	return t
}

func (u *upstreams) closeIdle() {
	u.upgrade.CloseIdleConnections()
	u.upgradeTLS.CloseIdleConnections()
}

// close closes the idle connections and the h2c ones (after a drain).
func (u *upstreams) close() {
	u.closeIdle()
	u.h1.Close()
	u.h2.Close()
}

// RoundTrip sends the request, retrying as the rule's retry policy says
// when it can be replayed. Connect failures count as 503.
func (u *upstreams) RoundTrip(out *http.Request) (*http.Response, error) {
	x := out.Context().Value(exchangeKey{}).(*exchange)
	var policy *route.RetryPolicy
	if x.rule != nil {
		policy = x.rule.Retry
	}
	return forward.Retry(out.Context(), policy, x.replayable(), func() (*http.Response, error) {
		return u.attempt(out, x, x.cluster, true)
	})
}

// attempt sends one try to an endpoint of cluster (session persistence
// applies when sticky).
func (u *upstreams) attempt(out *http.Request, x *exchange, cluster string, sticky bool) (*http.Response, error) {
	ep, err := u.endpoint(out, x, cluster, sticky)
	if err != nil {
		return nil, err
	}
	ctx := context.WithValue(out.Context(), dialKey{}, &dialInfo{snap: x.snap, cluster: cluster, ep: ep})
	var cancel context.CancelFunc = func() {}
	if x.rule != nil && x.rule.BackendRequestTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, x.rule.BackendRequestTimeout)
	}
	req := out.Clone(ctx)
	bt := x.snap.BackendTLS[cluster]
	originate := bt != nil
	req.URL.Scheme, req.URL.Host = "http", ep.Addr.String()
	if originate {
		// net/http's transport (upgrades) pools by URL host: one pool
		// per endpoint and verification (the dialler takes the address
		// from dialInfo)
		req.URL.Scheme = "https"
		req.URL.Host = fmt.Sprintf("%s-%x.backend.weft:%d", bt.Key, ep.Addr.Addr().AsSlice(), ep.Addr.Port())
	}
	switch {
	case !x.hasBody:
		req.Body, req.ContentLength = http.NoBody, 0
	case x.body != nil:
		req.Body = io.NopCloser(bytes.NewReader(x.body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(x.body)), nil }
	}
	var resp *http.Response
	key := upKey{src: x.snap.Identity, dst: ep.Identity, node: ep.Node, addr: ep.Addr, plain: ep.Plaintext}
	if originate {
		key.tls = bt.Key + "/" + x.snap.ClientCertKey
	}
	switch {
	case out.Header.Get("Upgrade") != "":
		t := u.upgrade
		if originate {
			t = u.upgradeTLS
		}
		resp, err = t.RoundTrip(req)
	case x.h2Upstream():
		resp, err = u.h2.RoundTrip(ctx, key, req)
	default:
		resp, err = u.h1.RoundTrip(ctx, key, req)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = forward.CancelOnClose(resp.Body, cancel)
	return resp, nil
}

func (u *upstreams) endpoint(out *http.Request, x *exchange, cluster string, sticky bool) (*outbound.Endpoint, error) {
	if !sticky || x.plan.Backend == nil || x.plan.Backend.Session == nil {
		ep, _, err := u.g.pickEndpoint(x.snap, cluster)
		return ep, err
	}
	cl, ok := x.snap.Backends.Clusters[cluster]
	if !ok {
		return nil, ErrNoEndpoint
	}
	res := u.g.cfg.Sessions.Resolve(x.plan.Backend.Session, cluster, cl.Raw, out.Header, time.Now(),
		func([]*weftv1.Endpoint) *weftv1.Endpoint { return cl.PickRaw(u.g.cfg.Rand) })
	if res.Endpoint == nil {
		return nil, ErrNoEndpoint
	}
	ep, ok := cl.Of(res.Endpoint)
	if !ok {
		return nil, ErrNoEndpoint
	}
	x.session = res
	return ep, nil
}

// replayable reports whether the request can be sent more than once.
func (x *exchange) replayable() bool { return !x.hasBody || x.body != nil }

// bufferBody reads a small, known-length body into memory when retries or
// mirrors may replay it; false when it could not be read (answered 400).
func (g *Gateway) bufferBody(w http.ResponseWriter, r *http.Request, x *exchange) (release func(), ok bool) {
	x.hasBody = r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	replay := x.rule != nil && (x.rule.Retry != nil && x.rule.Retry.Attempts > 0 || len(x.plan.Mirrors) > 0)
	if !x.hasBody || !replay || r.ContentLength <= 0 || r.ContentLength > g.cfg.Limits.RetryBodyBytes {
		return func() {}, true
	}
	buf := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, buf); err != nil {
		httpError(w, http.StatusBadRequest, "reading request body")
		return nil, false
	}
	x.body = buf
	return func() {}, true
}

// mirror sends a copy of the request to cluster and discards the answer.
func (g *Gateway) mirror(x *exchange, cluster string, r *http.Request) {
	if !x.replayable() {
		return
	}
	mx := &exchange{snap: x.snap, cluster: cluster, target: x.target, grpc: x.grpc, body: x.body, hasBody: x.hasBody}
	out := r.Clone(context.Background())
	out.URL.Opaque, out.URL.Path, out.URL.RawQuery, out.RequestURI = x.target, "", "", ""
	out.Header.Del("Connection")
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := g.up.attempt(out.WithContext(ctx), mx, cluster, false)
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
}
