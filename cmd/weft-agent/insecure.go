//go:build weft_insecure

package main

import "flag"

// insecureFlag adds --insecure-controller. Only test builds
// (go build -tags weft_insecure) have it: the shipped agent always verifies
// the controller, which it sends its ServiceAccount token.
func insecureFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("insecure-controller", false, "talk to the controller without TLS (test builds only)")
}
