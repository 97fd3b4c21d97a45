package session_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/weft-mesh/weft/agent/proxy/route"
	"github.com/weft-mesh/weft/agent/proxy/session"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// GEP-1619 "Traffic Splitting with Session Persistence": weights choose the
// backend on every request; persistence pins the endpoint inside it. With
// one inline sessionPersistence on a 70/30 rule, a client that keeps the
// cookie it is given (as a browser or a Go cookie jar does) sees exactly
// the weights, and always the same endpoint within each backend.
func TestWeightedSplitWithInlineCookiePersistence(t *testing.T) {
	rule := &weftv1.Rule{
		Route: "ns/split", RouteKind: weftv1.RouteKind_ROUTE_KIND_HTTP,
		Backends: []*weftv1.BackendRef{{Cluster: "ns/v1:80", Weight: 70}, {Cluster: "ns/v2:80", Weight: 30}},
		Session:  &weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_COOKIE, Name: "split-route-cookie"},
	}
	tb, err := route.Compile(&weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP, Rules: []*weftv1.Rule{rule}, Matches: []*weftv1.Match{{Rule: 0}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := session.New(session.Config{Keys: [][]byte{bytes.Repeat([]byte{3}, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	clusters := map[string][]*weftv1.Endpoint{
		"ns/v1:80": {{Ip: "10.244.1.1", Port: 80, Pod: "ns/v1-a", Ready: true}, {Ip: "10.244.1.2", Port: 80, Pod: "ns/v1-b", Ready: true}},
		"ns/v2:80": {{Ip: "10.244.2.1", Port: 80, Pod: "ns/v2-a", Ready: true}, {Ip: "10.244.2.2", Port: 80, Pod: "ns/v2-b", Ready: true}},
	}
	i := 0
	rnd := func(n int) int { i++; return (i - 1) % n } // exact shares per 100 requests
	picks := map[string]int{}
	rr := map[string]int{}
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	var jar string // the client's cookie value
	perBackend := map[string]int{}
	endpoints := map[string]map[string]bool{}
	for range 1000 {
		h := http.Header{}
		if jar != "" {
			h.Set("Cookie", "split-route-cookie="+jar)
		}
		d, ok := tb.Select(&route.Request{Method: "GET", Path: "/", Header: h})
		if !ok {
			t.Fatal("no match")
		}
		p, err := d.Process(&route.HTTPRequest{Path: "/", Method: "GET", Header: h}, rnd)
		if err != nil {
			t.Fatal(err)
		}
		c := p.Backend.Cluster
		res := m.Resolve(p.Backend.Session, c, clusters[c], h, now, func(eps []*weftv1.Endpoint) *weftv1.Endpoint {
			picks[c]++
			rr[c]++
			return eps[rr[c]%len(eps)]
		})
		if res.SetCookie != nil {
			jar = res.SetCookie.Value
		}
		perBackend[c]++
		if endpoints[c] == nil {
			endpoints[c] = map[string]bool{}
		}
		endpoints[c][res.Endpoint.GetPod()] = true
	}
	if perBackend["ns/v1:80"] != 700 || perBackend["ns/v2:80"] != 300 {
		t.Fatalf("split %v, want exactly 700/300", perBackend)
	}
	if picks["ns/v1:80"] != 1 || picks["ns/v2:80"] != 1 {
		t.Fatalf("load-balancer picks %v, want one per backend (the rest pinned)", picks)
	}
	if len(endpoints["ns/v1:80"]) != 1 || len(endpoints["ns/v2:80"]) != 1 {
		t.Fatalf("endpoints per backend %v, want one each", endpoints)
	}
}
