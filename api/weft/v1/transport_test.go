package weftv1_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// pingPong answers each request with a snapshot: the policy stream's shape,
// a push then its ACK.
type pingPong struct {
	weftv1.UnimplementedPolicyServer
}

func (pingPong) Stream(st grpc.BidiStreamingServer[weftv1.PolicyRequest, weftv1.PolicySnapshot]) error {
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		if err := st.Send(&weftv1.PolicySnapshot{Version: req.GetVersion() + 1}); err != nil {
			return err
		}
	}
}

// frameCounter counts the HTTP/2 frames the server sent, by type, from a
// copy of what the client connection reads.
type frameCounter struct {
	net.Conn
	w    *io.PipeWriter
	mu   sync.Mutex
	seen map[http2.FrameType]int
}

func (c *frameCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.w.Write(p[:n])
	}
	return n, err
}

func (c *frameCounter) count(t http2.FrameType) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[t]
}

// TestPolicyStreamSendsNoFlowControlPings runs rounds of push and ACK over
// the options agents and the controller use, and counts what the controller
// sent beside the pushes: with gRPC's dynamic windows each ACK drew a PING
// (and the agent's PING per push an answer), so a round cost the controller
// three writes per node instead of one.
func TestPolicyStreamSendsNoFlowControlPings(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(weftv1.ServerOptions()...)
	weftv1.RegisterPolicyServer(srv, pingPong{})
	go srv.Serve(lis)
	defer srv.Stop()

	pr, pw := io.Pipe()
	parsed := make(chan struct{})
	var counter atomic.Pointer[frameCounter]
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		fc := &frameCounter{Conn: nc, w: pw, seen: map[http2.FrameType]int{}}
		counter.Store(fc)
		go func() {
			defer close(parsed)
			fr := http2.NewFramer(nil, pr)
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					io.Copy(io.Discard, pr) // never block the connection's reads
					return
				}
				fc.mu.Lock()
				fc.seen[f.Header().Type]++
				fc.mu.Unlock()
			}
		}()
		return fc, nil
	}
	conn, err := grpc.NewClient(lis.Addr().String(), append(weftv1.DialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dial))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := weftv1.NewPolicyClient(conn).Stream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 50
	for v := uint64(0); v < 2*rounds; v += 2 {
		if err := st.Send(&weftv1.PolicyRequest{Node: "n", Version: v}); err != nil {
			t.Fatal(err)
		}
		got, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got.GetVersion() != v+1 {
			t.Fatalf("round %d: got version %d", v/2, got.GetVersion())
		}
	}
	st.CloseSend()
	conn.Close()
	pw.Close()
	<-parsed
	fc := counter.Load()
	// the counter must see the pushes, or it would count nothing at all
	if data := fc.count(http2.FrameData); data < rounds {
		t.Fatalf("saw %d DATA frames from the controller, want at least the %d pushes", data, rounds)
	}
	if pings := fc.count(http2.FramePing); pings > 0 {
		t.Errorf("the controller sent %d PING frames in %d push rounds; want none (static flow-control windows)", pings, rounds)
	}
	if wu := fc.count(http2.FrameWindowUpdate); wu > 2 {
		t.Errorf("the controller sent %d WINDOW_UPDATE frames in %d push rounds; want at most the connection's first ones", wu, rounds)
	}
}
