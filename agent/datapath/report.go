package datapath

import (
	"fmt"
	"strconv"
	"strings"
)

// Check is one preflight probe.
type Check struct {
	Name string // "kernel", "program weft_connect4", "attach cgroup/connect4", ...
	OK   bool
	// Optional checks do not fail the report.
	Optional bool
	// Detail: what was found, or the error.
	Detail string
	// Need: the kernel feature and version that provides it.
	Need string
}

// Report is the result of Preflight.
type Report struct {
	Kernel string
	Checks []Check
}

// OK reports whether every required check passed.
func (r Report) OK() bool { return len(r.Missing()) == 0 }

// Missing returns the failed required checks.
func (r Report) Missing() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK && !c.Optional {
			out = append(out, c)
		}
	}
	return out
}

// Format renders the report for people (weft-agent logs, weftctl check).
// Pure.
func (r Report) Format() string {
	var b strings.Builder
	status := "OK"
	if !r.OK() {
		status = "FAIL"
	}
	fmt.Fprintf(&b, "weft datapath preflight: %s (kernel %s, minimum %s)\n", status, r.Kernel, MinKernel)
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	for _, c := range r.Checks {
		mark := "ok  "
		switch {
		case !c.OK && c.Optional:
			mark = "warn"
		case !c.OK:
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s  %-*s  %s\n", mark, width, c.Name, c.Detail)
	}
	if miss := r.Missing(); len(miss) > 0 {
		b.WriteString("missing:\n")
		for _, c := range miss {
			fmt.Fprintf(&b, "  %s: needs %s\n", c.Name, c.Need)
		}
		fmt.Fprintf(&b, "weft needs Linux >= %s with cgroup v2, bpffs and BPF cgroup links\n", MinKernel)
	}
	return b.String()
}

// parseKernel extracts major and minor from a release string such as
// "6.18.44-fc-v669" or "5.10.0-28-amd64". Pure.
func parseKernel(release string) (major, minor int, ok bool) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorStr := parts[1]
	if i := strings.IndexFunc(minorStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorStr = minorStr[:i]
	}
	minor, err2 := strconv.Atoi(minorStr)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return major, minor, true
}

// kernelAtLeast compares a release string with "major.minor". Pure.
func kernelAtLeast(release, min string) bool {
	ma, mi, ok := parseKernel(release)
	wa, wi, ok2 := parseKernel(min + ".0")
	if !ok || !ok2 {
		return false
	}
	return ma > wa || (ma == wa && mi >= wi)
}
