// Package metrics is the agent's Prometheus metrics: what the node proxy
// counts where it decides (source side: route, backend, answer), what the
// destination side accepts and refuses, and the state of the policy and the
// redirect. README.md, "Metrics", lists them with their labels and what
// they cost.
//
// A nil *Proxy or *Agent records nothing (metrics off): the proxy calls
// them unconditionally.
//
// Labels are bounded by design: callers are named by their owning workload
// (weftv1.Workload.workload, a Deployment, StatefulSet...), never by pod
// name; destinations by Service, route and backend; answers by status code.
// No path, host, header value or pod name is ever a label value.
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-mesh/weft/agent/proxy/limits"
)

// Label names.
const (
	LabelSourceNamespace = "source_namespace"
	LabelSourceWorkload  = "source_workload"
	LabelDestNamespace   = "destination_namespace"
	LabelDestService     = "destination_service"
	LabelRoute           = "route"
	LabelBackend         = "backend"
	LabelCode            = "code"
	LabelGRPCStatus      = "grpc_status"
	LabelDirection       = "direction"
	LabelResult          = "result"
	LabelReason          = "reason"
	LabelPolicy          = "policy"
	LabelLevel           = "level"
)

// Values of LabelDirection and LabelResult.
const (
	// DirectionSent: bytes from the client towards the backend.
	DirectionSent = "sent"
	// DirectionReceived: bytes from the backend back to the client.
	DirectionReceived = "received"
	// ResultAccepted: an inbound tunnel connection that completed its
	// handshake (the refused ones carry their limits.Reason).
	ResultAccepted = "accepted"
)

// DurationBuckets are the request duration histogram's upper bounds in
// seconds: a loopback hop takes well under a millisecond, a slow backend
// seconds.
var DurationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Peer names both ends of a request or connection, as labels: the caller
// (namespace and owning workload) and the Service it called, the route
// that matched (namespace/name, empty when none applied) and the backend
// (cluster: "namespace/service:port") it went to.
type Peer struct {
	SourceNamespace, SourceWorkload string
	DestNamespace, DestService      string
	Route, Backend                  string
}

// Proxy holds the node proxy's metrics.
type Proxy struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	tcpConns   *prometheus.CounterVec
	tcpBytes   *prometheus.CounterVec
	inbound    *prometheus.CounterVec
	handshake  *prometheus.CounterVec
	redirected *prometheus.CounterVec
	handoffs   *prometheus.CounterVec
	authz      *prometheus.CounterVec
}

// Authorization levels (label level of weft_authz_refused_total).
const (
	LevelNetwork     = "network"     // a connection, refused before a byte reached the pod
	LevelApplication = "application" // one request, answered 403 / PERMISSION_DENIED
)

// NewProxy registers the node proxy's metrics on reg; refusals (the
// proxy's limits.Refusals, may be nil) are exported as
// weft_proxy_refusals_total when they are scraped.
func NewProxy(reg prometheus.Registerer, refusals *limits.Refusals) *Proxy {
	peer := []string{LabelSourceNamespace, LabelSourceWorkload, LabelDestNamespace, LabelDestService, LabelRoute, LabelBackend}
	m := &Proxy{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_http_requests_total",
			Help: "L7 requests (HTTP/1.1, h2c, gRPC) answered to callers on this node, counted at the source node once the answer is done: by caller, Service, route, chosen backend, HTTP status and gRPC status (empty for non-gRPC).",
		}, append(append([]string{}, peer...), LabelCode, LabelGRPCStatus)),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weft_http_request_duration_seconds",
			Help:    "Time from a request's header to the end of its answer (body and trailers included), at the source node.",
			Buckets: DurationBuckets,
		}, peer),
		tcpConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_tcp_connections_total",
			Help: "L4 (TCP) connections of callers on this node forwarded as bytes, counted when they close.",
		}, peer),
		tcpBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_tcp_bytes_total",
			Help: "Bytes of L4 connections: sent (client to backend) and received (backend to client), counted when they close.",
		}, append(append([]string{}, peer...), LabelDirection)),
		inbound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_inbound_connections_total",
			Help: "mTLS tunnel connections to this node's inbound listener: accepted, or refused with the reason.",
		}, []string{LabelResult}),
		handshake: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_tls_handshake_failures_total",
			Help: "mTLS handshakes of the inbound listener that failed, by reason.",
		}, []string{LabelReason}),
		redirected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_redirected_connections_total",
			Help: "Connections the redirect brought to the capture listener: l7, l4, or why they were closed at once.",
		}, []string{LabelResult}),
	}
	m.authz = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_authz_refused_total",
		Help: "Connections (level network) and requests (level application) refused by authorization at this destination node, by deciding AuthorizationPolicy (namespace/name; empty when no ALLOW policy's rule matched).",
	}, []string{LabelPolicy, LabelLevel})
	m.handoffs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_outbound_handoffs_total",
		Help: "HTTP/1.1 client connections the outbound's event loops handed to a goroutine per connection, by what the request needed.",
	}, []string{LabelReason})
	reg.MustRegister(m.requests, m.duration, m.tcpConns, m.tcpBytes, m.inbound, m.handshake, m.redirected, m.authz, m.handoffs)
	if refusals != nil {
		reg.MustRegister(refusalCollector{refusals})
	}
	return m
}

// codes holds the label values of the usual HTTP statuses, so that
// counting a request formats nothing.
var codes = func() [600]string {
	var c [600]string
	for i := 100; i < len(c); i++ {
		c[i] = strconv.Itoa(i)
	}
	return c
}()

func codeLabel(code int) string {
	if code >= 100 && code < len(codes) {
		return codes[code]
	}
	return strconv.Itoa(code)
}

// HTTPRequest counts one answered request and observes its duration.
func (m *Proxy) HTTPRequest(p *Peer, code int, grpcStatus string, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(p.SourceNamespace, p.SourceWorkload, p.DestNamespace, p.DestService, p.Route, p.Backend, codeLabel(code), grpcStatus).Inc()
	m.duration.WithLabelValues(p.SourceNamespace, p.SourceWorkload, p.DestNamespace, p.DestService, p.Route, p.Backend).Observe(d.Seconds())
}

// TCPConnection counts one closed L4 connection and its bytes.
func (m *Proxy) TCPConnection(p *Peer, sent, received int64) {
	if m == nil {
		return
	}
	m.tcpConns.WithLabelValues(p.SourceNamespace, p.SourceWorkload, p.DestNamespace, p.DestService, p.Route, p.Backend).Inc()
	m.tcpBytes.WithLabelValues(p.SourceNamespace, p.SourceWorkload, p.DestNamespace, p.DestService, p.Route, p.Backend, DirectionSent).Add(float64(sent))
	m.tcpBytes.WithLabelValues(p.SourceNamespace, p.SourceWorkload, p.DestNamespace, p.DestService, p.Route, p.Backend, DirectionReceived).Add(float64(received))
}

// InboundAccepted counts a tunnel connection whose handshake succeeded.
func (m *Proxy) InboundAccepted() {
	if m == nil {
		return
	}
	m.inbound.WithLabelValues(ResultAccepted).Inc()
}

// InboundRefused counts a tunnel connection refused during or right after
// its handshake, and the handshake failure.
func (m *Proxy) InboundRefused(r limits.Reason) {
	if m == nil {
		return
	}
	m.inbound.WithLabelValues(r.String()).Inc()
	m.handshake.WithLabelValues(r.String()).Inc()
}

// AuthzRefused counts a connection or request authorization refused, by
// the deciding policy ("" when no ALLOW policy's rule matched).
func (m *Proxy) AuthzRefused(policy, level string) {
	if m == nil {
		return
	}
	m.authz.WithLabelValues(policy, level).Inc()
}

// Redirected counts a connection the redirect brought to the capture
// listener, by what became of it.
func (m *Proxy) Redirected(result string) {
	if m == nil {
		return
	}
	m.redirected.WithLabelValues(result).Inc()
}

// refusalCollector exports limits.Refusals' counters as they are when
// scraped: the proxy counts refusals once, in limits, and pays nothing
// more per refusal for the metric.
type refusalCollector struct{ r *limits.Refusals }

var refusalDesc = prometheus.NewDesc("weft_proxy_refusals_total",
	"Requests and connections the node proxy refused or answered itself, by reason (both sides: handshakes, tunnel streams, captured clients).",
	[]string{LabelReason}, nil)

func (c refusalCollector) Describe(ch chan<- *prometheus.Desc) { ch <- refusalDesc }

func (c refusalCollector) Collect(ch chan<- prometheus.Metric) {
	for _, reason := range limits.Reasons() {
		ch <- prometheus.MustNewConstMetric(refusalDesc, prometheus.CounterValue, float64(c.r.Count(reason)), reason.String())
	}
}

// HandedOff counts an HTTP/1.1 connection an outbound event loop handed
// to the goroutine server, by the reason (the Handoff* values).
func (m *Proxy) HandedOff(reason string) {
	if m == nil {
		return
	}
	m.handoffs.WithLabelValues(reason).Inc()
}

// Values of weft_outbound_handoffs_total's reason: what the request at
// which a loop handed its connection over needed.
const (
	// HandoffProtocol: HTTP/2 prior knowledge, or not an HTTP/1 request
	// line the loop reads.
	HandoffProtocol = "protocol"
	// HandoffRefused: a header the server answers itself (malformed, too
	// large, over the pod's buffer budget).
	HandoffRefused = "refused"
	// HandoffUpgrade: a protocol upgrade (WebSocket...), or Expect.
	HandoffUpgrade = "upgrade"
	// HandoffBody: a chunked request body, or one over 64 KiB.
	HandoffBody = "body"
	// HandoffRoute: the rule has a retry policy or a timeout.
	HandoffRoute = "route"
	// HandoffBackend: an h2c, gRPC or plaintext (not meshed) backend.
	HandoffBackend = "backend"
)

// Values of weft_redirected_connections_total's result.
const (
	// RedirectL7: served as HTTP (HTTP/1.1, h2c, gRPC).
	RedirectL7 = "l7"
	// RedirectL4: forwarded as bytes.
	RedirectL4 = "l4"
	// RedirectNoRecord: no redirect record for the connection (closed: the
	// capture port is not an open proxy).
	RedirectNoRecord = "no_record"
	// RedirectUnknownCaller: the record's netns is no enrolled pod's.
	RedirectUnknownCaller = "unknown_caller"
	// RedirectNoIdentity: the caller has no valid SPIFFE ID.
	RedirectNoIdentity = "no_identity"
	// RedirectPodConnections: over the caller pod's connection limit.
	RedirectPodConnections = "pod_connections"
	// RedirectNoService: the original destination is no meshed Service
	// port (any more).
	RedirectNoService = "no_service"
)
