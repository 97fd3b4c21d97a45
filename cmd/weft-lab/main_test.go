package main

import (
	"errors"
	"testing"
)

func TestRunRejectsBadUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"up", "--nodes"},
		{"status", "extra"},
		{"down", "--bogus"},
	} {
		if err := run(args); !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

func TestRunRejectsBadNodeCount(t *testing.T) {
	if err := run([]string{"serve", "--nodes", "0", "--root", t.TempDir()}); err == nil {
		t.Error("serve --nodes 0: no error")
	}
}
