package h2c

import (
	"net/http"
	"reflect"
	"testing"

	"golang.org/x/net/http2/hpack"
)

func TestHeaderOf(t *testing.T) {
	fields := func(kv ...string) []hpack.HeaderField {
		var fs []hpack.HeaderField
		for i := 0; i < len(kv); i += 2 {
			fs = append(fs, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return fs
	}
	h, ok := headerOf(fields(":method", "GET", "x-a", "1", "accept", "*/*", "x-a", "2", "cookie", "a=1", "x-b", "3", "cookie", "b=2", "x-a", "4"))
	want := http.Header{"X-A": {"1", "2", "4"}, "Accept": {"*/*"}, "X-B": {"3"}, "Cookie": {"a=1; b=2"}}
	if !ok || !reflect.DeepEqual(h, want) {
		t.Fatalf("headerOf = %v %v, want %v", h, ok, want)
	}
	// a key's values never share an array with another key's: appending
	// to one leaves the others as they were
	h["Accept"] = append(h["Accept"], "text/html")
	if got := h["X-B"]; len(got) != 1 || got[0] != "3" {
		t.Fatalf("X-B after appending to Accept: %q", got)
	}
	for _, fs := range [][]hpack.HeaderField{fields("connection", "close"), fields("te", "gzip"), fields("transfer-encoding", "chunked")} {
		if _, ok := headerOf(fs); ok {
			t.Errorf("headerOf(%v) accepted a connection-specific field", fs)
		}
	}
	if h, ok := headerOf(fields("te", "trailers")); !ok || h.Get("Te") != "trailers" {
		t.Errorf("te: trailers: %v %v", h, ok)
	}
}
