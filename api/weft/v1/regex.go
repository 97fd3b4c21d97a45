package weftv1

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Regex is a compiled pattern. One Regex per distinct pattern is shared by
// every table, rule and validator of the process: it is immutable and safe
// for concurrent use.
type Regex struct {
	*regexp.Regexp
	// Size is the RE2 program size of the pattern as the proxy runs it
	// (anchored at both ends): the instructions of its compiled program.
	// Memory and matching time are proportional to it.
	Size int
}

// anchored is the expression the proxy compiles for a pattern: a full
// match of the value.
func anchored(pattern string) string { return "^(?:" + pattern + ")$" }

// regexEntry is the cached outcome of one pattern.
type regexEntry struct {
	// size is the program size; with atLeast, a lower bound of it (the
	// program was too large to build: over measureCap).
	size    int
	atLeast bool
	// err: the pattern is not valid RE2 (an ErrInvalidRegex).
	err error
	// re is set once someone compiled the pattern within their limit; a
	// pattern that was only measured (the controller's validator, a
	// pattern over the limit) holds none.
	re *Regex
}

// weight is what the entry counts against the cache budget: its program
// size once compiled, else 1 (a measurement holds a few words).
func (e *regexEntry) weight() int {
	if e.re != nil {
		return e.size
	}
	return 1
}

// measureCap bounds the programs measure builds. The parser lets a
// 1,021-byte pattern such as "(?:.?){1000}" repeated 85 times through; its
// program has 170,005 instructions and takes about 190 ms and 7 MB to
// build. A pattern whose program provably has more instructions than this
// is not built: its size is reported as a lower bound. A MaxRegexProgramSize
// above measureCap therefore acts as measureCap.
const measureCap = 4096

// measure parses a pattern and counts the instructions of its program the
// way regexp.Compile builds it (Parse, Simplify, syntax.Compile), without
// building the matcher.
func measure(pattern string) *regexEntry {
	// The pattern must parse on its own: "a)|(b" is invalid, though wrapped
	// in the anchors it would compile (to something else).
	if _, err := syntax.Parse(pattern, syntax.Perl); err != nil {
		return &regexEntry{err: fmt.Errorf("%w: %q is not valid RE2: %v", ErrInvalidRegex, pattern, err)}
	}
	re, err := syntax.Parse(anchored(pattern), syntax.Perl)
	if err != nil {
		return &regexEntry{err: fmt.Errorf("%w: %q is not valid RE2: %v", ErrInvalidRegex, pattern, err)}
	}
	if lb := minProgramSize(re); lb > measureCap {
		return &regexEntry{size: lb, atLeast: true}
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return &regexEntry{err: fmt.Errorf("%w: %q is not valid RE2: %v", ErrInvalidRegex, pattern, err)}
	}
	return &regexEntry{size: len(prog.Inst)}
}

// minProgramSize is a lower bound of the number of instructions
// syntax.Compile emits for re once simplified, computed on the parsed tree
// without expanding counted repetitions: x{n,m} becomes at least m copies
// of x (n, or 1, when m is unbounded).
func minProgramSize(re *syntax.Regexp) int {
	const sat = 1 << 40 // saturate: never overflow
	sum := func(subs []*syntax.Regexp) int {
		n := 0
		for _, s := range subs {
			n = min(n+minProgramSize(s), sat)
		}
		return n
	}
	switch re.Op {
	case syntax.OpLiteral:
		return len(re.Rune) // one instruction per rune
	case syntax.OpCharClass, syntax.OpAnyChar, syntax.OpAnyCharNotNL,
		syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return 1
	case syntax.OpCapture:
		return min(sum(re.Sub)+2, sat) // two capture instructions
	case syntax.OpRepeat:
		copies := re.Max
		if copies < 0 {
			copies = max(re.Min, 1)
		}
		return min(copies*sum(re.Sub), sat)
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		// One alternation instruction, unless Simplify merges the
		// operator into an inner one ("x**") or drops it (empty x).
		n := sum(re.Sub)
		switch re.Sub[0].Op {
		case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		default:
			if n > 0 {
				n++
			}
		}
		return n
	case syntax.OpConcat, syntax.OpAlternate:
		return sum(re.Sub)
	}
	return 0
}

// regexCache remembers, per pattern, its program size or why it is invalid,
// and the compiled Regex once one was asked for: each distinct pattern is
// parsed and compiled once per process, however many nodes, tables,
// pushes or resolutions use it. Least recently used entries go first when
// the compiled programs together exceed budget instructions (or the
// entries exceed maxEntries).
type regexCache struct {
	mu     sync.Mutex
	lru    *simplelru.LRU[string, *regexEntry]
	weight int
	budget int
}

func newRegexCache(budget, maxEntries int) *regexCache {
	c := &regexCache{budget: budget}
	c.lru, _ = simplelru.NewLRU(maxEntries, func(_ string, e *regexEntry) { c.weight -= e.weight() })
	return c
}

// regexes is the process's cache, bounded by the node budget: everything
// one node policy may hold fits in it.
var regexes = newRegexCache(DefaultLimits.MaxNodeRegexProgramSize, 10_000)

// get returns the entry of pattern, measuring it on first use. With
// compile set and the pattern valid and within maxSize, the entry holds
// its Regex. The entry must not be modified.
func (c *regexCache) get(pattern string, maxSize int, compile bool) regexEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Get(pattern)
	if !ok {
		e = measure(pattern)
		c.lru.Add(pattern, e)
		c.weight += e.weight()
	}
	if compile && e.err == nil && !e.atLeast && e.re == nil && e.size <= maxSize {
		// Cannot fail: measure compiled the same expression.
		re := regexp.MustCompile(anchored(pattern))
		c.weight -= e.weight()
		e.re = &Regex{Regexp: re, Size: e.size}
		c.weight += e.weight()
	}
	// The entry just used is the newest: it goes last.
	for c.weight > c.budget && c.lru.Len() > 1 {
		c.lru.RemoveOldest()
	}
	return *e
}

// RegexProgramSize checks a pattern within l without compiling a matcher:
// at most MaxPatternLen bytes, valid RE2 on its own, and a program of at
// most MaxRegexProgramSize instructions. It returns the program size.
func (l Limits) RegexProgramSize(pattern string) (int, error) {
	e, err := l.regex(pattern, false)
	return e.size, err
}

// CompileRegex compiles an RE2 pattern as the proxy matches it (the whole
// value, anchored at both ends) within l. The Regex is shared with every
// other user of the same pattern in the process.
func (l Limits) CompileRegex(pattern string) (*Regex, error) {
	e, err := l.regex(pattern, true)
	return e.re, err
}

func (l Limits) regex(pattern string, compile bool) (regexEntry, error) {
	if len(pattern) > l.MaxPatternLen {
		return regexEntry{}, fmt.Errorf("%w: longer than %d characters", ErrInvalidRegex, l.MaxPatternLen)
	}
	e := regexes.get(pattern, l.MaxRegexProgramSize, compile)
	switch {
	case e.err != nil:
		return regexEntry{}, e.err
	case e.atLeast:
		return regexEntry{}, fmt.Errorf("%w: program size at least %d exceeds the limit %d", ErrRegexTooLarge, e.size, l.MaxRegexProgramSize)
	case e.size > l.MaxRegexProgramSize:
		return regexEntry{}, fmt.Errorf("%w: program size %d exceeds the limit %d", ErrRegexTooLarge, e.size, l.MaxRegexProgramSize)
	}
	return e, nil
}

// CompileRegex is DefaultLimits.CompileRegex.
func CompileRegex(pattern string) (*Regex, error) {
	return DefaultLimits.CompileRegex(pattern)
}

// RegexProgramSize is DefaultLimits.RegexProgramSize.
func RegexProgramSize(pattern string) (int, error) {
	return DefaultLimits.RegexProgramSize(pattern)
}
