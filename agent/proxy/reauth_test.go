package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
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
	deny := noAdminWrites(ep.Pod)
	ld := startRequests(8, func() error {
		tr := &http.Transport{DisableKeepAlives: true, DialContext: func(context.Context, string, string) (net.Conn, error) {
			return e.dialErr(caller, "10.96.0.41:80")
		}}
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, err := c.Get("http://10.96.0.41/")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return &statusErr{resp.StatusCode}
		}
		return nil
	})
	for i := range 20 {
		time.Sleep(30 * time.Millisecond)
		if i%2 == 0 {
			e.pol.Authz = deny
		} else {
			e.pol.Authz = nil
		}
		e.apply()
	}
	sent, failed, errs := ld.stop()
	if failed > 0 {
		t.Fatalf("%d of %d GETs failed across 20 policy changes: %v", failed, sent, errs)
	}
	t.Logf("%d GETs, none failed", sent)
}

// noAdminWrites is an Application-level policy that refuses the POSTs of
// namespace app under /admin on pod.
func noAdminWrites(pod string) []*weftv1.AuthzPolicy {
	return []*weftv1.AuthzPolicy{{Name: "web/no-admin-writes", Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY, Application: true,
		Workloads: []string{pod},
		Rules: []*weftv1.AuthzRule{{Sources: []*weftv1.AuthzSource{{Namespace: "app"}},
			Http: []*weftv1.HTTPMatch{{Method: "POST", Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: "/admin"}}}}}}}
}

type statusErr struct{ code int }

func (e *statusErr) Error() string { return http.StatusText(e.code) }

// TestAnswerEndedByThePod: pods that close their connection after (or
// within) an answer. A body that ends with the connection is passed on
// whole. An answer cut after its head, before any of it reached the client
// (a pod that crashed, or a policy change that cut a spliced stream
// between two reads), is sent once more when the request is a GET, and
// answered whole; a POST is not sent again (the pod may have acted on it):
// its client sees the connection close. None waits.
func TestAnswerEndedByThePod(t *testing.T) {
	const cut = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" // the body never comes
	for _, tc := range []struct {
		name, method string
		first        string // the pod's first answer, then it closes
		wantSent     int32
		wantOK       bool
	}{
		{"GET cut after the head", http.MethodGet, cut, 2, true},
		{"POST cut after the head", http.MethodPost, cut, 1, false},
		{"GET cut within the head", http.MethodGet, "HTTP/1.1 200 OK\r\nContent-Le", 2, true},
		{"GET body until the close", http.MethodGet, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			l, ep := e.pod("web", "web")
			var sent atomic.Int32
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						br := bufio.NewReader(c)
						for {
							req, err := http.ReadRequest(br)
							if err != nil {
								return
							}
							io.Copy(io.Discard, req.Body)
							if sent.Add(1) == 1 {
								c.Write([]byte(tc.first))
								return
							}
							c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
						}
					}()
				}
			}()
			e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
			e.service("web", "web", "10.96.0.42", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
			e.apply()
			caller := e.caller("app")
			tr := &http.Transport{DisableKeepAlives: true, DialContext: func(context.Context, string, string) (net.Conn, error) {
				return e.dialErr(caller, "10.96.0.42:80")
			}}
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			var body io.Reader // a GET carries none, a POST some
			if tc.method == http.MethodPost {
				body = strings.NewReader("x")
			}
			req, _ := http.NewRequest(tc.method, "http://10.96.0.42/", body)
			resp, err := c.Do(req)
			var got []byte
			if err == nil {
				got, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if tc.wantOK && (err != nil || resp.StatusCode != 200 || string(got) != "hello") {
				t.Fatalf("%v %q, want 200 hello", err, got)
			}
			if !tc.wantOK && (err == nil || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Timeout")) {
				t.Fatalf("%v, %q: want the connection closed at once", err, got)
			}
			if n := sent.Load(); n != tc.wantSent {
				t.Fatalf("the request reached the pod %d times, want %d", n, tc.wantSent)
			}
		})
	}
}

// TestAuthzPolicyTransitionLetsTheAnswerFinish: an Application-level policy
// arrives while a POST is being answered on a spliced stream (the pod takes
// its time). The stream is drained, not cut: the POST, which the source
// could not send again, is answered whole; the next requests on the same
// client connection are decided one by one (POST /admin refused with 403,
// GET answered); nothing reached the pod undecided.
func TestAuthzPolicyTransitionLetsTheAnswerFinish(t *testing.T) {
	e := newEnv(t)
	l, ep := e.pod("web", "web")
	var mu sync.Mutex
	var seen []string                 // requests the pod got
	arrived := make(chan struct{}, 1) // the POST is whole at the pod
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			time.Sleep(300 * time.Millisecond)
		}
		io.WriteString(w, "done "+r.Method+" "+r.URL.Path)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	e.service("web", "web", "10.96.0.43", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	e.apply()
	caller := e.caller("app")
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DialContext: func(context.Context, string, string) (net.Conn, error) {
		return e.dialErr(caller, "10.96.0.43:80")
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	do := func(method, path string) (int, string) {
		t.Helper()
		var body io.Reader
		if path == "/slow" { // the others carry none: a goroutine-per-connection source
			// sends a held request again only when it can replay it, and
			// it keeps a body only for a retry policy
			body = strings.NewReader("body")
		}
		req, _ := http.NewRequest(method, "http://10.96.0.43"+path, body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if code, _ := do("GET", "/warm"); code != 200 {
		t.Fatalf("GET before any policy: %d", code)
	}
	answered := make(chan string, 1)
	go func() {
		code, b := do("POST", "/slow")
		answered <- fmt.Sprint(code, " ", b)
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the POST never reached the pod")
	}
	e.pol.Authz = noAdminWrites(ep.Pod)
	e.apply()
	if got := <-answered; got != "200 done POST /slow" {
		t.Fatalf("the POST under way when the policy came: %q, want it answered whole", got)
	}
	if code, _ := do("POST", "/admin/users"); code != http.StatusForbidden {
		t.Fatalf("POST /admin after the policy: %d, want 403", code)
	}
	if code, b := do("GET", "/after"); code != 200 || b != "done GET /after" {
		t.Fatalf("GET after the policy: %d %q", code, b)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"GET /warm", "POST /slow", "GET /after"}; !slices.Equal(seen, want) {
		t.Fatalf("the pod got %v, want %v", seen, want)
	}
}

// TestAuthzPolicyTransitionBeforeTheFirstByte: a caller whose connection
// crosses the source node at L4 has its tunnel stream open at the pod's
// node, spliced, but sent nothing yet when an Application-level policy
// comes. The stream is then served request by request from its first byte,
// as a new one would be: its POST /admin is refused with 403, its GET
// answered, on the same connection, and the pod sees only the GET.
func TestAuthzPolicyTransitionBeforeTheFirstByte(t *testing.T) {
	e := newEnv(t)
	l, ep := e.pod("web", "web")
	var mu sync.Mutex
	var seen []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		io.WriteString(w, "done")
	})}
	accepted := make(chan struct{}, 1)
	go srv.Serve(notifyAccept{l, accepted})
	t.Cleanup(func() { srv.Close() })
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_TCP, ep)
	e.service("web", "web", "10.96.0.44", 80, weftv1.Protocol_PROTOCOL_TCP, "web/web:80")
	e.apply()
	c := e.dial(e.caller("app"), "10.96.0.44:80")
	defer c.Close()
	// the stream is spliced at the pod's node once the pod has its
	// connection (and the splice is tracked right after)
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the pod never got a connection")
	}
	time.Sleep(50 * time.Millisecond)
	e.pol.Authz = noAdminWrites(ep.Pod)
	e.apply()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for _, tc := range []struct {
		req  string
		want int
	}{
		{"POST /admin/users HTTP/1.1\r\nHost: web\r\nContent-Length: 0\r\n\r\n", http.StatusForbidden},
		{"GET /after HTTP/1.1\r\nHost: web\r\n\r\n", http.StatusOK},
	} {
		if _, err := io.WriteString(c, tc.req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", tc.req, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("%q answered %d, want %d", tc.req, resp.StatusCode, tc.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"GET /after"}; !slices.Equal(seen, want) {
		t.Fatalf("the pod got %v, want %v", seen, want)
	}
}

// notifyAccept says on ch when its listener accepted a connection.
type notifyAccept struct {
	net.Listener
	ch chan struct{}
}

func (l notifyAccept) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.ch <- struct{}{}:
		default:
		}
	}
	return c, err
}
