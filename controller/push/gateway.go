package push

import (
	"fmt"
	"maps"
	"slices"

	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// UpdateGateways replaces the desired policy of every Gateway's data plane,
// keyed by "namespace/name", as Update does for nodes: unchanged policies
// push nothing, changed ones a new version, missing ones are kept while a
// data plane of theirs is connected. A policy that fails
// GatewayPolicy.Validate is logged and not pushed: the data plane keeps the
// last good one. The policies must not be modified after the call. It
// returns the number of Gateways that got a new version.
func (s *Server) UpdateGateways(policies map[string]*weftv1.GatewayPolicy) int {
	bodies := make(map[string][]byte, len(policies))
	for _, name := range slices.Sorted(maps.Keys(policies)) {
		if b, err := encodeGateway(policies[name]); err != nil {
			s.log.Error("gateway policy not pushed; its data plane keeps the last good one", logkey.Gateway, name, logkey.Error, err)
		} else if b != nil {
			bodies[name] = b
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := 0
	for _, name := range slices.Sorted(maps.Keys(bodies)) {
		e := s.gws[name]
		if e == nil {
			e = &nodeEntry{subs: map[*subscriber]struct{}{}}
			s.gws[name] = e
		}
		if e.rel != nil && string(e.gwBody) == string(bodies[name]) {
			continue
		}
		s.version++
		e.rel = &release{version: s.version, fullMsg: newGatewayWireSnapshot(s.version, s.nonce, policies[name], bodies[name])}
		e.gwBody = bodies[name]
		changed++
		for sub := range e.subs {
			s.enqueue(sub, e.rel)
		}
	}
	forget(s.gws, policies, nil)
	return changed
}

// encodeGateway validates p and encodes it deterministically; nil for a
// nil policy.
func encodeGateway(p *weftv1.GatewayPolicy) ([]byte, error) {
	if p == nil {
		return nil, nil
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	b, err := deterministic.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return b, nil
}

// Gateways returns the state of every known Gateway data plane, sorted.
func (s *Server) Gateways() []GatewayState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]GatewayState, 0, len(s.gws))
	for _, name := range slices.Sorted(maps.Keys(s.gws)) {
		out = append(out, GatewayState{Gateway: name, EntryState: s.gws[name].state()})
	}
	return out
}
