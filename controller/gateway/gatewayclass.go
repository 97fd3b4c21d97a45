package gateway

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/consts"
)

// classState is one of Weft's GatewayClasses and whether it is accepted.
type classState struct {
	gc *gwv1.GatewayClass
	// invalid says why the class is not accepted ("" when it is).
	invalid string
}

// gatewayClasses picks Weft's classes (by controllerName) and decides
// their status. The map is by class name.
func gatewayClasses(in *Input) (map[string]*classState, []GatewayClassStatus) {
	classes := map[string]*classState{}
	var out []GatewayClassStatus
	version := supportedVersion(in.Options.BundleVersions)
	for i := range in.GatewayClasses {
		gc := &in.GatewayClasses[i]
		if gc.Spec.ControllerName != ControllerName {
			continue
		}
		cs := &classState{gc: gc}
		classes[gc.Name] = cs
		accepted := cond(gwv1.GatewayClassConditionStatusAccepted, true, gwv1.GatewayClassReasonAccepted,
			fmt.Sprintf("Weft's gateway controller serves Gateways of class %s", gc.Name), gc.Generation)
		if p := gc.Spec.ParametersRef; p != nil {
			ns := ""
			if p.Namespace != nil {
				ns = string(*p.Namespace) + "/"
			}
			cs.invalid = fmt.Sprintf("Weft's gateway controller takes no parameters, but parametersRef names %s %s%s (group %q); remove spec.parametersRef", p.Kind, ns, p.Name, p.Group)
			accepted = cond(gwv1.GatewayClassConditionStatusAccepted, false, gwv1.GatewayClassReasonInvalidParameters, cs.invalid, gc.Generation)
		}
		st := gwv1.GatewayClassStatus{Conditions: []metav1.Condition{accepted}}
		if cs.invalid == "" {
			v := version
			v.ObservedGeneration = gc.Generation
			st.Conditions = append(st.Conditions, v)
			st.SupportedFeatures = supportedFeatures(in.Options.SupportedFeatures)
		}
		out = append(out, GatewayClassStatus{Name: gc.Name, Generation: gc.Generation, Status: st})
	}
	slices.SortFunc(out, func(a, b GatewayClassStatus) int { return strings.Compare(a.Name, b.Name) })
	return classes, out
}

// supportedBundle reports whether Weft supports a Gateway API CRD bundle
// version: any patch release of the minor release Weft is built against
// (consts.BundleVersion), whose types and conformance tests this package
// follows. Patch releases do not change the API.
func supportedBundle(v string) bool {
	minor := func(s string) string {
		parts := strings.SplitN(strings.TrimPrefix(s, "v"), ".", 3)
		if len(parts) < 2 {
			return ""
		}
		return parts[0] + "." + parts[1]
	}
	return v != "" && minor(v) != "" && minor(v) == minor(consts.BundleVersion)
}

// supportedVersion is the SupportedVersion condition for the installed
// CRDs (without ObservedGeneration). Weft serves a class on a best-effort
// basis when the version is not supported: Accepted stays True and this
// condition says what to install, as the GatewayClass API allows.
func supportedVersion(crds map[string]string) metav1.Condition {
	want := strings.Join(strings.SplitN(consts.BundleVersion, ".", 3)[:2], ".") + ".x"
	if len(crds) == 0 {
		return cond(gwv1.GatewayClassConditionStatusSupportedVersion, false, gwv1.GatewayClassReasonUnsupportedVersion,
			fmt.Sprintf("no Gateway API CRD was found; install the Gateway API %s CRDs (standard or experimental channel)", want), 0)
	}
	var bad []string
	seen := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(crds)) {
		v := crds[name]
		switch {
		case v == "":
			bad = append(bad, fmt.Sprintf("%s has no %s annotation", name, consts.BundleVersionAnnotation))
		case !supportedBundle(v):
			bad = append(bad, fmt.Sprintf("%s is bundle version %s", name, v))
		}
		seen[v] = true
	}
	if len(bad) > 0 {
		return cond(gwv1.GatewayClassConditionStatusSupportedVersion, false, gwv1.GatewayClassReasonUnsupportedVersion,
			fmt.Sprintf("Weft supports Gateway API bundle version %s, but %s; install the %s CRDs (Weft serves this class on a best-effort basis until then)", want, strings.Join(bad, ", "), want), 0)
	}
	return cond(gwv1.GatewayClassConditionStatusSupportedVersion, true, gwv1.GatewayClassReasonSupportedVersion,
		fmt.Sprintf("the installed Gateway API CRDs are bundle version %s, which Weft supports", strings.Join(slices.Sorted(maps.Keys(seen)), ", ")), 0)
}

// supportedFeatures is the status list: unique, sorted by name.
func supportedFeatures(fs []gwv1.FeatureName) []gwv1.SupportedFeature {
	names := slices.Clone(fs)
	slices.Sort(names)
	names = slices.Compact(names)
	var out []gwv1.SupportedFeature
	for _, n := range names {
		if n != "" {
			out = append(out, gwv1.SupportedFeature{Name: n})
		}
	}
	return out
}
