package resolve

// What the policy means (the contract with the node proxy), and the choices
// resolution makes where the Gateway API leaves them to the implementation.
//
// Service ports. A Service port is meshed (a ServicePort in every node's
// policy) when a route is programmed on it or the Service's namespace is
// enrolled; only TCP ports of Services with a cluster IP qualify. Every node
// gets the same services and clusters: callers anywhere may reach any
// Service. The slices and maps are shared between the NodePolicies of one
// Output and must not be mutated.
//
// Tables. ServicePort.producer holds the routes whose parent Service is in
// the route's namespace; consumers[ns] holds the routes from namespace ns
// whose parent Service is elsewhere and replaces the producer table for
// callers in ns. Routes merge only within one of these classes.
// ServicePort.protocol is what callers without a consumer table get: the
// producer routes' kind, else the port's appProtocol (http,
// kubernetes.io/ws -> HTTP; kubernetes.io/h2c -> H2C; grpc -> GRPC), else
// TCP; a consumer table's kind decides for its own callers.
//
// Matches are sorted: the first match that matches wins. HTTP: Exact path,
// then RegularExpression (Weft's choice: after Exact and before any prefix,
// longer pattern first, so a catch-all "/" never shadows a regex), then the
// longest PathPrefix, then method, most headers, most query params; then
// the oldest route, then "{namespace}/{name}", then rule order, then match
// order. gRPC: most characters in the service, then in the method (exact
// before regex on equal length), most headers, then the same tie breakers.
// A rule without matches is PathPrefix "/" (HTTP) or match-all (gRPC).
//
// Backends. BackendRef.invalid_reason is set (and cluster empty) for a
// reference that cannot be used; it keeps its weight and its share of
// requests gets a 500 (connections are refused for TCP). A rule whose
// weights sum to zero, or that has no backendRefs and no redirect, answers
// 500. Rule.session applies to every backend without a session of its own;
// BackendRef.session comes from an XBackendTrafficPolicy on the Service or
// from the XBackend.
//
// Plain traffic to a Service port with an HTTP, h2c or gRPC appProtocol and
// no producer route gets a one-rule producer table (route
// "XBackendTrafficPolicy/<ns>/<name>") when an XBackendTrafficPolicy with
// sessionPersistence applies to the Service, so the policy is honoured
// without a route.
//
// Invalid input. Anything the proxy would refuse is caught here, so one bad
// route never makes a node reject its whole policy: the rule is dropped
// (PartiallyInvalid, or Accepted=False when no rule is left), a bad backend
// is an invalid BackendRef, an endpoint without a known pod (no identity to
// check over mTLS) is left out. A test compiles every golden and fuzz
// output with the proxy's own compiler.
