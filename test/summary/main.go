// Command summary reads `go test -json` output on stdin, prints the output of
// every failed test and one closing line "test: N passed, N failed, N skipped",
// and exits non-zero when a test or package failed, or when
// -require-privileged is set and no TestPrivileged... test ran.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type result struct {
	passed, failed, skipped int
	privileged              int
	failedPkgs              []string
	skips                   []string
}

func main() {
	requirePriv := flag.Bool("require-privileged", false, "fail when no TestPrivileged... test passed")
	flag.Parse()
	r, err := summarize(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "summary:", err)
		os.Exit(2)
	}
	code := 0
	if r.failed > 0 || len(r.failedPkgs) > 0 {
		code = 1
	}
	if len(r.skips) > 0 {
		fmt.Printf("skipped tests (%d):\n", len(r.skips))
		for _, s := range r.skips {
			fmt.Println("  " + s)
		}
	}
	for _, p := range r.failedPkgs {
		fmt.Println("FAIL package", p)
	}
	fmt.Printf("privileged tests passed: %d\n", r.privileged)
	if *requirePriv && r.privileged == 0 {
		fmt.Println("FAIL: the privileged suite ran zero tests (run as root)")
		code = 1
	}
	fmt.Printf("test: %d passed, %d failed, %d skipped\n", r.passed, r.failed, r.skipped)
	os.Exit(code)
}

func summarize(in io.Reader, out io.Writer) (result, error) {
	var r result
	outputs := map[string]*strings.Builder{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			// Build errors arrive as plain text.
			fmt.Fprintln(out, string(line))
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			b := outputs[key]
			if b == nil {
				b = &strings.Builder{}
				outputs[key] = b
			}
			b.WriteString(e.Output)
		case "pass":
			if e.Test != "" {
				r.passed++
				if strings.HasPrefix(e.Test, "TestPrivileged") && !strings.Contains(e.Test, "/") {
					r.privileged++
				}
			}
			delete(outputs, key)
		case "skip":
			if e.Test != "" {
				r.skipped++
				reason := ""
				if b := outputs[key]; b != nil {
					reason = lastLine(b.String())
				}
				r.skips = append(r.skips, fmt.Sprintf("%s %s: %s", e.Package, e.Test, reason))
			}
			delete(outputs, key)
		case "fail":
			if e.Test != "" {
				r.failed++
			} else {
				r.failedPkgs = append(r.failedPkgs, e.Package)
			}
			if b := outputs[key]; b != nil {
				fmt.Fprintf(out, "=== FAIL %s %s\n%s", e.Package, e.Test, b.String())
			}
			delete(outputs, key)
		}
	}
	sort.Strings(r.skips)
	return r, sc.Err()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l != "" && !strings.HasPrefix(l, "---") {
			return l
		}
	}
	return ""
}
