package outbound

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/proxy/forward"
	"github.com/weft-mesh/weft/agent/proxy/http1"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/route"
	"github.com/weft-mesh/weft/agent/proxy/session"
	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

type infoKey struct{}

var replayPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// request is the per-request state of the L7 path.
type request struct {
	info    *connInfo
	snap    *Snapshot
	svc     *Service
	body    []byte // buffered body when replayable with a body
	hasBody bool
	grpc    bool
	// session persistence of the picked backend and what it decided
	session *weftv1.SessionPersistence
	result  session.Result
}

func httpError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

// ServeHTTP serves the requests of captured cleartext HTTP/2 clients (the
// h2c server, see h2.go); HTTP/1.1 comes through serveH1.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	info, ok := r.Context().Value(infoKey{}).(*connInfo)
	if !ok {
		httpError(w, http.StatusInternalServerError, "no capture record")
		return
	}
	w, ex := p.observe(w, info)
	defer p.done(ex, r)
	// the server holds the header of each open stream: the pod's share
	// of the budget bounds them (HTTP/1.1 reserves as it reads)
	n := h2HeaderBytes(r)
	if !info.lease.Reserve(n) {
		p.refuse(limits.BufferBudget, http.StatusServiceUnavailable, nil, info, "request header buffer budget exhausted")
		httpError(w, http.StatusServiceUnavailable, "request header buffer budget exhausted")
		return
	}
	defer info.lease.Release(n)
	p.serve(w, r, r.Context(), info, ex)
}

// serve routes and forwards one request of a captured client. reqCtx ends
// when the client is known to be gone. ex (nil: metrics off) learns where
// the request went.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, reqCtx context.Context, info *connInfo, ex *metrics.Recorder) {
	p.requests.Add(1)
	defer p.requests.Add(-1)
	rq := request{info: info, snap: p.snap.Load()}
	rq.svc = rq.snap.Services[info.orig.Dst]
	destination(ex, rq.svc)
	if rq.svc == nil {
		httpError(w, http.StatusServiceUnavailable, "service is no longer meshed")
		return
	}
	rq.grpc = r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
	if r.Method == http.MethodConnect {
		httpError(w, http.StatusMethodNotAllowed, "CONNECT is not proxied")
		return
	}
	rt := new(routed)
	if !p.pickRoute(reqCtx, w, r, &rq, ex, rt) {
		return
	}
	upgrade := prepareRequestHeaders(r.Header)
	release, ok := p.bufferBody(w, r, &rq, rt)
	if !ok {
		return
	}
	defer release()

	ctx := reqCtx
	if rt.rule != nil && rt.rule.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rt.rule.RequestTimeout)
		defer cancel()
	}
	if len(rt.plan.Mirrors) > 0 && rq.replayable() {
		for _, m := range rt.plan.Mirrors {
			p.mirror(rq, m, r, rt.target)
		}
	}
	resp, err := p.forward(ctx, &rq, rt, r, upgrade)
	var bp *[]byte // the body's first bytes, when startBody read them
	n := 0
	if err == nil {
		resp, bp, n, err = p.startBody(ctx, &rq, rt, r, upgrade, resp)
	}
	if err != nil {
		code, msg := forward.Answer(err, ctx, reqCtx)
		if code == http.StatusBadGateway && p.upstreamLog.Allow() {
			// A 502 is a request the caller lost: say why (at most 1/s).
			p.cfg.Logger.Warn("answered 502: upstream failed", logkey.Cluster, rt.cluster, logkey.Error, err)
		}
		if code != 0 {
			httpError(w, code, msg)
		}
		return
	}
	p.writeResponse(w, r, reqCtx, resp, &rt.plan, &rq.result, bp, n)
}

// startBody reads the first bytes of the answer to an idempotent request
// sent over HTTP/1.1 when its length is known, before anything of it goes
// to the client (whose header waits for the body anyway). An answer cut
// before them (a pod that crashed or closed, a policy change that cut a
// spliced stream) is dropped and the request sent once more, as the event
// loops do. It returns the answer to write, with the buffer holding its
// first n bytes (nil when it read none).
func (p *Proxy) startBody(ctx context.Context, rq *request, rt *routed, r *http.Request, upgrade string, resp *http.Response) (*http.Response, *[]byte, int, error) {
	if resp.ContentLength <= 0 || resp.ProtoMajor != 1 || upgrade != "" || !http1.Idempotent(r) || !rq.replayable() {
		return resp, nil, 0, nil
	}
	bp := bufPool.Get().(*[]byte)
	n, err := io.ReadAtLeast(resp.Body, (*bp)[:min(int64(len(*bp)), resp.ContentLength)], 1)
	if err == nil {
		return resp, bp, n, nil
	}
	bufPool.Put(bp)
	resp.Body.Close()
	if ctx.Err() != nil {
		return nil, nil, 0, ctx.Err()
	}
	resp, err = p.forward(ctx, rq, rt, r, upgrade)
	return resp, nil, 0, err
}

// routed is where a request goes: the rule that matched (nil: the
// Service's default backend), what its filters decided, the cluster and
// the request target after rewrites.
type routed struct {
	plan    route.Plan
	rule    *route.Rule
	cluster string
	target  string
}

// pickRoute selects the rule and backend of a request, into rt, and applies
// the rule's request filters (r.Host may change). False when the request was
// answered here (no match, a request too long to match, a redirect or
// direct answer, no valid backend) or the client went away while it was
// matched (ctx done: nobody is left to answer).
func (p *Proxy) pickRoute(ctx context.Context, w http.ResponseWriter, r *http.Request, rq *request, ex *metrics.Recorder, rt *routed) bool {
	*rt = routed{target: r.RequestURI}
	if r.ProtoMajor == 2 || rt.target == "" || rt.target[0] != '/' {
		rt.target = r.URL.RequestURI()
	}
	table := rq.svc.Table(rq.info.callerN)
	if table == nil || len(table.Rules()) == 0 {
		rt.cluster = rq.svc.DefaultCluster
		ex.Routed("", rt.cluster)
		return true
	}
	dec, err := table.SelectContext(ctx, &route.Request{Method: r.Method, Path: rt.target, Header: r.Header})
	if err != nil {
		p.refuseSelect(w, rq.info, err)
		return false
	}
	rt.rule = dec.Rule
	ex.Routed(dec.Rule.Route, "")
	hr := route.HTTPRequest{Scheme: "http", Host: r.Host, Port: rq.svc.Port, Path: rt.target, Method: r.Method, Header: r.Header}
	rt.plan, err = dec.Process(&hr, p.cfg.Rand)
	if rt.plan.Answer != nil {
		for k, v := range rt.plan.Answer.Header {
			w.Header()[k] = v
		}
		rt.plan.ApplyResponse(w.Header())
		w.WriteHeader(rt.plan.Answer.Status)
		return false
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, "no valid backend")
		return false
	}
	r.Host, rt.target = hr.Host, hr.Path
	rt.cluster = rt.plan.Backend.Cluster
	ex.Routed(dec.Rule.Route, rt.cluster)
	rq.session = rt.plan.Backend.Session
	return true
}

// bufferBody reads a small, known-length body into memory when retries or
// mirrors may replay it, if the pod's share of the buffer budget holds it
// (else the request is sent once, as Envoy does past its buffer limit).
// release returns the buffer; false when the body could not be read
// (answered 400).
func (p *Proxy) bufferBody(w http.ResponseWriter, r *http.Request, rq *request, rt *routed) (release func(), ok bool) {
	rq.hasBody = r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	needReplay := rt.rule != nil && (rt.rule.Retry != nil && rt.rule.Retry.Attempts > 0 || len(rt.plan.Mirrors) > 0)
	if !rq.hasBody || !needReplay || r.ContentLength <= 0 || r.ContentLength > p.cfg.Limits.RetryBodyBytes {
		return noRelease, true
	}
	lease, n := rq.info.lease, r.ContentLength
	if !lease.Reserve(n) {
		p.cfg.Refusals.Refuse(limits.RetryUnbuffered, "")
		return noRelease, true
	}
	buf := replayPool.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := io.Copy(buf, io.LimitReader(r.Body, r.ContentLength)); err != nil {
		replayPool.Put(buf)
		lease.Release(n)
		p.refuse(limits.BadRequest, http.StatusBadRequest, nil, rq.info, "reading request body")
		httpError(w, http.StatusBadRequest, "reading request body")
		return nil, false
	}
	rq.body = buf.Bytes()
	return func() { replayPool.Put(buf); lease.Release(n) }, true
}

func noRelease() {}

// replayable reports whether the request can be sent more than once.
func (rq *request) replayable() bool { return !rq.hasBody || rq.body != nil }

// forward sends the request, retrying as the rule's retry policy says when
// the request can be replayed. Connect failures count as 503.
func (p *Proxy) forward(ctx context.Context, rq *request, rt *routed, r *http.Request, upgrade string) (*http.Response, error) {
	var policy *route.RetryPolicy
	if rt.rule != nil {
		policy = rt.rule.Retry
	}
	return forward.Retry(ctx, policy, rq.replayable(), func() (*http.Response, error) {
		return p.attempt(ctx, rq, rt.rule, rt.cluster, r, rt.target, upgrade)
	})
}

// attempt sends one try of the request to an endpoint of cluster.
func (p *Proxy) attempt(ctx context.Context, rq *request, rule *route.Rule, cluster string, r *http.Request, target, upgrade string) (*http.Response, error) {
	ep, node, h2, err := p.pick(rq, cluster, r, upgrade)
	if err != nil {
		return nil, err
	}
	if rule != nil && rule.BackendRequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rule.BackendRequestTimeout)
		// the body is read after we return: cancel when it is closed (or
		// at once when the attempt fails)
		ctx = withCancelOnClose(ctx, cancel)
	}
	o := outRequest(rq, r, ep, target) // on the stack: out is its one copy
	var resp *http.Response
	key := upstreamKey{src: rq.info.src, dst: ep.Identity, node: node, addr: ep.Addr, plain: ep.Plaintext}
	if !h2 && upgrade == "" {
		resp, err = p.h1.RoundTrip(ctx, key, o.WithContext(ctx))
	} else if h2 {
		resp, err = p.h2.RoundTrip(ctx, key, o.WithContext(ctx))
	} else {
		// net/http's transport learns the tunnel target from the context
		ctx = context.WithValue(ctx, dialKey{}, &dialInfo{node: node, addr: ep.Addr, plain: ep.Plaintext})
		resp, err = p.up.get(rq.info.src, ep.Identity).RoundTrip(o.WithContext(ctx))
	}
	if err != nil {
		if c, ok := ctx.Value(cancelKey{}).(context.CancelFunc); ok {
			c()
		}
		return nil, err
	}
	if c, ok := ctx.Value(cancelKey{}).(context.CancelFunc); ok && resp.Body != nil {
		resp.Body = forward.CancelOnClose(resp.Body, c)
	}
	return resp, nil
}

// pick chooses the endpoint of cluster a try goes to (by the session when
// the backend has one), the tunnel address of its node, and whether it is
// spoken to in HTTP/2.
func (p *Proxy) pick(rq *request, cluster string, r *http.Request, upgrade string) (ep *Endpoint, node string, h2 bool, err error) {
	cl, ok := rq.snap.Clusters[cluster]
	if !ok {
		return nil, "", false, forward.ErrNoEndpoint
	}
	if rq.session == nil {
		if ep, ok = cl.Pick(p.cfg.Rand); !ok {
			return nil, "", false, forward.ErrNoEndpoint
		}
	} else {
		res := p.cfg.Sessions.Resolve(rq.session, cluster, cl.Raw, r.Header, time.Now(), func([]*weftv1.Endpoint) *weftv1.Endpoint { return cl.PickRaw(p.cfg.Rand) })
		if res.Endpoint == nil {
			return nil, "", false, forward.ErrNoEndpoint
		}
		if ep, ok = cl.Of(res.Endpoint); !ok {
			return nil, "", false, forward.ErrNoEndpoint
		}
		rq.result = res
	}
	node, ok = rq.snap.Tunnels[ep.Node]
	if !ok && !ep.Plaintext {
		return nil, "", false, forward.ErrNoEndpoint
	}
	h2 = rq.grpc || cl.Protocol == weftv1.Protocol_PROTOCOL_GRPC || cl.Protocol == weftv1.Protocol_PROTOCOL_H2C
	return ep, node, h2 && upgrade == "", nil
}

// outRequest is the request a try sends to ep: r's method, header and
// host, target as its path, and its body (the buffered copy when there is
// one, so that it can be sent again).
func outRequest(rq *request, r *http.Request, ep *Endpoint, target string) http.Request {
	out := http.Request{
		Method:        r.Method,
		URL:           &url.URL{Scheme: "http", Host: ep.Addr.String(), Opaque: target},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        r.Header,
		Host:          r.Host,
		ContentLength: r.ContentLength,
		Trailer:       r.Trailer,
	}
	switch {
	case !rq.hasBody:
		out.Body = http.NoBody
		out.ContentLength = 0
	case rq.body != nil:
		b := rq.body
		out.Body = io.NopCloser(bytes.NewReader(b))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	default:
		out.Body = r.Body
	}
	return out
}

type cancelKey struct{}

func withCancelOnClose(ctx context.Context, cancel context.CancelFunc) context.Context {
	return context.WithValue(ctx, cancelKey{}, cancel)
}

// writeResponse copies the backend's response to the client: headers
// without hop-by-hop ones, the filters' response edits, the body (flushed
// as it comes when it is a stream) and the trailers.
func (p *Proxy) writeResponse(w http.ResponseWriter, r *http.Request, reqCtx context.Context, resp *http.Response, plan *route.Plan, sess *session.Result, bp *[]byte, n int) {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		p.upgrade(w, r, resp, plan)
		return
	}
	defer resp.Body.Close()
	keys := writeResponseHeader(w, r, resp, plan, sess)
	rc := http.NewResponseController(w)
	stream := resp.ContentLength == -1
	if stream {
		rc.Flush()
	}
	var err error
	if bp == nil {
		bp = bufPool.Get().(*[]byte)
	} else {
		_, err = w.Write((*bp)[:n]) // what startBody read (never a stream)
	}
	if err == nil {
		err = copyBody(w, rc, resp.Body, *bp, stream)
	}
	bufPool.Put(bp)
	if err != nil {
		// the backend or the client failed mid-response: abort so the client
		// sees a reset, not a truncated success
		if reqCtx.Err() == nil {
			panic(http.ErrAbortHandler)
		}
		return
	}
	writeTrailers(w.Header(), resp.Trailer, keys)
}

// writeResponseHeader sends the backend's status and header to the client:
// without hop-by-hop fields, with the filters' response edits and the
// session's cookie or header, the trailers announced. It returns the
// announced trailer keys.
func writeResponseHeader(w http.ResponseWriter, r *http.Request, resp *http.Response, plan *route.Plan, sess *session.Result) []string {
	removeHopByHop(resp.Header)
	plan.ApplyResponse(resp.Header)
	if sess.SetCookie != nil {
		if v := sess.SetCookie.String(); v != "" {
			resp.Header["Set-Cookie"] = append(resp.Header["Set-Cookie"], v)
		}
	}
	if sess.HeaderName != "" {
		resp.Header.Set(sess.HeaderName, sess.HeaderValue)
	}
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	if _, ok := h["Content-Length"]; !ok && resp.ContentLength > 0 && r.Method != http.MethodHead {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	var keys []string // announced trailers
	if len(resp.Trailer) > 0 {
		keys = make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	return keys
}

// writeTrailers sets the trailers the backend sent. HTTP/2 backends (gRPC)
// send trailers they never announced: the client (h2c) fills resp.Trailer
// at EOF; TrailerPrefix sends them anyway.
func writeTrailers(h, trailer http.Header, keys []string) {
	for k, v := range trailer {
		if slices.Contains(keys, k) {
			h[k] = v
		} else {
			h[http.TrailerPrefix+k] = v
		}
	}
}

func copyBody(w io.Writer, rc *http.ResponseController, src io.Reader, buf []byte, flush bool) error {
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush {
				if ferr := rc.Flush(); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// upgrade completes a protocol switch (WebSocket...) and splices the client
// connection with the backend stream.
func (p *Proxy) upgrade(w http.ResponseWriter, r *http.Request, resp *http.Response, plan *route.Plan) {
	backend, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		httpError(w, http.StatusBadGateway, "upgrade without a bidirectional body")
		return
	}
	defer backend.Close()
	up := resp.Header.Get("Upgrade")
	removeHopByHop(resp.Header)
	plan.ApplyResponse(resp.Header)
	resp.Header["Connection"] = []string{"Upgrade"}
	resp.Header["Upgrade"] = []string{up}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		httpError(w, http.StatusInternalServerError, "cannot switch protocols on this connection")
		return
	}
	defer conn.Close()
	resp.Body = nil
	if err := resp.Write(brw); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		bp := bufPool.Get().(*[]byte)
		// bytes the server already buffered from the client come first
		io.CopyBuffer(backend, io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), conn), *bp)
		bufPool.Put(bp)
		backend.Close()
	}()
	bp := bufPool.Get().(*[]byte)
	io.CopyBuffer(conn, backend, *bp)
	bufPool.Put(bp)
	conn.Close()
	<-done
}

// mirror sends a copy of the request to cluster and discards the answer.
func (p *Proxy) mirror(rq request, cluster string, r *http.Request, target string) {
	h := r.Header.Clone()
	var body []byte
	if rq.body != nil {
		body = bytes.Clone(rq.body)
	}
	mr := &http.Request{Method: r.Method, Header: h, Host: r.Host, ContentLength: int64(len(body)), Body: http.NoBody}
	if body != nil {
		mr.Body = io.NopCloser(bytes.NewReader(body))
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mq := rq
		mq.body = body
		mq.hasBody = body != nil
		mq.session = nil
		resp, err := p.attempt(ctx, &mq, nil, cluster, mr, target, "")
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
}
