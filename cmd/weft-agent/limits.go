package main

import (
	"flag"

	"github.com/weft-mesh/weft/agent/proxy/limits"
)

// limitFlags registers the node proxy's limits (README.md, "Limits").
func limitFlags(fs *flag.FlagSet) *limits.Limits {
	l := &limits.Limits{}
	fs.IntVar(&l.HeaderBytes, "proxy-max-header-bytes", limits.DefaultHeaderBytes, "largest request header a captured client may send (HTTP/1.1 and HTTP/2); larger gets 431")
	fs.IntVar(&l.TunnelHeaderBytes, "proxy-max-tunnel-header-bytes", limits.DefaultTunnelHeaderBytes, "largest CONNECT header block a peer proxy may send to :15008; larger gets 431")
	fs.Int64Var(&l.BufferBytes, "proxy-buffer-bytes", limits.DefaultBufferBytes, "node-wide budget of buffered request header and body bytes")
	fs.Int64Var(&l.PodBufferBytes, "proxy-pod-buffer-bytes", limits.DefaultPodBufferBytes, "one source pod's share of --proxy-buffer-bytes; a header over it gets 503")
	fs.IntVar(&l.PodConns, "proxy-pod-connections", limits.DefaultPodConns, "concurrent captured connections of one source pod; more are closed at accept")
	fs.Int64Var(&l.RetryBodyBytes, "proxy-retry-body-bytes", limits.DefaultRetryBodyBytes, "largest request body buffered for retries and mirrors; larger bodies are sent once")
	return l
}
