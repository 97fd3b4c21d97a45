package outbound

import (
	"errors"
	"log/slog"
	"net"
	"net/http"

	"github.com/weft-mesh/weft/agent/proxy/http1"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/route"
	"github.com/weft-mesh/weft/api/logkey"
)

// leasedConn is a captured connection holding a slot of its pod's
// connections and its buffered bytes (limits.Lease); closing it returns
// them.
type leasedConn struct {
	net.Conn
	lease *limits.Lease
}

func (c *leasedConn) Close() error {
	c.lease.Close()
	return c.Conn.Close()
}

// CloseWrite half-closes the TCP connection (L4 splices need it).
func (c *leasedConn) CloseWrite() error {
	return closeWrite(c.Conn)
}

// closeWrite half-closes c when it can (a TCP connection, or one that
// wraps it); the captured connections' wrappers pass it on.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// headerBudget is the HTTP/1.1 server's Budget hook: the lease of the
// connection's pod.
func headerBudget(c net.Conn) http1.Budget {
	if cc, ok := c.(*clientConn); ok && cc.info.lease != nil {
		return cc.info.lease
	}
	return nil
}

// h1Refused reports an answer the HTTP/1.1 server produced itself.
func (p *Proxy) h1Refused(c net.Conn, status int, msg string) {
	var info *connInfo
	if cc, ok := c.(*clientConn); ok {
		info = cc.info
	}
	p.refuse(reasonOf(status), status, c.RemoteAddr(), info, msg)
}

// reasonOf maps an answer the proxy produced to its refusal reason.
func reasonOf(status int) limits.Reason {
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		return limits.HeaderTooLarge
	case http.StatusServiceUnavailable:
		return limits.BufferBudget
	case http.StatusForbidden:
		return limits.Forbidden
	default:
		return limits.BadRequest
	}
}

// refuse counts and logs a refusal of a captured client.
func (p *Proxy) refuse(r limits.Reason, status int, peer net.Addr, info *connInfo, msg string) {
	attrs := make([]slog.Attr, 0, 5)
	if status != 0 {
		attrs = append(attrs, slog.Int(logkey.Status, status))
	}
	if peer != nil {
		attrs = append(attrs, slog.String(logkey.Peer, peer.String()))
	}
	if info != nil {
		attrs = append(attrs, slog.String(logkey.Pod, info.caller.GetNamespace()+"/"+info.caller.GetName()),
			slog.String(logkey.Identity, info.src.String()))
	}
	if msg != "" {
		attrs = append(attrs, slog.String(logkey.Detail, msg))
	}
	p.cfg.Refusals.Refuse(r, "request refused", attrs...)
}

// h2HeaderBytes is what an HTTP/2 request's header holds, counted as the
// HTTP/2 header list size is (RFC 9113 6.5.2: name, value, 32 bytes each).
func h2HeaderBytes(r *http.Request) int64 {
	n := int64(len(r.Method) + len(r.Host) + len(r.RequestURI) + 3*32)
	for k, vv := range r.Header {
		for _, v := range vv {
			n += int64(len(k) + len(v) + 32)
		}
	}
	return n
}

// refuseSelect answers a request the route table refused, and logs and
// counts the refusal. A request whose client went away while it was
// matched gets no answer: there is nobody to read it.
func (p *Proxy) refuseSelect(w http.ResponseWriter, info *connInfo, err error) {
	var (
		reason limits.Reason
		status int
	)
	switch {
	case errors.Is(err, route.ErrURITooLong):
		reason, status = limits.URITooLong, http.StatusRequestURITooLong
	case errors.Is(err, route.ErrHeaderTooLong):
		reason, status = limits.HeaderTooLarge, http.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, route.ErrNoRoute):
		reason, status = limits.NoRoute, http.StatusNotFound
	default: // the request's context ended: the client is gone
		return
	}
	p.refuse(reason, status, nil, info, err.Error())
	httpError(w, status, err.Error())
}
