// Package metrics is the controller's Prometheus metrics: how long a
// resolution takes, how long a pushed policy takes to be ACKed by each
// node's agent, how many agents are connected, NACKs, SVIDs issued and
// refused, and whether this replica leads. README.md, "Metrics", lists
// them.
//
// A nil *Controller records nothing: the controller's parts call it
// unconditionally.
package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Label names and values.
const (
	LabelResult = "result"
	LabelReason = "reason"
	LabelNode   = "node"
	LabelState  = "state"

	ResultACK  = "ack"
	ResultNACK = "nack"
)

// Buckets in seconds: a resolution of a small cluster takes a
// millisecond, of 10k Services a second; an ACK comes within
// milliseconds on a healthy node and seconds on a loaded one.
var (
	ResolveBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	PushBuckets    = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

// NodeState is what the push server knows of one node, for the per-node
// version gauges.
type NodeState struct {
	Node                  string
	Version, AckedVersion uint64
	Streams               int
}

// Controller holds the controller's metrics.
type Controller struct {
	resolve    prometheus.Histogram
	push       *prometheus.HistogramVec
	pushByNode *prometheus.GaugeVec
	nacks      prometheus.Counter
	issued     prometheus.Counter
	refused    *prometheus.CounterVec
	leader     prometheus.Gauge
}

// New registers the controller's metrics on reg. nodes, when set, is read
// at each scrape for the connected agents and the per-node versions.
func New(reg prometheus.Registerer, nodes func() []NodeState) *Controller {
	m := &Controller{
		resolve: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_controller_resolve_duration_seconds",
			Help:    "Time one resolution of the cluster's routes, Services and endpoints into per-node policy takes.",
			Buckets: ResolveBuckets,
		}),
		push: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weft_controller_push_ack_duration_seconds",
			Help:    "Time from sending a policy version on an agent's stream to its ACK (or NACK).",
			Buckets: PushBuckets,
		}, []string{LabelResult}),
		pushByNode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_controller_node_push_ack_seconds",
			Help: "Time the last policy version pushed to each node took until its agent ACKed or NACKed it.",
		}, []string{LabelNode}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_controller_policy_nacks_total",
			Help: "Policy versions agents and gateway data planes refused (NACKed).",
		}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_controller_svids_issued_total",
			Help: "Workload SVIDs the CA signed.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_controller_svids_refused_total",
			Help: "SVID requests the CA refused, by reason (the gRPC status code: unauthenticated, permission_denied, invalid_argument, unavailable...).",
		}, []string{LabelReason}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_controller_leader",
			Help: "1 while this replica holds the leader Lease (writes statuses, provisions Gateways), else 0.",
		}),
	}
	reg.MustRegister(m.resolve, m.push, m.pushByNode, m.nacks, m.issued, m.refused, m.leader)
	if nodes != nil {
		reg.MustRegister(nodeCollector{nodes})
	}
	return m
}

// Resolved observes one resolution's duration.
func (m *Controller) Resolved(d time.Duration) {
	if m == nil {
		return
	}
	m.resolve.Observe(d.Seconds())
}

// Answered records an agent's ACK (nack false) or NACK of a version sent
// d ago to node (a Gateway's data plane: gateway true, not per node).
func (m *Controller) Answered(node string, gateway, nack bool, d time.Duration) {
	if m == nil {
		return
	}
	res := ResultACK
	if nack {
		res = ResultNACK
		m.nacks.Inc()
	}
	if d < 0 {
		return // a version this stream never sent (resent before a restart)
	}
	m.push.WithLabelValues(res).Observe(d.Seconds())
	if !gateway {
		m.pushByNode.WithLabelValues(node).Set(d.Seconds())
	}
}

// Forget drops a node's gauge once the node is gone.
func (m *Controller) Forget(node string) {
	if m == nil {
		return
	}
	m.pushByNode.DeleteLabelValues(node)
}

// Signed records one SVID request: issued when err is nil, else refused
// with err's gRPC code.
func (m *Controller) Signed(err error) {
	if m == nil {
		return
	}
	if err == nil {
		m.issued.Inc()
		return
	}
	m.refused.WithLabelValues(codeName(status.Code(err))).Inc()
}

// Leading records whether this replica leads.
func (m *Controller) Leading(leader bool) {
	if m == nil {
		return
	}
	v := 0.0
	if leader {
		v = 1
	}
	m.leader.Set(v)
}

// codeName is a gRPC code as a label value: "PermissionDenied" ->
// "permission_denied".
func codeName(c codes.Code) string {
	s := c.String()
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// nodeCollector reads the push server's state at each scrape.
type nodeCollector struct{ nodes func() []NodeState }

var (
	connectedDesc = prometheus.NewDesc("weft_controller_connected_agents",
		"Agent policy streams connected to this replica.", nil, nil)
	versionDesc = prometheus.NewDesc("weft_controller_node_policy_version",
		"Per node: the newest policy version resolved (state=current) and the newest its agent ACKed (state=acked); they differ while a push is in flight or refused.",
		[]string{LabelNode, LabelState}, nil)
)

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connectedDesc
	ch <- versionDesc
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	streams := 0
	for _, n := range c.nodes() {
		streams += n.Streams
		ch <- prometheus.MustNewConstMetric(versionDesc, prometheus.GaugeValue, float64(n.Version), n.Node, "current")
		ch <- prometheus.MustNewConstMetric(versionDesc, prometheus.GaugeValue, float64(n.AckedVersion), n.Node, "acked")
	}
	ch <- prometheus.MustNewConstMetric(connectedDesc, prometheus.GaugeValue, float64(streams))
}
