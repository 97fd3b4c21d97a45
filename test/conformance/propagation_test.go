package conformance

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/test/lab/labtest"
)

const propNS = "weft-propagation"

// TestPrivilegedRoutePropagation measures how long a new HTTPRoute takes to be in
// force on every node: a caller on each node sends requests one after the other
// while the route is created; the route is in force on a node from the first answer
// after which every answer carries the header the route adds. It asserts only that
// the route takes effect; the times are logged (timings never gate go test).
func TestPrivilegedRoutePropagation(t *testing.T) {
	labtest.Require(t, lab)
	install(t)
	c := newClient(t)
	kubectl(t, "apply", "--server-side", "--force-conflicts", "-f", "testdata/propagation.yaml")
	t.Cleanup(func() { _, _ = kubectlErr("delete", "namespace", propNS, "--wait=false", "--ignore-not-found") })
	kubectl(t, "-n", propNS, "rollout", "status", "deployment/server", "--timeout=180s")
	callers := []string{"caller-1", "caller-2"}
	for _, p := range callers {
		kubectl(t, "-n", propNS, "wait", "--for=condition=weft.dev/Enrolled", "pod/"+p, "--timeout=180s")
	}

	const rounds, count = 5, 1500
	var worst []time.Duration
	for r := 1; r <= rounds; r++ {
		path := fmt.Sprintf("/round-%d", r)
		type result struct {
			out string
			err error
		}
		res := make([]result, len(callers))
		var wg sync.WaitGroup
		for i, p := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				out, stderr, err := lab.Exec(ctx, propNS, p, "client", "http://server"+path, fmt.Sprintf("--count=%d", count))
				if err != nil {
					err = fmt.Errorf("%w: %s", err, stderr)
				}
				res[i] = result{out, err}
			}()
		}
		time.Sleep(time.Second)
		route := propagationRoute(r, path)
		if err := c.Create(context.Background(), route); err != nil {
			t.Fatal(err)
		}
		created := time.Now()
		wg.Wait()
		var roundWorst time.Duration
		var per []string
		for i, p := range callers {
			if res[i].err != nil {
				t.Fatalf("round %d caller %s: %v", r, p, res[i].err)
			}
			d, err := inForceAfter(res[i].out, fmt.Sprint(r), created)
			if err != nil {
				t.Fatalf("round %d caller %s: %v", r, p, err)
			}
			per = append(per, fmt.Sprintf("%s %s", p, d.Round(time.Millisecond)))
			roundWorst = max(roundWorst, d)
		}
		t.Logf("route %s in force after: %s", route.Name, strings.Join(per, ", "))
		worst = append(worst, roundWorst)
	}
	slices.Sort(worst)
	t.Logf("route propagation (create -> in force on every node), %d rounds: median %s, max %s",
		rounds, worst[len(worst)/2].Round(time.Millisecond), worst[len(worst)-1].Round(time.Millisecond))
}

func propagationRoute(round int, path string) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: propNS, Name: fmt.Sprintf("round-%d", round)},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
				Group: ptr.To(gwv1.Group("")), Kind: ptr.To(gwv1.Kind("Service")), Name: "server", Port: ptr.To(gwv1.PortNumber(80)),
			}}},
			Rules: []gwv1.HTTPRouteRule{{
				Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchExact), Value: ptr.To(path)}}},
				Filters: []gwv1.HTTPRouteFilter{{
					Type:                   gwv1.HTTPRouteFilterResponseHeaderModifier,
					ResponseHeaderModifier: &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: "X-Round", Value: fmt.Sprint(round)}}},
				}},
				BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
					Name: "server", Port: ptr.To(gwv1.PortNumber(80)),
				}}}},
			}},
		},
	}
}

// inForceAfter reads the client's blocks ("[i] Time=...", "[i] ResponseHeader=X-Round:v")
// and returns when, after created, the answers started to carry the header for good.
func inForceAfter(out, value string, created time.Time) (time.Duration, error) {
	blocks := strings.Split(strings.TrimSpace(out), "\n\n")
	first := -1
	var firstTime time.Time
	for i, b := range blocks {
		has := strings.Contains(b, "] ResponseHeader=X-Round:"+value+"\n") || strings.HasSuffix(b, "] ResponseHeader=X-Round:"+value)
		if !has {
			first = -1
			continue
		}
		if first >= 0 {
			continue
		}
		first = i
		for l := range strings.SplitSeq(b, "\n") {
			if _, v, ok := strings.Cut(l, "] Time="); ok {
				t, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					return 0, err
				}
				firstTime = t
			}
		}
	}
	if first < 0 {
		return 0, fmt.Errorf("route not in force during the %d requests (last block:\n%s)", len(blocks), blocks[len(blocks)-1])
	}
	if first == 0 {
		return 0, fmt.Errorf("route in force from the first request: the run started too late to measure")
	}
	return firstTime.Sub(created), nil
}
