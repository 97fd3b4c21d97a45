// Package gateway decides everything about Weft's north-south Gateways that
// can be decided from a snapshot of objects: the status of GatewayClasses,
// Gateways and their listeners, the parent statuses of routes whose
// parents are Gateways, the status of BackendTLSPolicies, and the
// intermediate representation (IR, ir.go) a Gateway's data plane serves.
// It is pure: plain values in (Input), plain values out (Output); no
// clients, no logging. Resolve is deterministic and does not modify its
// input.
//
// # Whose objects
//
// A GatewayClass is Weft's when its controllerName is ControllerName,
// whatever its name (the install creates ClassName). A Gateway is Weft's
// when its class is. A route gets entries for its parentRefs that name
// one of Weft's Gateways (group gateway.networking.k8s.io, kind Gateway),
// and for no other: Service parents are the mesh's (controller/resolve),
// other Gateways belong to other controllers, a missing Gateway cannot be
// told apart from someone else's.
//
// # Writing the statuses
//
// Conditions come without LastTransitionTime and with ObservedGeneration
// set. Output.Routes and Output.Policies have the mesh's shape
// (resolve.ObjectStatus): the status writer writes them as it writes the
// mesh's, with ControllerName instead of resolve.ControllerName, keyed by
// parentRef (ancestorRef) exactly as the mesh's entries are; a route with
// both kinds of parent gets both lists side by side. Output.Gateways and
// Output.GatewayClasses are the API status types: the writer owns, on a
// Gateway, the condition types Accepted, Programmed, ResolvedRefs and
// InsecureFrontendValidationMode and, on each listener, Accepted,
// Programmed, ResolvedRefs, Conflicted and OverlappingTLSConfig; an owned
// type missing from the output (the last two of each list are only set
// when True) is removed, other types are kept.
//
// # Choices where the Gateway API leaves them to the implementation
//
//   - SupportedVersion: any patch of the bundle minor Weft is built
//     against is supported; other versions are served on a best-effort
//     basis (Accepted stays True, SupportedVersion False says what to
//     install).
//   - Weft's gateway takes no parameters: a parametersRef on the class or
//     the Gateway is InvalidParameters.
//   - Addresses: only IPAddress (with or without a value) can be asked
//     for; provisioning reports what the data plane got (Provisioned).
//   - Protocols HTTP, HTTPS, TLS and TCP. On one port HTTP, TCP and the
//     TLS-based pair HTTPS/TLS cannot mix (ProtocolConflict); HTTPS and TLS
//     listeners, terminating or passing through, may share a port because
//     the SNI picks the listener (TLSRouteModeMixed). HTTP listeners carry
//     HTTPRoute and GRPCRoute (h2c), HTTPS the same, TLS carries TLSRoute,
//     TCP TCPRoute.
//   - tls.options, BackendTLSPolicy options and listener filters are not
//     supported and are rejected rather than ignored: ignoring a TLS or an
//     authentication setting would weaken what the user asked for.
//   - CA certificates (frontend validation, BackendTLSPolicy) are read from
//     the ca.crt key of a ConfigMap or a Secret.
//   - An HTTPRoute and a GRPCRoute whose hostnames intersect on one
//     listener: the older keeps the listener (GRPCRoute doc); the other is
//     Accepted=False "Conflicted" (the reason the mesh uses) only when no
//     other listener serves it.
//   - Route precedence on a hostname: routes whose own hostname is more
//     specific first (GatewayRouteHostnameIntersectionPrecedence), then the
//     mesh's precedence (matches, age, namespace/name, rule order).
//   - BackendTLSPolicy applies to backends of HTTPRoutes, GRPCRoutes and
//     TLSRoutes on terminating listeners. A Service port it covers is a
//     TLS backend: its TLS appProtocol (https, tls, kubernetes.io/wss) is
//     taken as the protocol inside the TLS, so routes may send to it. An
//     invalid policy fails closed: the IR marks the backend Invalid and
//     requests to it get a 5xx. The policy's ancestors are the Gateways
//     whose accepted routes send to its Services; a policy no such route
//     uses gets no status.
//
// # Not decided here
//
// Provisioning (the data plane's Deployment and Service, infrastructure
// labels and annotations), certificate expiry (it needs a clock),
// ListenerSets, default Gateways (defaultScope, useDefaultGateways),
// UDPRoute and the AddressesAssigned condition. The IR's translation into
// the data plane's GatewayPolicy (proto.go) is here, but the trust domain,
// anchors, node tunnels and identity it needs come from the caller.
package gateway
