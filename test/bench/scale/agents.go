package scale

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/push/pushtest"
)

// Received is one snapshot a simulated agent received.
type Received struct {
	Node    int
	Version uint64
	// Base is the delta's base version; 0 for a full snapshot.
	Base  uint64
	Bytes int
	Full  bool
	// At is when the agent had it and sent its answer (Unix ns).
	At int64
	// Nack: the agent refused it (a delta on another version than its own).
	Nack bool
}

// RunAgents runs one simulated agent per node (node-0 ... node-(nodes-1),
// token "tok-<n>") against addr until ctx ends, each on its own
// connection as on a real cluster. An agent ACKs a full snapshot, ACKs a
// delta whose base is its version, and NACKs (resync) any other delta, as
// agent/policy does; it reconnects with its version and the controller's
// nonce. ready is called once every stream has subscribed. It returns
// every snapshot received.
func RunAgents(ctx context.Context, addr string, nodes int, ready func()) []Received {
	var mu sync.Mutex
	var got []Received
	var subscribed sync.WaitGroup
	subscribed.Add(nodes)
	var wg sync.WaitGroup
	for n := 0; n < nodes; n++ {
		wg.Go(func() {
			once := sync.OnceFunc(subscribed.Done)
			defer once()
			var version uint64
			var nonce string
			for ctx.Err() == nil {
				rs, err := agentStream(ctx, addr, n, &version, &nonce, once)
				mu.Lock()
				got = append(got, rs...)
				mu.Unlock()
				if err != nil && ctx.Err() == nil {
					time.Sleep(time.Second)
				}
			}
		})
	}
	go func() {
		subscribed.Wait()
		if ready != nil {
			ready()
		}
	}()
	wg.Wait()
	return got
}

func agentStream(ctx context.Context, addr string, n int, version *uint64, nonce *string, subscribed func()) ([]Received, error) {
	// an agent's own options, then the benchmark's codec (it reads only
	// what it measures)
	conn, err := grpc.NewClient(addr, append(weftv1.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(pushtest.HeaderCodec{})))...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	desc := &grpc.StreamDesc{StreamName: "Stream", ServerStreams: true, ClientStreams: true}
	st, err := conn.NewStream(metadata.AppendToOutgoingContext(ctx, "authorization", fmt.Sprintf("Bearer tok-%d", n)), desc, "/weft.v1.Policy/Stream")
	if err != nil {
		return nil, err
	}
	node := nodeName(n)
	if err := st.SendMsg(&weftv1.PolicyRequest{Node: node, Version: *version, ControllerNonce: *nonce, Deltas: true, EndpointPatches: true}); err != nil {
		return nil, err
	}
	subscribed()
	var out []Received
	for {
		var h pushtest.Header
		if err := st.RecvMsg(&h); err != nil {
			return out, err
		}
		r := Received{Node: n, Version: h.Version, Base: h.BaseVersion, Bytes: h.Size, Full: h.Full}
		ans := &weftv1.PolicyRequest{Version: h.Version}
		switch {
		case h.Delta && (h.BaseVersion != *version || h.Nonce != *nonce):
			ans.Error, ans.Resync, r.Nack = fmt.Sprintf("delta against %d, in force %d", h.BaseVersion, *version), true, true
		default:
			*version, *nonce = h.Version, h.Nonce
		}
		r.At = time.Now().UnixNano()
		out = append(out, r)
		if err := st.SendMsg(ans); err != nil {
			return out, err
		}
	}
}

// WriteReceived writes rs as lines "node version base bytes full at nack".
func WriteReceived(w io.Writer, rs []Received) error {
	bw := bufio.NewWriter(w)
	for _, r := range rs {
		fmt.Fprintf(bw, "%d %d %d %d %t %d %t\n", r.Node, r.Version, r.Base, r.Bytes, r.Full, r.At, r.Nack)
	}
	return bw.Flush()
}

// ReadReceived reads what WriteReceived wrote.
func ReadReceived(r io.Reader) ([]Received, error) {
	var out []Received
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var x Received
		if _, err := fmt.Sscan(sc.Text(), &x.Node, &x.Version, &x.Base, &x.Bytes, &x.Full, &x.At, &x.Nack); err != nil {
			return nil, fmt.Errorf("read received %q: %w", sc.Text(), err)
		}
		out = append(out, x)
	}
	return out, sc.Err()
}
