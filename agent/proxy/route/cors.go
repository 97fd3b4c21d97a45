package route

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// CORS is a compiled HTTPCORSFilter.
type CORS struct {
	AllowOrigins     []string
	AllowCredentials bool
	AllowMethods     []string
	AllowHeaders     []string
	ExposeHeaders    []string
	// MaxAge in seconds; the filter's default 5 when zero.
	MaxAge uint32

	origins     []weftv1.Origin
	anyOrigin   bool
	anyMethod   bool
	anyHeader   bool
	methods     string // joined AllowMethods when not wildcard
	headers     string // joined AllowHeaders when not wildcard
	expose      string // value of Access-Control-Expose-Headers, "" for none
	maxAgeValue string
}

const corsDefaultMaxAge = 5

// compileCORS compiles a CORS filter weftv1.CORS.Validate accepted.
func compileCORS(in []string, creds bool, methods, headers, expose []string, maxAge uint32) (*CORS, error) {
	c := &CORS{AllowOrigins: in, AllowCredentials: creds, AllowMethods: methods, AllowHeaders: headers, ExposeHeaders: expose, MaxAge: maxAge}
	for _, o := range in {
		if o == "*" {
			c.anyOrigin = true
			continue
		}
		p, err := weftv1.ParseOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("cors allowOrigins: %w", err)
		}
		c.origins = append(c.origins, p)
	}
	var ms []string
	for _, m := range methods {
		if m == "*" {
			c.anyMethod = true
			continue
		}
		ms = append(ms, m)
	}
	c.methods = strings.Join(ms, ", ")
	var hs []string
	for _, h := range headers {
		if h == "*" {
			c.anyHeader = true
			continue
		}
		hs = append(hs, h)
	}
	c.headers = strings.Join(hs, ", ")
	var es []string
	for _, h := range expose {
		if h == "*" {
			// With credentials "*" is a literal name to browsers, so it
			// cannot mean "all": leave it out.
			if !creds {
				es = append(es, "*")
			}
			continue
		}
		es = append(es, h)
	}
	c.expose = strings.Join(es, ", ")
	if maxAge == 0 {
		maxAge = corsDefaultMaxAge
	}
	c.maxAgeValue = strconv.FormatUint(uint64(maxAge), 10)
	return c, nil
}

func (c *CORS) originAllowed(origin string) bool {
	if origin == "" {
		return false
	}
	if c.anyOrigin {
		return true
	}
	o, err := weftv1.ParseOrigin(origin)
	if err != nil || o.IsPattern() {
		return false
	}
	for _, p := range c.origins {
		if p.Scheme != o.Scheme || p.Port != o.Port {
			continue
		}
		switch {
		case p.AnyHost:
			return true
		case p.HostSuffix != "":
			if len(o.Host) > len(p.HostSuffix) && strings.HasSuffix(o.Host, p.HostSuffix) {
				return true
			}
		case p.Host == o.Host:
			return true
		}
	}
	return false
}

// IsPreflight reports whether a request is a CORS preflight: OPTIONS with
// Origin and Access-Control-Request-Method.
func IsPreflight(method string, h http.Header) bool {
	return method == http.MethodOptions && len(h["Origin"]) > 0 && len(h["Access-Control-Request-Method"]) > 0
}

// Preflight answers a preflight request (204). For an Origin that is not
// allowed the answer carries no CORS headers, so the browser refuses the
// actual request. An allowed Origin is echoed (never "*", which is valid
// with and without credentials); wildcard methods and headers echo the
// requested ones.
func (c *CORS) Preflight(h http.Header) *Answer {
	out := make(http.Header)
	a := &Answer{Status: http.StatusNoContent, Header: out}
	origin := first(h["Origin"])
	if !c.originAllowed(origin) {
		return a
	}
	out["Access-Control-Allow-Origin"] = []string{origin}
	out["Vary"] = []string{"Origin"}
	if c.AllowCredentials {
		out["Access-Control-Allow-Credentials"] = []string{"true"}
	}
	switch {
	case c.anyMethod:
		if m := first(h["Access-Control-Request-Method"]); m != "" {
			out["Access-Control-Allow-Methods"] = []string{m}
		}
	case c.methods != "":
		out["Access-Control-Allow-Methods"] = []string{c.methods}
	}
	switch {
	case c.anyHeader:
		if rh := strings.Join(h["Access-Control-Request-Headers"], ", "); rh != "" {
			out["Access-Control-Allow-Headers"] = []string{rh}
		}
	case c.headers != "":
		out["Access-Control-Allow-Headers"] = []string{c.headers}
	}
	if c.expose != "" {
		out["Access-Control-Expose-Headers"] = []string{c.expose}
	}
	out["Access-Control-Max-Age"] = []string{c.maxAgeValue}
	return a
}

// responseHeaders adds the CORS headers of an actual (non-preflight)
// response for an allowed origin.
func (c *CORS) responseHeaders(origin string, h http.Header) {
	if !c.originAllowed(origin) {
		return
	}
	h["Access-Control-Allow-Origin"] = []string{origin}
	h.Add("Vary", "Origin")
	if c.AllowCredentials {
		h["Access-Control-Allow-Credentials"] = []string{"true"}
	}
	if c.expose != "" {
		h["Access-Control-Expose-Headers"] = []string{c.expose}
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
