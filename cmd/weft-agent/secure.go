//go:build !weft_insecure

package main

import "flag"

// insecureFlag adds nothing: the shipped agent has no --insecure-controller
// (see insecure.go for test builds).
func insecureFlag(*flag.FlagSet) *bool { return new(bool) }
