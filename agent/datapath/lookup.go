package datapath

import (
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/weft-mesh/weft/bpf"
)

// Original is where a redirected connection was going. It has the same
// shape as agent/proxy/outbound.Original.
type Original struct {
	Dst         netip.AddrPort
	NetnsCookie uint64
}

// Lookup returns the original destination and the caller's netns cookie of
// a connection the proxy accepted (client = remote address, proxy = local
// address). false means the connection was not redirected by this node's
// datapath: the proxy must refuse it. *Datapath satisfies
// outbound.OrigDstLookup through a one-line adapter (the Original types are
// separate to keep the packages independent).
func (d *Datapath) Lookup(client, proxy netip.AddrPort) (Original, bool) {
	return lookupRecord(d.records.Load(), client, proxy)
}

func lookupRecord(m *ebpf.Map, client, proxy netip.AddrPort) (Original, bool) {
	key, ok := tupleKey(client, proxy)
	if !ok || m == nil {
		return Original{}, false
	}
	var rec bpf.RedirectOrigDst
	if err := m.Lookup(&key, &rec); err != nil {
		return Original{}, false
	}
	return originalFromRecord(rec), true
}
