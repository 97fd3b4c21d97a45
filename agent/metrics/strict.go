package metrics

import "github.com/prometheus/client_golang/prometheus"

// Values of weft_strict_refused_total's reason.
const (
	// StrictConnect: a plaintext connect from a pod of this node to a
	// strict-mTLS pod, refused (EPERM) by the datapath.
	StrictConnect = "connect"
	// StrictSYN: a SYN from another host to a strict-mTLS pod, dropped.
	StrictSYN = "syn"
	// StrictEgress: a SYN from a pod of this node that NAT (a Service)
	// sent to a strict-mTLS pod, dropped.
	StrictEgress = "egress"
)

// StrictCounts are the datapath's strict-mTLS refusal counters.
type StrictCounts struct{ Connect, SYN, Egress uint64 }

// StrictReader reads the datapath's strict-mTLS refusal counters.
type StrictReader func() (StrictCounts, error)

var strictDesc = prometheus.NewDesc("weft_strict_refused_total",
	"Plaintext connections to strict-mTLS pods of this node refused by the datapath, by reason (connect: from a pod of this node, refused at connect; syn: from another host, SYN dropped; egress: from a pod of this node through a Service, SYN dropped). Counted in BPF; kept across agent restarts.",
	[]string{LabelReason}, nil)

// strictCollector exports the BPF counters as they are when scraped.
type strictCollector struct{ read StrictReader }

func (c strictCollector) Describe(ch chan<- *prometheus.Desc) { ch <- strictDesc }

func (c strictCollector) Collect(ch chan<- prometheus.Metric) {
	n, err := c.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(strictDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(strictDesc, prometheus.CounterValue, float64(n.Connect), StrictConnect)
	ch <- prometheus.MustNewConstMetric(strictDesc, prometheus.CounterValue, float64(n.SYN), StrictSYN)
	ch <- prometheus.MustNewConstMetric(strictDesc, prometheus.CounterValue, float64(n.Egress), StrictEgress)
}

// Strict exports the datapath's strict-mTLS refusal counters through read
// (called at each scrape). A nil Agent does nothing.
func (m *Agent) Strict(read StrictReader) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(strictCollector{read})
}
