package resolve

import (
	"bytes"
	"slices"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// WithTrustAnchors returns the node policies with anchors (the CA's DER
// certificates) as their TrustAnchors; nodes unchanged when anchors is
// empty. It never modifies a policy: one that lacks these anchors is
// replaced by a copy that has them, and one that has them is kept as it is.
// Policies of an Output may be the very objects of an earlier Output (a
// resolution that reused it), which the push server holds as what it sent;
// changing them in place would make the push server see no change, and an
// agent would never get a rotated (or first) bundle.
func WithTrustAnchors(nodes map[string]*weftv1.NodePolicy, anchors [][]byte) map[string]*weftv1.NodePolicy {
	if len(anchors) == 0 {
		return nodes
	}
	out := make(map[string]*weftv1.NodePolicy, len(nodes))
	for n, p := range nodes {
		if p != nil && !slices.EqualFunc(p.GetTrustAnchors(), anchors, bytes.Equal) {
			p = shallowCopy(p)
			p.TrustAnchors = anchors
		}
		out[n] = p
	}
	return out
}
