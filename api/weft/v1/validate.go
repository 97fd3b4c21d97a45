package weftv1

// Validity of node policy, defined once next to the types. The controller
// checks what it resolves before it pushes (per value, to drop just the
// offending rule with a status message, and per rule) and the agent checks
// every snapshot before it applies one (route.Compile trusts Validate), so
// the two can never disagree about what a proxy accepts.
//
// Every error wraps one of the exported sentinels; several problems are
// joined with errors.Join.

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Limits bound the size and the cost of what a policy may hold. They are
// part of the controller-agent contract: the controller drops (with a
// route status) whatever would exceed them and the agent NACKs a policy
// that does, so both sides must use the same values. Validate uses
// DefaultLimits.
type Limits struct {
	// MaxPatternLen bounds a path or a regular expression, in bytes.
	MaxPatternLen int
	// MaxWeight bounds one backend's weight.
	MaxWeight uint32
	// MaxTotalWeight bounds the sum of one rule's backend weights.
	MaxTotalWeight uint64

	// MaxRegexProgramSize bounds the RE2 program size of one pattern (as
	// the proxy compiles it: anchored, see Regex.Size), in instructions.
	MaxRegexProgramSize int
	// MaxRouteRegexProgramSize bounds the sum of the program sizes of every
	// regular expression of one route (path, header, query parameter, gRPC
	// service and method matches, each occurrence counted). A request
	// matched against one route runs at most this many instructions per
	// byte of the values it matches.
	MaxRouteRegexProgramSize int
	// MaxNodeRegexProgramSize bounds the sum of the program sizes of the
	// distinct patterns of one node's policy: the compiled-regex memory of
	// a node (each distinct pattern is compiled once per process and
	// shared). It also bounds the process's regex cache.
	MaxNodeRegexProgramSize int
	// MaxRegexInputLen is the longest value (request path, header value,
	// query parameter value, gRPC service or method) the proxy matches
	// against a regular expression, in bytes. A request that would need a
	// longer value matched is refused (route.ErrURITooLong,
	// route.ErrHeaderTooLong) rather than routed by a rule of lower
	// precedence.
	MaxRegexInputLen int
}

// DefaultLimits are the limits Validate enforces.
//
// The regex limits (measured with Go 1.27 regexp, see the route package's
// BenchmarkSelectWorstRegexRoute):
//   - 150 instructions per pattern. Realistic route patterns are far
//     smaller: "/api/v[0-9]+/users/[a-z0-9-]+" is 21, a UUID path segment
//     with a literal prefix and suffix is 62, a case-insensitive
//     alternation of a few words 57. 150 leaves more than twice that and
//     refuses counted repetitions such as "(?:.?){100}" (204) or the
//     lab's "(?:.?){1000}" (2004). Envoy's max_program_size default is
//     100, counted by RE2 C++ (which compiles to byte ranges, so the same
//     pattern counts no fewer instructions there than here).
//   - 1,000 instructions per route: 16 rules each with a 62-instruction
//     pattern fit. At the worst measured cost (11 to 16 ns per
//     instruction per byte on a 2-core lab VM, for patterns like
//     ".*(?:.?){70}x" that keep every RE2 thread alive and never match),
//     one request's matching of an 8 KiB value against a maximal route
//     costs 1,000 × 8,193 instruction-bytes, about 90 to 130 ms; the same
//     path against 16 realistic patterns with literal prefixes costs under
//     a microsecond. The proxy charges a request at most this much
//     however many routes its table merges (route.SelectContext).
//   - 100,000 instructions per node: about 5 to 16 MB of compiled
//     programs (46 to 156 bytes per instruction measured), a few percent
//     of an agent's 256 MiB, for hundreds of maximal patterns or thousands
//     of realistic ones.
//   - 8 KiB of input per matched value: the request-line size most HTTP
//     servers accept by default.
var DefaultLimits = Limits{
	MaxPatternLen:            1024,
	MaxWeight:                1_000_000, // Gateway API's maximum backendRef weight
	MaxTotalWeight:           math.MaxInt32,
	MaxRegexProgramSize:      150,
	MaxRouteRegexProgramSize: 1_000,
	MaxNodeRegexProgramSize:  100_000,
	MaxRegexInputLen:         8 << 10,
}

// Sentinel errors: every validation error wraps one of these.
var (
	ErrInvalidPath        = errors.New("invalid path")
	ErrInvalidRegex       = errors.New("invalid regular expression")
	ErrInvalidHeaderName  = errors.New("invalid header name")
	ErrInvalidHeaderValue = errors.New("invalid header value")
	ErrInvalidMethod      = errors.New("invalid method")
	ErrInvalidHostname    = errors.New("invalid hostname")
	ErrInvalidOrigin      = errors.New("invalid CORS origin")
	ErrInvalidCookie      = errors.New("invalid cookie attribute")
	ErrInvalidSession     = errors.New("invalid session persistence")
	ErrInvalidDuration    = errors.New("invalid duration")
	ErrInvalidFilter      = errors.New("invalid filter")
	ErrInvalidMatch       = errors.New("invalid match")
	ErrInvalidBackend     = errors.New("invalid backend")
	ErrInvalidRule        = errors.New("invalid rule")
	ErrInvalidTable       = errors.New("invalid route table")

	// ErrRegexTooLarge: one pattern's program exceeds MaxRegexProgramSize.
	ErrRegexTooLarge = errors.New("regular expression too large")
	// ErrRouteRegexTooLarge: one route's patterns together exceed
	// MaxRouteRegexProgramSize.
	ErrRouteRegexTooLarge = errors.New("route's regular expressions too large")
	// ErrNodeRegexBudget: a node policy's distinct patterns together
	// exceed MaxNodeRegexProgramSize.
	ErrNodeRegexBudget = errors.New("node regular expression budget exceeded")
)

// ValidatePath checks a path used in a path modifier ("" means unset): it
// starts with '/', has no space, control character, '?' or '#', and is at
// most MaxPatternLen long.
func ValidatePath(p string) error {
	if p == "" {
		return nil
	}
	if p[0] != '/' {
		return fmt.Errorf("%w: %q must start with /", ErrInvalidPath, p)
	}
	if len(p) > DefaultLimits.MaxPatternLen {
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidPath, DefaultLimits.MaxPatternLen)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f || c == '?' || c == '#' {
			return fmt.Errorf("%w: %q contains a space, control character, '?' or '#'", ErrInvalidPath, p)
		}
	}
	return nil
}

// ValidateMatchPath checks the value of an Exact or PathPrefix path match:
// a ValidatePath path that is not empty and has no "//".
func ValidateMatchPath(p string) error {
	if p == "" || strings.Contains(p, "//") {
		return fmt.Errorf("%w: %q must be non-empty and must not contain //", ErrInvalidPath, p)
	}
	return ValidatePath(p)
}

// ValidateHeaderName checks an HTTP header field name (an RFC 9110 token).
func ValidateHeaderName(name string) error {
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("%w: %q is not a valid HTTP header name", ErrInvalidHeaderName, name)
	}
	return nil
}

// ValidateHeaderValue checks that v can be sent as a header value: no
// control characters but tab.
func ValidateHeaderValue(v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Errorf("%w: value contains control characters", ErrInvalidHeaderValue)
		}
	}
	return nil
}

// ValidateMethod checks an HTTP method (an RFC 9110 token).
func ValidateMethod(m string) error {
	if !httpguts.ValidHeaderFieldName(m) {
		return fmt.Errorf("%w: %q is not a valid HTTP method", ErrInvalidMethod, m)
	}
	return nil
}

// ValidateHostname checks a host name used in a redirect or a rewrite:
// letters, digits, '-' and '.', at most 253 characters.
func ValidateHostname(h string) error {
	ok := h != "" && len(h) <= 253
	for i := 0; ok && i < len(h); i++ {
		c := h[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.'
	}
	if !ok {
		return fmt.Errorf("%w: %q is not a valid hostname", ErrInvalidHostname, h)
	}
	return nil
}

// ValidateCookieName checks a cookie name (an RFC 6265 token).
func ValidateCookieName(n string) error {
	if !httpguts.ValidHeaderFieldName(n) {
		return fmt.Errorf("%w: cookie name %q is not a valid cookie name", ErrInvalidCookie, n)
	}
	return nil
}

// ValidateCookiePath checks a cookie Path attribute: it starts with '/' and
// has no ';' or control character.
func ValidateCookiePath(p string) error {
	ok := p != "" && p[0] == '/'
	for i := 0; ok && i < len(p); i++ {
		ok = p[i] >= ' ' && p[i] != 0x7f && p[i] != ';'
	}
	if !ok {
		return fmt.Errorf("%w: cookie path %q must start with / and contain no ';' or control characters", ErrInvalidCookie, p)
	}
	return nil
}

// Origin is a parsed CORS origin or origin pattern.
type Origin struct {
	// Scheme is "http" or "https".
	Scheme string
	// Host in lower case; empty when AnyHost or HostSuffix is set.
	Host string
	// AnyHost is a "*" host (patterns only).
	AnyHost bool
	// HostSuffix is ".example.com" for a "*.example.com" host (patterns only).
	HostSuffix string
	// Port is the explicit port or the scheme's default.
	Port uint32
}

// IsPattern reports whether o has a wildcard host.
func (o Origin) IsPattern() bool { return o.AnyHost || o.HostSuffix != "" }

// ParseOrigin parses "<scheme>://<host>[:<port>]" with scheme http or https;
// the host may be "*" or start with "*." (an origin pattern, as in CORS
// allowOrigins).
func ParseOrigin(s string) (Origin, error) {
	bad := func() (Origin, error) {
		return Origin{}, fmt.Errorf("%w: %q is not <scheme>://<host>[:<port>] with scheme http or https", ErrInvalidOrigin, s)
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad()
	}
	o := Origin{Scheme: strings.ToLower(scheme)}
	switch o.Scheme {
	case "http":
		o.Port = 80
	case "https":
		o.Port = 443
	default:
		return bad()
	}
	host := rest
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		n, err := strconv.ParseUint(rest[i+1:], 10, 16)
		if err != nil || n == 0 {
			return bad()
		}
		host, o.Port = rest[:i], uint32(n)
	}
	if host == "" || strings.ContainsAny(host, "/?#@ \t") {
		return bad()
	}
	host = strings.ToLower(host)
	switch {
	case host == "*":
		o.AnyHost = true
	case strings.HasPrefix(host, "*."):
		o.HostSuffix = host[1:]
		if strings.Contains(o.HostSuffix, "*") || len(o.HostSuffix) < 2 {
			return bad()
		}
	case strings.Contains(host, "*"):
		return bad()
	default:
		o.Host = host
	}
	return o, nil
}

// validateDuration checks an optional, non-negative duration.
func validateDuration(what string, d *durationpb.Duration) error {
	if d == nil {
		return nil
	}
	if err := d.CheckValid(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidDuration, what, err)
	}
	if d.AsDuration() < 0 {
		return fmt.Errorf("%w: %s %v is negative", ErrInvalidDuration, what, d.AsDuration())
	}
	return nil
}

// joinType is the type errors.Join returns.
var joinType = reflect.TypeOf(errors.Join(errors.New("")))

// at prefixes every error of err (an errors.Join of several or a single
// one) with a location, keeping the sentinels.
func at(where string, err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok && reflect.TypeOf(err) == joinType {
		errs := j.Unwrap()
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = fmt.Errorf("%s: %w", where, e)
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s: %w", where, err)
}
