package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/weft-mesh/weft/agent/proxy/forward"
	"github.com/weft-mesh/weft/agent/proxy/route"
	"github.com/weft-mesh/weft/agent/proxy/session"
	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// exchange is one request's routing decision, carried to the transport in
// the outgoing request's context.
type exchange struct {
	snap    *Snapshot
	rule    *route.Rule
	plan    route.Plan
	cluster string
	target  string
	grpc    bool
	// body is the buffered request body when it may be replayed
	body    []byte
	hasBody bool
	session session.Result
}

type exchangeKey struct{}

func httpError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

// serveHTTP routes one request received on a policy port.
func (g *Gateway) serveHTTP(port uint32, w http.ResponseWriter, r *http.Request) {
	g.requests.Add(1)
	defer g.requests.Add(-1)
	snap := g.snap.Load()
	ns, name, _ := strings.Cut(snap.Gateway, "/")
	w, rec := g.cfg.Metrics.Record(w, ns, name)
	defer g.cfg.Metrics.Done(rec, r)
	if r.Method == http.MethodConnect {
		httpError(w, http.StatusMethodNotAllowed, "CONNECT is not proxied")
		return
	}
	x := &exchange{snap: snap, target: r.URL.RequestURI()}
	if r.ProtoMajor == 1 && strings.HasPrefix(r.RequestURI, "/") {
		x.target = r.RequestURI
	}
	x.grpc = r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
	vh := x.snap.vhostFor(port, r)
	if vh == nil {
		httpError(w, http.StatusNotFound, "no route for host")
		return
	}
	ok := g.route(w, r, port, vh, x)
	if x.rule != nil {
		rec.Routed(x.rule.Route, x.cluster)
	}
	if !ok {
		return
	}
	if bt := x.snap.BackendTLS[x.cluster]; bt != nil && bt.Invalid != "" {
		httpError(w, http.StatusInternalServerError, "backend TLS policy "+bt.Policy+" is invalid: "+bt.Invalid)
		return
	}
	release, ok := g.bufferBody(w, r, x)
	if !ok {
		return
	}
	defer release()
	ctx := r.Context()
	if x.rule != nil && x.rule.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, x.rule.RequestTimeout)
		defer cancel()
	}
	for _, m := range x.plan.Mirrors {
		g.mirror(x, m, r)
	}
	g.up.proxy.ServeHTTP(w, r.WithContext(context.WithValue(ctx, exchangeKey{}, x)))
}

// vhostFor picks the listener (HTTP: by Host; HTTPS: by the SNI the
// handshake chose it with) and its virtual host by Host.
func (s *Snapshot) vhostFor(port uint32, r *http.Request) *VHost {
	p := s.Ports[port]
	if p == nil {
		return nil
	}
	host := NormalizeHost(r.Host)
	lhost := host
	if r.TLS != nil {
		lhost = NormalizeHost(r.TLS.ServerName)
	}
	l := p.PickListener(lhost)
	if l == nil {
		return nil
	}
	return l.PickVHost(host)
}

// route selects the first table with a matching rule and runs the rule's
// filters; false when the request was answered here (404, 414, 431, a
// redirect, a CORS preflight, no valid backend).
func (g *Gateway) route(w http.ResponseWriter, r *http.Request, port uint32, vh *VHost, x *exchange) bool {
	dec, err := selectRule(r.Context(), vh, &route.Request{Method: r.Method, Path: x.target, Header: r.Header})
	switch {
	case errors.Is(err, route.ErrNoRoute):
		httpError(w, http.StatusNotFound, "no route")
		return false
	case errors.Is(err, route.ErrURITooLong):
		httpError(w, http.StatusRequestURITooLong, "request target too long to match")
		return false
	case errors.Is(err, route.ErrHeaderTooLong):
		httpError(w, http.StatusRequestHeaderFieldsTooLarge, "request header too long to match")
		return false
	case err != nil:
		return false // the client is gone
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	hr := route.HTTPRequest{Scheme: scheme, Host: r.Host, Port: port, Path: x.target, Method: r.Method, Header: r.Header}
	x.rule = dec.Rule
	x.plan, err = dec.Process(&hr, g.cfg.Rand)
	if a := x.plan.Answer; a != nil {
		for k, v := range a.Header {
			w.Header()[k] = v
		}
		x.plan.ApplyResponse(w.Header())
		w.WriteHeader(a.Status)
		return false
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, "no valid backend")
		return false
	}
	r.Host, x.target, x.cluster = hr.Host, hr.Path, x.plan.Backend.Cluster
	return true
}

// selectRule tries the virtual host's tables in order: the first with a
// matching rule serves.
func selectRule(ctx context.Context, vh *VHost, req *route.Request) (route.Decision, error) {
	for _, t := range vh.Tables {
		dec, err := t.SelectContext(ctx, req)
		if errors.Is(err, route.ErrNoRoute) {
			continue
		}
		return dec, err
	}
	return route.Decision{}, route.ErrNoRoute
}

// newReverseProxy is the forwarding half: net/http/httputil strips
// hop-by-hop headers, streams bodies and trailers (gRPC) and completes
// upgrades; the transport picks endpoints and retries.
func newReverseProxy(g *Gateway, rt http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			x := pr.In.Context().Value(exchangeKey{}).(*exchange)
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", x.cluster
			pr.Out.URL.Opaque, pr.Out.URL.Path, pr.Out.URL.RawPath, pr.Out.URL.RawQuery = x.target, "", "", ""
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: rt,
		ModifyResponse: func(resp *http.Response) error {
			x := resp.Request.Context().Value(exchangeKey{}).(*exchange)
			x.plan.ApplyResponse(resp.Header)
			if c := x.session.SetCookie; c != nil {
				if v := c.String(); v != "" {
					resp.Header["Set-Cookie"] = append(resp.Header["Set-Cookie"], v)
				}
			}
			if x.session.HeaderName != "" {
				resp.Header.Set(x.session.HeaderName, x.session.HeaderValue)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			code, msg := errorAnswer(err, r.Context())
			if code == http.StatusBadGateway || code == http.StatusInternalServerError {
				g.cfg.Logger.Debug("upstream", logkey.Target, r.URL.Host, logkey.Error, err)
			}
			if code != 0 {
				httpError(w, code, msg)
			}
		},
		ErrorLog: nil,
	}
}

// errorAnswer maps a failed forward to the client's answer; code 0 when the
// client went away and nothing is to be answered. A backend whose
// BackendTLSPolicy is invalid fails closed with a 500 naming the reason.
func errorAnswer(err error, ctx context.Context) (int, string) {
	if errors.Is(err, ErrBackendTLSInvalid) {
		return http.StatusInternalServerError, err.Error()
	}
	return forward.Answer(err, ctx, ctx)
}

// h2Upstream reports whether a request goes to its backend over HTTP/2:
// gRPC requests and clusters that speak h2c or gRPC.
func (x *exchange) h2Upstream() bool {
	if x.grpc {
		return true
	}
	cl := x.snap.Backends.Clusters[x.cluster]
	return cl != nil && (cl.Protocol == weftv1.Protocol_PROTOCOL_GRPC || cl.Protocol == weftv1.Protocol_PROTOCOL_H2C)
}
