package main

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller/resolve"
)

// TestParentRows: a route's parent statuses from Weft's mesh and gateway
// controllers are both shown (Services as svc/, Gateways as gw/), another
// controller's are not.
func TestParentRows(t *testing.T) {
	svc, gw := gwv1.Kind("Service"), gwv1.Kind("Gateway")
	port := gwv1.PortNumber(80)
	infra := gwv1.Namespace("infra")
	cond := func(typ, reason string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: reason, ObservedGeneration: 2}
	}
	parents := []gwv1.RouteParentStatus{
		{ControllerName: resolve.ControllerName, ParentRef: gwv1.ParentReference{Kind: &svc, Name: "color", Port: &port},
			Conditions: []metav1.Condition{cond("Accepted", "Accepted"), cond("ResolvedRefs", "ResolvedRefs")}},
		{ControllerName: mesh.GatewayControllerName, ParentRef: gwv1.ParentReference{Kind: &gw, Namespace: &infra, Name: "edge"},
			Conditions: []metav1.Condition{cond("Accepted", "Accepted")}},
		{ControllerName: "example.com/other", ParentRef: gwv1.ParentReference{Name: "theirs"}},
	}
	rows := parentRows("HTTPRoute", metav1.ObjectMeta{Namespace: "faces", Name: "r", Generation: 2}, parents)
	if len(rows) != 2 || rows[0].parent != "svc/faces/color:80" || rows[1].parent != "gw/infra/edge" || rows[1].accepted != "True/Accepted" {
		t.Fatalf("rows %+v", rows)
	}
}
