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
		out := outRequest(rq, req, ep, target)
		if err := out.Write(&want); err != nil {
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

// TestChunkDecoder feeds chunked bodies a few bytes at a time and whole,
// and checks the data, the trailers and where the body ends.
func TestChunkDecoder(t *testing.T) {
	body := "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t1\r\nX-Other:  t2 \r\n\r\nNEXT"
	for _, step := range []int{1, 2, 3, 7, len(body)} {
		d := &chunkDecoder{}
		var data []byte
		in := []byte{}
		done := false
		for off := 0; off < len(body) && !done; off += step {
			in = append(in, body[off:min(off+step, len(body))]...)
			n, end, err := d.feed(in, func(p []byte) error { data = append(data, p...); return nil })
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			in = in[n:]
			done = end
		}
		if !done || string(data) != "hello world" || string(in) != "NEXT"[:len(in)] {
			t.Fatalf("step %d: done %v data %q left %q", step, done, data, in)
		}
		if d.trailer.Get("X-Trailer") != "t1" || d.trailer.Get("X-Other") != "t2" {
			t.Fatalf("step %d: trailers %v", step, d.trailer)
		}
	}
	for _, bad := range []string{"zz\r\n", "5\r\nhelloXX", "0\r\nno colon\r\n\r\n", string(bytes.Repeat([]byte("1"), maxChunkLine+1))} {
		d := &chunkDecoder{}
		if _, _, err := d.feed([]byte(bad), func([]byte) error { return nil }); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
