// Package gateway decides everything about Weft's north-south Gateways that
// can be decided from a snapshot of objects: the status of GatewayClasses,
// Gateways and their listeners, the parent statuses of routes whose
// parents are Gateways, the status of BackendTLSPolicies, and the
// intermediate representation (IR) a Gateway's data plane serves. It is
// pure: plain values in, plain values out; no clients, no logging.
package gateway
