package datapath_test

import (
	"net/netip"

	"github.com/weft-mesh/weft/agent/datapath"
	"github.com/weft-mesh/weft/agent/proxy/outbound"
)

// origDst is the one-line adapter the agent uses to hand the datapath to
// the outbound proxy; this file fails to compile if the agreed shapes drift.
type origDst struct{ dp *datapath.Datapath }

func (o origDst) Lookup(client, proxy netip.AddrPort) (outbound.Original, bool) {
	r, ok := o.dp.Lookup(client, proxy)
	return outbound.Original(r), ok
}

var _ outbound.OrigDstLookup = origDst{}
