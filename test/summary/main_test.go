package main

import (
	"io"
	"strings"
	"testing"
)

func TestSummarizeCounts(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestA"}`,
		`{"Action":"pass","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"boom\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestB"}`,
		`{"Action":"output","Package":"p","Test":"TestPrivilegedX","Output":"    x_test.go:9: needs root\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestPrivilegedX"}`,
		`{"Action":"pass","Package":"q","Test":"TestPrivilegedY"}`,
		`{"Action":"pass","Package":"q","Test":"TestPrivilegedY/sub"}`,
		`{"Action":"fail","Package":"q"}`,
	}, "\n")
	r, err := summarize(strings.NewReader(in), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r.passed != 3 || r.failed != 1 || r.skipped != 1 || r.privileged != 1 {
		t.Fatalf("got passed=%d failed=%d skipped=%d privileged=%d", r.passed, r.failed, r.skipped, r.privileged)
	}
	if len(r.failedPkgs) != 1 || r.failedPkgs[0] != "q" {
		t.Fatalf("failed packages = %v", r.failedPkgs)
	}
	if len(r.skips) != 1 || !strings.Contains(r.skips[0], "needs root") {
		t.Fatalf("skip reasons = %v", r.skips)
	}
}
