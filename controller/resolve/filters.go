package resolve

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// filterContext says where a filter sits, for messages and mirror refs.
type filterContext struct {
	rt   *route
	rule int
	// onBackend is set for filters inside a backendRef.
	onBackend string
}

func (c filterContext) where() string {
	if c.onBackend != "" {
		return fmt.Sprintf("backendRef %s filter", c.onBackend)
	}
	return "filter"
}

// convertHTTPFilters converts HTTPRoute filters. The error says why the rule
// cannot be programmed.
func (r *resolver) convertHTTPFilters(c filterContext, fs []gwv1.HTTPRouteFilter) ([]*weftv1.Filter, error) {
	var out []*weftv1.Filter
	var redirect, rewrite bool
	seen := map[string]bool{}
	for i := range fs {
		f := &fs[i]
		var pf *weftv1.Filter
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier == nil {
				return nil, missingFilterConfig(c, f.Type, "requestHeaderModifier")
			}
			var err error
			if pf, err = headerFilter(c, "RequestHeaderModifier", f.RequestHeaderModifier, false); err != nil {
				return nil, err
			}
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier == nil {
				return nil, missingFilterConfig(c, f.Type, "responseHeaderModifier")
			}
			var err error
			if pf, err = headerFilter(c, "ResponseHeaderModifier", f.ResponseHeaderModifier, true); err != nil {
				return nil, err
			}
		case gwv1.HTTPRouteFilterRequestRedirect:
			if f.RequestRedirect == nil {
				return nil, missingFilterConfig(c, f.Type, "requestRedirect")
			}
			rd, err := requestRedirect(f.RequestRedirect)
			if err != nil {
				return nil, fmt.Errorf("%s RequestRedirect: %w", c.where(), err)
			}
			redirect = true
			pf = &weftv1.Filter{Kind: &weftv1.Filter_RequestRedirect{RequestRedirect: rd}}
		case gwv1.HTTPRouteFilterURLRewrite:
			if f.URLRewrite == nil {
				return nil, missingFilterConfig(c, f.Type, "urlRewrite")
			}
			rw := &weftv1.URLRewrite{}
			if h := f.URLRewrite.Hostname; h != nil {
				if err := weftv1.ValidateHostname(string(*h)); err != nil {
					return nil, fmt.Errorf("%s URLRewrite: %w", c.where(), err)
				}
				rw.Hostname = string(*h)
			}
			pm, err := pathModifier(f.URLRewrite.Path)
			if err != nil {
				return nil, fmt.Errorf("%s URLRewrite: %w", c.where(), err)
			}
			rw.Path = pm
			rewrite = true
			pf = &weftv1.Filter{Kind: &weftv1.Filter_UrlRewrite{UrlRewrite: rw}}
		case gwv1.HTTPRouteFilterRequestMirror:
			if f.RequestMirror == nil {
				return nil, missingFilterConfig(c, f.Type, "requestMirror")
			}
			m := r.requestMirror(c, f.RequestMirror)
			if m == nil {
				continue
			}
			pf = &weftv1.Filter{Kind: &weftv1.Filter_RequestMirror{RequestMirror: m}}
		case gwv1.HTTPRouteFilterCORS:
			if f.CORS == nil {
				return nil, missingFilterConfig(c, f.Type, "cors")
			}
			cf, err := cors(f.CORS)
			if err != nil {
				return nil, fmt.Errorf("%s CORS: %w", c.where(), err)
			}
			pf = &weftv1.Filter{Kind: &weftv1.Filter_Cors{Cors: cf}}
		case gwv1.HTTPRouteFilterExternalAuth:
			return nil, fmt.Errorf("%s type ExternalAuth is not supported by Weft; remove it (or use a mesh authorization policy)", c.where())
		case gwv1.HTTPRouteFilterExtensionRef:
			ref := "unset"
			if f.ExtensionRef != nil {
				ref = fmt.Sprintf("%s/%s %s", f.ExtensionRef.Group, f.ExtensionRef.Kind, f.ExtensionRef.Name)
			}
			return nil, fmt.Errorf("%s type ExtensionRef (%s) is not supported by Weft: it has no extension filters; remove it", c.where(), ref)
		default:
			return nil, fmt.Errorf("%s type %q is unknown; supported types: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror, CORS", c.where(), f.Type)
		}
		if err := checkRepeat(c, seen, string(f.Type)); err != nil {
			return nil, err
		}
		out = append(out, pf)
	}
	if redirect && rewrite {
		return nil, fmt.Errorf("%ss RequestRedirect and URLRewrite cannot be combined in one rule", c.where())
	}
	return out, nil
}

// convertGRPCFilters converts GRPCRoute filters: the kinds a GRPCRoute
// has are HTTPRoute filter kinds, converted by convertHTTPFilters.
func (r *resolver) convertGRPCFilters(c filterContext, fs []gwv1.GRPCRouteFilter) ([]*weftv1.Filter, error) {
	hfs := make([]gwv1.HTTPRouteFilter, len(fs))
	for i := range fs {
		f := &fs[i]
		switch f.Type {
		case gwv1.GRPCRouteFilterRequestHeaderModifier, gwv1.GRPCRouteFilterResponseHeaderModifier, gwv1.GRPCRouteFilterRequestMirror:
			hfs[i] = gwv1.HTTPRouteFilter{
				Type:                   gwv1.HTTPRouteFilterType(f.Type),
				RequestHeaderModifier:  f.RequestHeaderModifier,
				ResponseHeaderModifier: f.ResponseHeaderModifier,
				RequestMirror:          f.RequestMirror,
			}
		case gwv1.GRPCRouteFilterExtensionRef:
			return nil, fmt.Errorf("%s type ExtensionRef is not supported by Weft: it has no extension filters; remove it", c.where())
		default:
			return nil, fmt.Errorf("%s type %q is unknown; supported GRPCRoute filter types: RequestHeaderModifier, ResponseHeaderModifier, RequestMirror", c.where(), f.Type)
		}
	}
	return r.convertHTTPFilters(c, hfs)
}

// checkRepeat rejects a filter type given twice; only RequestMirror may
// repeat.
func checkRepeat(c filterContext, seen map[string]bool, t string) error {
	if t != "RequestMirror" && seen[t] {
		return fmt.Errorf("%s type %s is given more than once; only RequestMirror may repeat", c.where(), t)
	}
	seen[t] = true
	return nil
}

func missingFilterConfig(c filterContext, t gwv1.HTTPRouteFilterType, field string) error {
	return fmt.Errorf("%s type %s has no %s field set", c.where(), t, field)
}

func headerModifier(f *gwv1.HTTPHeaderFilter) (*weftv1.HeaderModifier, error) {
	hm := &weftv1.HeaderModifier{}
	conv := func(hs []gwv1.HTTPHeader) ([]*weftv1.HeaderModifier_Header, error) {
		var out []*weftv1.HeaderModifier_Header
		for _, h := range hs {
			if err := weftv1.ValidateHeaderName(string(h.Name)); err != nil {
				return nil, err
			}
			if err := weftv1.ValidateHeaderValue(h.Value); err != nil {
				return nil, fmt.Errorf("header %s: %w", h.Name, err)
			}
			out = append(out, &weftv1.HeaderModifier_Header{Name: string(h.Name), Value: h.Value})
		}
		return out, nil
	}
	var err error
	if hm.Set, err = conv(f.Set); err != nil {
		return nil, err
	}
	if hm.Add, err = conv(f.Add); err != nil {
		return nil, err
	}
	for _, n := range f.Remove {
		if err := weftv1.ValidateHeaderName(n); err != nil {
			return nil, err
		}
	}
	hm.Remove = append(hm.Remove, f.Remove...)
	return hm, nil
}

// headerFilter converts a header modifier filter of either direction.
func headerFilter(c filterContext, t string, f *gwv1.HTTPHeaderFilter, response bool) (*weftv1.Filter, error) {
	hm, err := headerModifier(f)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", c.where(), t, err)
	}
	if response {
		return &weftv1.Filter{Kind: &weftv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: hm}}, nil
	}
	return &weftv1.Filter{Kind: &weftv1.Filter_RequestHeaderModifier{RequestHeaderModifier: hm}}, nil
}

func pathModifier(p *gwv1.HTTPPathModifier) (*weftv1.PathModifier, error) {
	if p == nil {
		return nil, nil
	}
	switch p.Type {
	case gwv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath == nil {
			return nil, fmt.Errorf("path type ReplaceFullPath needs replaceFullPath")
		}
		if err := weftv1.ValidatePath(*p.ReplaceFullPath); err != nil {
			return nil, fmt.Errorf("replaceFullPath: %w", err)
		}
		return &weftv1.PathModifier{Type: weftv1.PathModifier_TYPE_FULL, Value: *p.ReplaceFullPath}, nil
	case gwv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch == nil {
			return nil, fmt.Errorf("path type ReplacePrefixMatch needs replacePrefixMatch")
		}
		if err := weftv1.ValidatePath(*p.ReplacePrefixMatch); err != nil {
			return nil, fmt.Errorf("replacePrefixMatch: %w", err)
		}
		return &weftv1.PathModifier{Type: weftv1.PathModifier_TYPE_PREFIX, Value: *p.ReplacePrefixMatch}, nil
	}
	return nil, fmt.Errorf("path modifier type %q is unknown; use ReplaceFullPath or ReplacePrefixMatch", p.Type)
}

func requestRedirect(f *gwv1.HTTPRequestRedirectFilter) (*weftv1.RequestRedirect, error) {
	rd := &weftv1.RequestRedirect{StatusCode: 302}
	if f.Scheme != nil {
		s := strings.ToLower(*f.Scheme)
		if s != "http" && s != "https" {
			return nil, fmt.Errorf("scheme %q is not supported; use http or https", *f.Scheme)
		}
		rd.Scheme = s
	}
	if f.Hostname != nil {
		if err := weftv1.ValidateHostname(string(*f.Hostname)); err != nil {
			return nil, err
		}
		rd.Hostname = string(*f.Hostname)
	}
	if f.Port != nil {
		if *f.Port < 1 || *f.Port > 65535 {
			return nil, fmt.Errorf("port %d is out of range 1-65535", *f.Port)
		}
		rd.Port = uint32(*f.Port)
	}
	if f.StatusCode != nil {
		switch *f.StatusCode {
		case 301, 302, 303, 307, 308:
			rd.StatusCode = uint32(*f.StatusCode)
		default:
			return nil, fmt.Errorf("statusCode %d is not supported; use 301, 302, 303, 307 or 308", *f.StatusCode)
		}
	}
	pm, err := pathModifier(f.Path)
	if err != nil {
		return nil, err
	}
	rd.Path = pm
	return rd, nil
}

// requestMirror converts a mirror; an invalid mirror backend is reported in
// ResolvedRefs and the mirror is left out (requests are still served).
func (r *resolver) requestMirror(c filterContext, f *gwv1.HTTPRequestMirrorFilter) *weftv1.RequestMirror {
	res := r.resolveBackendRef(c.rt, c.rule, f.BackendRef, "RequestMirror backendRef")
	if res.cluster == "" {
		c.rt.refs.add(res.reason, res.problem+" (requests are not mirrored until it is fixed)")
		return nil
	}
	m := &weftv1.RequestMirror{Cluster: res.cluster, Numerator: 100, Denominator: 100}
	switch {
	case f.Fraction != nil:
		d := int32(100)
		if f.Fraction.Denominator != nil {
			d = *f.Fraction.Denominator
		}
		n := f.Fraction.Numerator
		if d <= 0 {
			d = 100
		}
		n = max(0, min(n, d))
		m.Numerator, m.Denominator = uint32(n), uint32(d)
	case f.Percent != nil:
		m.Numerator = uint32(max(0, min(*f.Percent, 100)))
	}
	return m
}

func cors(f *gwv1.HTTPCORSFilter) (*weftv1.CORS, error) {
	c := &weftv1.CORS{MaxAgeSeconds: 5}
	for _, o := range f.AllowOrigins {
		if o != "*" {
			if _, err := weftv1.ParseOrigin(string(o)); err != nil {
				return nil, fmt.Errorf("allowOrigins: %w", err)
			}
		}
		c.AllowOrigins = append(c.AllowOrigins, string(o))
	}
	if f.AllowCredentials != nil {
		c.AllowCredentials = *f.AllowCredentials
	}
	for _, m := range f.AllowMethods {
		if m != "*" {
			if err := weftv1.ValidateMethod(string(m)); err != nil {
				return nil, fmt.Errorf("allowMethods: %w", err)
			}
		}
		c.AllowMethods = append(c.AllowMethods, string(m))
	}
	for _, h := range f.AllowHeaders {
		if h != "*" {
			if err := weftv1.ValidateHeaderName(string(h)); err != nil {
				return nil, fmt.Errorf("allowHeaders: %w", err)
			}
		}
		c.AllowHeaders = append(c.AllowHeaders, string(h))
	}
	for _, h := range f.ExposeHeaders {
		if h != "*" {
			if err := weftv1.ValidateHeaderName(string(h)); err != nil {
				return nil, fmt.Errorf("exposeHeaders: %w", err)
			}
		}
		c.ExposeHeaders = append(c.ExposeHeaders, string(h))
	}
	if f.MaxAge > 0 {
		c.MaxAgeSeconds = uint32(f.MaxAge)
	}
	return c, nil
}

// gwDuration matches a Gateway API Duration (GEP-2257).
var gwDuration = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// parseDuration parses a GEP-2257 duration.
func parseDuration(d gwv1.Duration) (time.Duration, error) {
	if !gwDuration.MatchString(string(d)) {
		return 0, fmt.Errorf("%q is not a Gateway API duration (GEP-2257: e.g. 1h, 10s, 500ms, 1m30s)", d)
	}
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0, fmt.Errorf("%q: %w", d, err)
	}
	return v, nil
}

func durationProto(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

// checkRegex checks an RE2 pattern as the proxy compiles it and says where
// it is.
func checkRegex(what, pattern string) error {
	// Measured, not compiled: the controller never matches, and the
	// measurement is cached per pattern for the process (every resolve
	// after the first costs a map lookup).
	if _, err := weftv1.RegexProgramSize(pattern); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
