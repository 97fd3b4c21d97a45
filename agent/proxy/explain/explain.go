// Package explain answers, from a node's policy, where a request from a pod
// on that node would go and why: the Service it reaches, the routes that
// apply to its caller, each match in precedence order with the condition
// the request failed, the rule that decides, its filters, backends with
// weights, session persistence, timeouts, and the endpoints with their
// nodes and identities. It runs the proxy's own code (outbound.Compile,
// Service.Table, route.Table.Explain, which calls the matcher Select
// uses), so it cannot disagree with the proxy. Pure: weftctl explain does
// the I/O.
package explain

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/proxy/route"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Query is one request to explain.
type Query struct {
	// Caller is the calling pod's namespace and name; Node the node whose
	// policy is given (the caller's: routing happens at the source).
	CallerNamespace, CallerPod, Node string
	Method                           string
	// URL is http://HOST[:PORT]/PATH[?QUERY]. HOST is a Service name
	// (NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.DOMAIN) or its cluster IP.
	URL    *url.URL
	Header http.Header
}

// ErrNoService: the URL names no meshed Service port of the policy.
var ErrNoService = errors.New("no meshed Service port")

// Write explains q against policy p.
func Write(w io.Writer, p *weftv1.NodePolicy, q Query) error {
	snap, err := outbound.Compile(p)
	if err != nil {
		return err
	}
	vip, svc, err := find(snap, q)
	if err != nil {
		return err
	}
	method := q.Method
	if method == "" {
		method = http.MethodGet
	}
	target := q.URL.RequestURI()
	e := &printer{w: w}
	e.line("request", "%s %s from %s/%s (node %s)", method, q.URL, q.CallerNamespace, q.CallerPod, q.Node)
	e.line("service", "%s (VIP %s, %s)", svc.Name, vip, protocol(svc.Protocol))
	table := svc.Table(q.CallerNamespace)
	switch {
	case table == nil || len(table.Rules()) == 0:
		e.line("routes", "none for callers in %s: every request goes to the Service's endpoints", q.CallerNamespace)
		e.cluster(snap, svc.DefaultCluster, "  ")
		return e.err
	case svc.Consumers[q.CallerNamespace] == table:
		e.line("routes", "the consumer routes of namespace %s (they replace the producer routes for its callers)", q.CallerNamespace)
	default:
		e.line("routes", "the producer routes of the Service (no consumer route in %s)", q.CallerNamespace)
	}
	if !svc.L7(table) {
		e.line("mode", "TCP: connections are forwarded as bytes, rules match every connection")
	}
	req := &route.Request{Method: method, Path: target, Header: q.Header}
	verdicts, dec, err := table.Explain(req)
	e.verdicts(verdicts, dec)
	if err != nil {
		e.line("decision", "none: %v", answer(err))
		return e.err
	}
	e.rule(snap, dec.Rule)
	return e.err
}

// find resolves the URL's host and port to a Service port of the snapshot.
func find(snap *outbound.Snapshot, q Query) (netip.AddrPort, *outbound.Service, error) {
	if q.URL == nil || q.URL.Hostname() == "" {
		return netip.AddrPort{}, nil, errors.New("the URL needs a host: http://SERVICE[.NAMESPACE][:PORT]/PATH")
	}
	port := uint32(80)
	if q.URL.Scheme == "https" {
		port = 443
	}
	if ps := q.URL.Port(); ps != "" {
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return netip.AddrPort{}, nil, fmt.Errorf("bad port %q", ps)
		}
		port = uint32(n)
	}
	host := q.URL.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		if s, ok := snap.Services[ap]; ok {
			return ap, s, nil
		}
		return ap, nil, fmt.Errorf("%w at %s in node %s's policy", ErrNoService, ap, q.Node)
	}
	name, ns, _ := strings.Cut(host, ".")
	if ns == "" {
		ns = q.CallerNamespace
	}
	ns, _, _ = strings.Cut(ns, ".") // NS.svc[.DOMAIN]
	var keys []netip.AddrPort
	for ap, s := range snap.Services {
		if s.Namespace == ns && s.Service == name && s.Port == port {
			keys = append(keys, ap)
		}
	}
	if len(keys) == 0 {
		return netip.AddrPort{}, nil, fmt.Errorf("%w %s/%s:%d in node %s's policy (is the Service's namespace enrolled, does it have the port?)", ErrNoService, ns, name, port, q.Node)
	}
	slices.SortFunc(keys, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return keys[0], snap.Services[keys[0]], nil
}

// answer says what the proxy answers when no rule decides.
func answer(err error) string {
	switch {
	case errors.Is(err, route.ErrNoRoute):
		return "no rule matches: the proxy answers 404"
	case errors.Is(err, route.ErrURITooLong):
		return err.Error() + ": the proxy answers 414"
	case errors.Is(err, route.ErrHeaderTooLong):
		return err.Error() + ": the proxy answers 431"
	}
	return err.Error()
}

func protocol(p weftv1.Protocol) string {
	s := strings.TrimPrefix(p.String(), "PROTOCOL_")
	if s == "UNSPECIFIED" {
		return "TCP"
	}
	return s
}
