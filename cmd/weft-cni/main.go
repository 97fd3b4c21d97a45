// Command weft-cni is Weft's chained CNI plugin: the container runtime runs
// it after the primary CNI plugin, and it enrolls the pod's network
// namespace in the mesh (through the node's weft agent) before any of the
// pod's containers starts. See package agent/cni.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/weft-mesh/weft/agent/cni"
)

func main() {
	skel.PluginMainFuncs(cni.Funcs(), cni.Versions, cni.About)
}
