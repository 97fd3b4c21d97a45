package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// TestAuthzPolicyTransitionLosesNoRequest: callers keep sending GETs, each
// on a fresh connection, while an application-level policy is applied and
// removed again. The destination then closes the streams it had spliced
// ("now decided per request"), some with a request in flight: the source
// must answer every GET (retrying the ones whose kept stream was cut before
// any answer reached the client), never close a client unanswered.
func TestAuthzPolicyTransitionLosesNoRequest(t *testing.T) {
	e := newEnv(t)
	ep := e.httpPod("web", "web")
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	e.service("web", "web", "10.96.0.41", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	e.apply()
	caller := e.caller("app")
	deny := []*weftv1.AuthzPolicy{{Name: "web/no-admin-writes", Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY, Application: true,
		Workloads: []string{ep.Pod},
		Rules: []*weftv1.AuthzRule{{Sources: []*weftv1.AuthzSource{{Namespace: "app"}},
			Http: []*weftv1.HTTPMatch{{Method: "POST", Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: "/admin"}}}}}}}
	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				tr := &http.Transport{DisableKeepAlives: true, DialContext: func(context.Context, string, string) (net.Conn, error) {
					return e.dialErr(caller, "10.96.0.41:80")
				}}
				c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
				sent.Add(1)
				resp, err := c.Get("http://10.96.0.41/")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = &statusErr{resp.StatusCode}
					}
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	for i := range 20 {
		time.Sleep(30 * time.Millisecond)
		if i%2 == 0 {
			e.pol.Authz = deny
		} else {
			e.pol.Authz = nil
		}
		e.apply()
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d GETs failed across 20 policy changes: %v", n, sent.Load(), errs[:min(len(errs), 5)])
	}
	t.Logf("%d GETs, none failed", sent.Load())
}

type statusErr struct{ code int }

func (e *statusErr) Error() string { return http.StatusText(e.code) }
