package main

import (
	"net/http"
	"testing"
)

func TestParseExplain(t *testing.T) {
	e, err := parseExplain([]string{"--from", "client.faces", "color.faces/x?y=1", "-H", "traffic: test", "--method", "post", "-H", "X-A:b"})
	if err != nil {
		t.Fatal(err)
	}
	if e.pod != "client" || e.namespace != "faces" {
		t.Errorf("caller %s.%s", e.pod, e.namespace)
	}
	if got := e.q.URL.String(); got != "http://color.faces/x?y=1" {
		t.Errorf("url %s", got)
	}
	want := http.Header{"Traffic": {"test"}, "X-A": {"b"}}
	if len(e.q.Header) != 2 || e.q.Header.Get("Traffic") != want.Get("Traffic") || e.q.Header.Get("X-A") != "b" {
		t.Errorf("headers %v", e.q.Header)
	}
	if e.q.Method != "POST" {
		t.Errorf("method %s", e.q.Method)
	}
	for _, bad := range [][]string{
		{"http://a/"},                         // no --from
		{"--from", "p"},                       // no URL
		{"--from", "p", "a", "b"},             // two URLs
		{"--from", "p", "https://a/"},         // not plaintext
		{"--from", "p", "a", "-H", "nocolon"}, // bad header
	} {
		if _, err := parseExplain(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	e, err = parseExplain([]string{"--from", "p", "a"})
	if err != nil || e.namespace != "default" || e.q.Method != "GET" {
		t.Errorf("defaults: %+v %v", e, err)
	}
}
