//go:build weft_insecure

package main

import "testing"

func TestTestBuildHasInsecureControllerFlag(t *testing.T) {
	f, err := parse("run", []string{"--node", "n1", "--insecure-controller"})
	if err != nil || !*f.insecure {
		t.Fatalf("parse: %+v, %v", f, err)
	}
}
