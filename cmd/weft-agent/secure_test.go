//go:build !weft_insecure

package main

import "testing"

func TestShippedAgentHasNoInsecureControllerFlag(t *testing.T) {
	if _, err := parse("run", []string{"--node", "n1", "--insecure-controller"}); err == nil {
		t.Fatal("--insecure-controller accepted without the weft_insecure build tag")
	}
}
