package gatewayclass

import (
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// SupportedFeatures are the features Weft claims on the status of its
// GatewayClasses: the core of the GATEWAY-HTTP, GATEWAY-TLS, GATEWAY-GRPC and
// GATEWAY-TCP profiles and the extended features Weft's gateway implements.
// Each one is proved by a test of the upstream suite
// (sigs.k8s.io/gateway-api/conformance v1.7.0) that `make conformance` runs;
// a feature goes here only with a passing test.
var SupportedFeatures = []features.FeatureName{
	// core of the four profiles
	features.SupportGateway,
	features.SupportReferenceGrant,
	features.SupportHTTPRoute,
	features.SupportTLSRoute,
	features.SupportGRPCRoute,
	features.SupportTCPRoute,
	// Gateway
	features.SupportGatewayPort8080,
	features.SupportGatewayHTTPListenerIsolation,
	features.SupportGatewayInfrastructure,
	features.SupportGatewayAddressEmpty,
	features.SupportGatewayFrontendClientCertificateValidation,
	features.SupportGatewayFrontendClientCertificateValidationInsecureFallback,
	features.SupportGatewayRouteHostnameIntersectionPrecedence,
	features.SupportGatewayBackendClientCertificate,
	// HTTPRoute
	features.SupportHTTPRouteDestinationPortMatching,
	features.SupportHTTPRouteBackendRequestHeaderModification,
	features.SupportHTTPRouteQueryParamMatching,
	features.SupportHTTPRouteMethodMatching,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRoutePortRedirect,
	features.SupportHTTPRouteSchemeRedirect,
	features.SupportHTTPRoutePathRedirect,
	features.SupportHTTPRouteHostRewrite,
	features.SupportHTTPRoutePathRewrite,
	features.SupportHTTPRouteRequestMirror,
	features.SupportHTTPRouteRequestMultipleMirrors,
	features.SupportHTTPRouteRequestPercentageMirror,
	features.SupportHTTPRouteRequestTimeout,
	features.SupportHTTPRouteBackendTimeout,
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRouteBackendProtocolH2C,
	features.SupportHTTPRouteBackendProtocolWebSocket,
	features.SupportHTTPRouteNamedRouteRule,
	features.SupportHTTPRouteCORS,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportHTTPRouteRetryCodes,
	features.SupportHTTPRouteRetryConnectionError,
	features.SupportHTTPRouteBackendURLRewrite,
	// BackendTLSPolicy
	features.SupportBackendTLSPolicy,
	features.SupportBackendTLSPolicySANValidation,
	// GRPCRoute, TLSRoute
	features.SupportGRPCRouteNamedRouteRule,
	features.SupportGRPCRouteRequestHeaderModifier,
	features.SupportTLSRouteModeTerminate,
	features.SupportTLSRouteModeMixed,
}

// FeatureNames are SupportedFeatures as the GatewayClass status names them.
func FeatureNames() []gwv1.FeatureName {
	out := make([]gwv1.FeatureName, len(SupportedFeatures))
	for i, f := range SupportedFeatures {
		out[i] = gwv1.FeatureName(f)
	}
	return out
}
