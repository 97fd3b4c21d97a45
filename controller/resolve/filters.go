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
	for i := range fs {
		f := &fs[i]
		var pf *weftv1.Filter
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier == nil {
				return nil, missingFilterConfig(c, f.Type, "requestHeaderModifier")
			}
			pf = &weftv1.Filter{Kind: &weftv1.Filter_RequestHeaderModifier{RequestHeaderModifier: headerModifier(f.RequestHeaderModifier)}}
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier == nil {
				return nil, missingFilterConfig(c, f.Type, "responseHeaderModifier")
			}
			pf = &weftv1.Filter{Kind: &weftv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: headerModifier(f.ResponseHeaderModifier)}}
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
			if f.URLRewrite.Hostname != nil {
				rw.Hostname = string(*f.URLRewrite.Hostname)
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
			pf = &weftv1.Filter{Kind: &weftv1.Filter_Cors{Cors: cors(f.CORS)}}
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
		out = append(out, pf)
	}
	if redirect && rewrite {
		return nil, fmt.Errorf("%ss RequestRedirect and URLRewrite cannot be combined in one rule", c.where())
	}
	return out, nil
}

// convertGRPCFilters converts GRPCRoute filters.
func (r *resolver) convertGRPCFilters(c filterContext, fs []gwv1.GRPCRouteFilter) ([]*weftv1.Filter, error) {
	var out []*weftv1.Filter
	for i := range fs {
		f := &fs[i]
		var pf *weftv1.Filter
		switch f.Type {
		case gwv1.GRPCRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier == nil {
				return nil, missingFilterConfig(c, gwv1.HTTPRouteFilterType(f.Type), "requestHeaderModifier")
			}
			pf = &weftv1.Filter{Kind: &weftv1.Filter_RequestHeaderModifier{RequestHeaderModifier: headerModifier(f.RequestHeaderModifier)}}
		case gwv1.GRPCRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier == nil {
				return nil, missingFilterConfig(c, gwv1.HTTPRouteFilterType(f.Type), "responseHeaderModifier")
			}
			pf = &weftv1.Filter{Kind: &weftv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: headerModifier(f.ResponseHeaderModifier)}}
		case gwv1.GRPCRouteFilterRequestMirror:
			if f.RequestMirror == nil {
				return nil, missingFilterConfig(c, gwv1.HTTPRouteFilterType(f.Type), "requestMirror")
			}
			m := r.requestMirror(c, f.RequestMirror)
			if m == nil {
				continue
			}
			pf = &weftv1.Filter{Kind: &weftv1.Filter_RequestMirror{RequestMirror: m}}
		case gwv1.GRPCRouteFilterExtensionRef:
			return nil, fmt.Errorf("%s type ExtensionRef is not supported by Weft: it has no extension filters; remove it", c.where())
		default:
			return nil, fmt.Errorf("%s type %q is unknown; supported GRPCRoute filter types: RequestHeaderModifier, ResponseHeaderModifier, RequestMirror", c.where(), f.Type)
		}
		out = append(out, pf)
	}
	return out, nil
}

func missingFilterConfig(c filterContext, t gwv1.HTTPRouteFilterType, field string) error {
	return fmt.Errorf("%s type %s has no %s field set", c.where(), t, field)
}

func headerModifier(f *gwv1.HTTPHeaderFilter) *weftv1.HeaderModifier {
	hm := &weftv1.HeaderModifier{}
	for _, h := range f.Set {
		hm.Set = append(hm.Set, &weftv1.HeaderModifier_Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		hm.Add = append(hm.Add, &weftv1.HeaderModifier_Header{Name: string(h.Name), Value: h.Value})
	}
	hm.Remove = append(hm.Remove, f.Remove...)
	return hm
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
		return &weftv1.PathModifier{Type: weftv1.PathModifier_TYPE_FULL, Value: *p.ReplaceFullPath}, nil
	case gwv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch == nil {
			return nil, fmt.Errorf("path type ReplacePrefixMatch needs replacePrefixMatch")
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

func cors(f *gwv1.HTTPCORSFilter) *weftv1.CORS {
	c := &weftv1.CORS{MaxAgeSeconds: 5}
	for _, o := range f.AllowOrigins {
		c.AllowOrigins = append(c.AllowOrigins, string(o))
	}
	if f.AllowCredentials != nil {
		c.AllowCredentials = *f.AllowCredentials
	}
	for _, m := range f.AllowMethods {
		c.AllowMethods = append(c.AllowMethods, string(m))
	}
	for _, h := range f.AllowHeaders {
		c.AllowHeaders = append(c.AllowHeaders, string(h))
	}
	for _, h := range f.ExposeHeaders {
		c.ExposeHeaders = append(c.ExposeHeaders, string(h))
	}
	if f.MaxAge > 0 {
		c.MaxAgeSeconds = uint32(f.MaxAge)
	}
	return c
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

// checkRegex compiles an RE2 pattern and says what is wrong with it.
func checkRegex(what, pattern string) error {
	if _, err := regexp.Compile(pattern); err != nil {
		return fmt.Errorf("%s regular expression %q is not valid RE2: %v", what, pattern, err)
	}
	return nil
}
