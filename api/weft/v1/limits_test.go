package weftv1

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"testing"
)

// labPattern is the repeated unit of the lab's patterns: 2004
// instructions. labFull is the lab's 1,021-byte pattern.
const labPattern = "(?:.?){1000}"

var labFull = strings.Repeat(labPattern, 85) + "x"

func TestRegexProgramSizeLimit(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		size    int
		want    error
	}{
		{"/api/v[0-9]+/users/[a-z0-9-]+", 21, nil},
		{"/items/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/details", 55, nil},
		{"(?:.?){70}", 144, nil},
		{".*(?:.?){72}", 150, nil}, // the largest allowed
		{".*(?:.?){73}", 0, ErrRegexTooLarge},
		{labPattern, 0, ErrRegexTooLarge},
		{"(?:.?){100}", 0, ErrRegexTooLarge},
		{"(", 0, ErrInvalidRegex},
	} {
		n, err := RegexProgramSize(tc.pattern)
		if tc.want == nil && (err != nil || n != tc.size) || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%q: size %d, %v; want %d, %v", tc.pattern, n, err, tc.size, tc.want)
		}
	}
	// The lab's full pattern is refused without building its 170,005
	// instructions.
	_, err := CompileRegex(labFull)
	if want := "regular expression too large: program size at least 170003 exceeds the limit 150"; err == nil || err.Error() != want {
		t.Errorf("lab pattern: %v, want %q", err, want)
	}
	_, err = CompileRegex(labPattern)
	if want := "regular expression too large: program size 2004 exceeds the limit 150"; err == nil || err.Error() != want {
		t.Errorf("lab pattern: %v, want %q", err, want)
	}
	// The same pattern measured under a larger limit compiles.
	re, err := (Limits{MaxPatternLen: 1024, MaxRegexProgramSize: 3000}).CompileRegex(labPattern)
	if err != nil || re.Size != 2004 {
		t.Errorf("larger limit: %v, %v", re, err)
	}
}

func TestCompileRegexShared(t *testing.T) {
	a, err := CompileRegex("/shared/[a-z]+")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := CompileRegex("/shared/[a-z]+")
	if a != b {
		t.Error("one pattern compiled twice in a process")
	}
	if n, _ := RegexProgramSize("/shared/[a-z]+"); n != a.Size {
		t.Errorf("size %d, compiled size %d", n, a.Size)
	}
}

func TestRegexCacheBounded(t *testing.T) {
	c := newRegexCache(200, 50)
	for i := range 100 {
		p := fmt.Sprintf("/p%d/(?:.?){20}", i)
		e := c.get(p, 150, true)
		if e.re == nil || e.err != nil {
			t.Fatalf("%s: %+v", p, e)
		}
		if c.weight > c.budget || c.lru.Len() > 50 {
			t.Fatalf("after %d patterns: weight %d (budget %d), %d entries", i+1, c.weight, c.budget, c.lru.Len())
		}
	}
	sum := 0
	for _, e := range c.lru.Values() {
		sum += e.weight()
	}
	if sum != c.weight {
		t.Errorf("weight %d, entries weigh %d", c.weight, sum)
	}
	// Measuring only holds no compiled program.
	if e := c.get("/measured", 150, false); e.re != nil || e.size == 0 {
		t.Errorf("measure: %+v", e)
	}
}

// regexMatch is an HTTP match on a path pattern for rule r.
func regexMatch(r uint32, pattern string) *Match {
	return &Match{Rule: r, Http: &HTTPMatch{Path: &StringMatch{Type: MatchType_MATCH_TYPE_REGEX, Value: pattern}}}
}

func regexTable(route string, n int, pattern string) *RouteTable {
	t := &RouteTable{Kind: RouteKind_ROUTE_KIND_HTTP, Rules: []*Rule{{Route: route, Backends: []*BackendRef{{Cluster: "c", Weight: 1}}}}}
	for i := range n {
		t.Matches = append(t.Matches, regexMatch(0, fmt.Sprintf("/%d%s", i%10, pattern)))
	}
	return t
}

func TestRouteRegexLimit(t *testing.T) {
	const p = "(?:.?){70}" // 146 with the "/d" prefix
	if err := regexTable("ns/r", 6, p).Validate(); err != nil {
		t.Errorf("6 patterns: %v", err)
	}
	err := regexTable("ns/r", 7, p).Validate()
	if !errors.Is(err, ErrRouteRegexTooLarge) || !strings.Contains(err.Error(), "route ns/r: program size 1022 exceeds the limit 1000") {
		t.Errorf("7 patterns: %v", err)
	}
	// Two routes in one table are limited each on its own.
	two := regexTable("ns/a", 6, p)
	two.Rules = append(two.Rules, &Rule{Route: "ns/b", Backends: []*BackendRef{{Cluster: "c", Weight: 1}}})
	for i := range 6 {
		two.Matches = append(two.Matches, regexMatch(1, fmt.Sprintf("/%d%s", i, p)))
	}
	if err := two.Validate(); err != nil {
		t.Errorf("two routes: %v", err)
	}
}

func TestNodeRegexBudget(t *testing.T) {
	l := DefaultLimits
	l.MaxNodeRegexProgramSize = 1500
	svc := func(name string, tbl *RouteTable) *ServicePort {
		return &ServicePort{Namespace: "ns", Name: name, Port: 80, Producer: tbl}
	}
	// One table on two Services: its patterns count once.
	tbl := regexTable("ns/r", 6, "(?:.?){70}")
	p := &NodePolicy{Services: []*ServicePort{svc("a", tbl), svc("b", tbl)}}
	if err := p.ValidateWithin(l); err != nil {
		t.Errorf("shared patterns: %v", err)
	}
	p.Services = append(p.Services, svc("c", regexTable("ns/s", 6, "(?:.?){69}")))
	err := p.ValidateWithin(l)
	if !errors.Is(err, ErrNodeRegexBudget) || !strings.Contains(err.Error(), "12 distinct regular expressions sum to 1740, over the node budget 1500") {
		t.Errorf("over budget: %v", err)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("default budget: %v", err)
	}
}

// FuzzRegexLimits: whatever passes the validator has a program within the
// limit, as regexp/syntax counts it, and compiles.
func FuzzRegexLimits(f *testing.F) {
	for _, s := range []string{"/api/v[0-9]+", labPattern, labFull, "(?:(?:a{2}){3}){4}b*", "[^a](a|)+\\b(?s:.)", "(?:.?){72}", ".*(?:.?){72}", "(a|b)*c{3,9}", "(?i)[[:alpha:]]{1,50}", "a)|(b", "\\pL{20}", "x{2}{3}{4}"} {
		f.Add(s, 150)
		f.Add(s, 20)
	}
	f.Fuzz(func(t *testing.T, pattern string, limit int) {
		l := DefaultLimits
		l.MaxRegexProgramSize = max(1, limit%(3*DefaultLimits.MaxRegexProgramSize))
		n, err := l.RegexProgramSize(pattern)
		if err != nil {
			if !errors.Is(err, ErrInvalidRegex) && !errors.Is(err, ErrRegexTooLarge) {
				t.Fatalf("%q: %v wraps neither sentinel", pattern, err)
			}
			if _, cerr := l.CompileRegex(pattern); cerr == nil {
				t.Fatalf("%q: measured %v but compiles", pattern, err)
			}
			return
		}
		if n > l.MaxRegexProgramSize || len(pattern) > l.MaxPatternLen {
			t.Fatalf("%q: size %d accepted over the limit %d", pattern, n, l.MaxRegexProgramSize)
		}
		re, err := l.CompileRegex(pattern)
		if err != nil || re.Size != n {
			t.Fatalf("%q: accepted, then %v, %v", pattern, re, err)
		}
		// An independent count agrees.
		sre, err := syntax.Parse("^(?:"+pattern+")$", syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		prog, err := syntax.Compile(sre.Simplify())
		if err != nil || len(prog.Inst) != n {
			t.Fatalf("%q: size %d, regexp/syntax says %d (%v)", pattern, n, len(prog.Inst), err)
		}
		if lb := minProgramSize(sre); lb > n {
			t.Fatalf("%q: lower bound %d above the size %d", pattern, lb, n)
		}
		if _, err := regexp.Compile("^(?:" + pattern + ")$"); err != nil {
			t.Fatal(err)
		}
		// And so does the table validator.
		tbl := regexTable("ns/r", 1, "")
		tbl.Matches[0].Http.Path.Value = pattern
		tbl.Matches[0].Http.Headers = []*StringMatch{{Name: "x", Type: MatchType_MATCH_TYPE_REGEX, Value: pattern}}
		if err := tbl.ValidateWithin(l); err != nil && !errors.Is(err, ErrRouteRegexTooLarge) {
			t.Fatalf("%q: table: %v", pattern, err)
		}
	})
}
