package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCodeName(t *testing.T) {
	for c, want := range map[codes.Code]string{
		codes.PermissionDenied: "permission_denied", codes.Unauthenticated: "unauthenticated",
		codes.InvalidArgument: "invalid_argument", codes.Unavailable: "unavailable", codes.Unknown: "unknown",
	} {
		if got := codeName(c); got != want {
			t.Errorf("codeName(%v) = %q, want %q", c, got, want)
		}
	}
}

// TestControllerMetrics: the per-node gauges follow the push state read at
// scrape time, answers and SVIDs are counted, a nil Controller records
// nothing, and the names pass promlint.
func TestControllerMetrics(t *testing.T) {
	var none *Controller
	none.Resolved(time.Second)
	none.Answered("n", false, true, time.Second)
	none.Signed(nil)
	none.Leading(true)
	none.Forget("n")

	reg := prometheus.NewRegistry()
	nodes := []NodeState{{Node: "n1", Version: 7, AckedVersion: 6, Streams: 1}, {Node: "n2", Version: 7, AckedVersion: 7, Streams: 2}}
	m := New(reg, func() []NodeState { return nodes })
	m.Resolved(3 * time.Millisecond)
	m.Answered("n1", false, false, 20*time.Millisecond)
	m.Answered("n1", false, true, 10*time.Millisecond)
	m.Answered("gw/a", true, false, -1) // a version this stream never sent: counted nowhere but NACKs
	m.Signed(nil)
	m.Signed(status.Error(codes.PermissionDenied, "no"))
	m.Signed(errors.New("not a status"))
	m.Leading(true)
	want := `
# HELP weft_controller_connected_agents Agent policy streams connected to this replica.
# TYPE weft_controller_connected_agents gauge
weft_controller_connected_agents 3
# HELP weft_controller_leader 1 while this replica holds the leader Lease (writes statuses, provisions Gateways), else 0.
# TYPE weft_controller_leader gauge
weft_controller_leader 1
# HELP weft_controller_node_policy_version Per node: the newest policy version resolved (state=current) and the newest its agent ACKed (state=acked); they differ while a push is in flight or refused.
# TYPE weft_controller_node_policy_version gauge
weft_controller_node_policy_version{node="n1",state="acked"} 6
weft_controller_node_policy_version{node="n1",state="current"} 7
weft_controller_node_policy_version{node="n2",state="acked"} 7
weft_controller_node_policy_version{node="n2",state="current"} 7
# HELP weft_controller_node_push_ack_seconds Time the last policy version pushed to each node took until its agent ACKed or NACKed it.
# TYPE weft_controller_node_push_ack_seconds gauge
weft_controller_node_push_ack_seconds{node="n1"} 0.01
# HELP weft_controller_policy_nacks_total Policy versions agents and gateway data planes refused (NACKed).
# TYPE weft_controller_policy_nacks_total counter
weft_controller_policy_nacks_total 1
# HELP weft_controller_svids_issued_total Workload SVIDs the CA signed.
# TYPE weft_controller_svids_issued_total counter
weft_controller_svids_issued_total 1
# HELP weft_controller_svids_refused_total SVID requests the CA refused, by reason (the gRPC status code: unauthenticated, permission_denied, invalid_argument, unavailable...).
# TYPE weft_controller_svids_refused_total counter
weft_controller_svids_refused_total{reason="permission_denied"} 1
weft_controller_svids_refused_total{reason="unknown"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "weft_controller_connected_agents", "weft_controller_leader",
		"weft_controller_node_policy_version", "weft_controller_node_push_ack_seconds", "weft_controller_policy_nacks_total",
		"weft_controller_svids_issued_total", "weft_controller_svids_refused_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.push); n != 2 {
		t.Errorf("push latency series: %d, want ack and nack", n)
	}
	m.Forget("n1")
	if n := testutil.CollectAndCount(m.pushByNode); n != 0 {
		t.Errorf("%d per-node latency series after Forget", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}
