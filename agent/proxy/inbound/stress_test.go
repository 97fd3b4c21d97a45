package inbound_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/weft-mesh/weft/agent/proxy/tunnel"
)

// TestTunnelLargeTransfersBothWays moves 24 MiB each way on one stream, far
// beyond both flow-control windows, while the pod echoes.
func TestTunnelLargeTransfersBothWays(t *testing.T) {
	checkGoroutines(t)
	f := start(t, serverID, nil)
	d := dialer(t, f.ca, f.ca.MustIssue(clientID))
	c, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 24<<20)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	go func() {
		c.Write(payload)
		c.CloseWrite()
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n != int64(len(payload)) {
		t.Fatalf("read back %d bytes: %v", n, err)
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("payload corrupted")
	}
	d.Close()
}

// TestTunnelManyConcurrentStreams multiplexes 300 streams over the pool.
func TestTunnelManyConcurrentStreams(t *testing.T) {
	checkGoroutines(t)
	f := start(t, serverID, nil)
	d := dialer(t, f.ca, f.ca.MustIssue(clientID))
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := bytes.Repeat([]byte{byte(i)}, 1000+i)
			go func() { c.Write(msg); c.CloseWrite() }()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, msg) {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("stream: %v", err)
	}
	d.Close()
}

// TestTunnelCloseResetsPeer: closing a stream early resets it; the pod side
// sees its connection end, and the connection keeps serving other streams.
func TestTunnelCloseResetsPeer(t *testing.T) {
	checkGoroutines(t)
	f := start(t, serverID, nil)
	d := dialer(t, f.ca, f.ca.MustIssue(clientID))
	tg := tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID}
	c, err := d.Dial(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	c.Close()
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("write after close succeeded")
	}
	c2, err := d.Dial(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c2)
	c2.Close()
	d.Close()
}

// TestTunnelServerShutdownEndsStreams: Shutdown with a stream open waits for
// the grace period, then closes it; the client sees an error, not a hang.
func TestTunnelServerShutdownEndsStreams(t *testing.T) {
	checkGoroutines(t)
	f := start(t, serverID, nil)
	d := dialer(t, f.ca, f.ca.MustIssue(clientID))
	c, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = f.server.Shutdown(ctx)
	// the error names what the grace period cut, and whose it was
	want := "inbound: 1 tunnel streams open (" + clientID.String() + " from 127.0.0.1: 1): context deadline exceeded"
	if err == nil || err.Error() != want {
		t.Errorf("shutdown with an open stream: %v, want %q", err, want)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("read succeeded on a closed tunnel")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open after the server closed")
	}
	c.Close()
	d.Close()
}
