package metrics

import "github.com/prometheus/client_golang/prometheus"

// Agent holds the metrics of the agent's policy and redirect.
type Agent struct {
	version  prometheus.Gauge
	applies  prometheus.Counter
	nacks    prometheus.Counter
	enrolled prometheus.Gauge
	reg      prometheus.Registerer
}

// NewAgent registers the agent's policy and redirect metrics on reg.
func NewAgent(reg prometheus.Registerer) *Agent {
	m := &Agent{
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_policy_version",
			Help: "Version of the node policy in force (the last one applied and ACKed; 0: none yet).",
		}),
		applies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_policy_applies_total",
			Help: "Node policies applied (proxy, identities and redirect maps) and ACKed to the controller.",
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_policy_nacks_total",
			Help: "Node policies refused (NACKed): the previous one stayed in force.",
		}),
		enrolled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_enrolled_pods",
			Help: "Pods of this node whose connections the redirect sends through the node proxy.",
		}),
	}
	m.reg = reg
	reg.MustRegister(m.version, m.applies, m.nacks, m.enrolled)
	return m
}

// Applied records a policy version put in force.
func (m *Agent) Applied(version uint64) {
	if m == nil {
		return
	}
	m.applies.Inc()
	m.version.Set(float64(version))
}

// Refused records a NACKed policy.
func (m *Agent) Refused() {
	if m == nil {
		return
	}
	m.nacks.Inc()
}

// Enrolled sets the number of enrolled pods.
func (m *Agent) Enrolled(n int) {
	if m == nil {
		return
	}
	m.enrolled.Set(float64(n))
}
