package outbound

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"testing"
)

// TestAppendRequestIsRequestWrite compares appendRequest with what
// outRequest's Write sends, on requests built from random parts.
func TestAppendRequestIsRequestWrite(t *testing.T) {
	methods := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"}
	hosts := []string{"web", "web.ns.svc.cluster.local:8080", "10.0.0.1", "[fd00::1]:80", "bücher.example", "a b", "x/y", ""}
	targets := []string{"/", "/a/b?c=d&e", "/%20x", "//double", "/ctl\x01", "/" + string(bytes.Repeat([]byte("p"), 300))}
	names := []string{"Accept", "X-Canary", "Cookie", "X-Empty", "Bad Name", "Connection", "Te", "Content-Type", "X-Multi"}
	values := []string{"a", "", "  padded  ", "multi\r\nline", "tab\there", "ünï"}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	checked, fallback := 0, 0
	for i := range 20000 {
		h := http.Header{}
		for range r.IntN(6) {
			k := pick(names)
			h[k] = append(h[k], pick(values))
		}
		switch r.IntN(3) {
		case 0:
			h["User-Agent"] = []string{""}
		case 1:
			h["User-Agent"] = []string{pick(values)}
		}
		var body []byte
		if r.IntN(2) == 0 {
			body = bytes.Repeat([]byte{'b'}, 1+r.IntN(100))
		}
		method, host, target := pick(methods), pick(hosts), pick(targets)
		got, ok := appendRequest(nil, method, host, target, h, body)
		if !ok {
			fallback++
			continue
		}
		rq := &request{hasBody: len(body) > 0, body: body}
		req := &http.Request{Method: method, Host: host, Header: h, ContentLength: int64(len(body))}
		ep := &Endpoint{}
		var want bytes.Buffer
		if err := outRequest(rq, req, ep, target).Write(&want); err != nil {
			t.Fatalf("case %d: Request.Write: %v (appendRequest took it)", i, err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("case %d (%s %s %q):\n got %q\nwant %q", i, method, host, target, got, want.Bytes())
		}
		checked++
	}
	if checked < 5000 || fallback < 1000 {
		t.Fatalf("checked %d requests and left %d to Request.Write: the cases do not cover both", checked, fallback)
	}
}
