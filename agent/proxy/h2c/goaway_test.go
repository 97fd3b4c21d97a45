package h2c

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestGoAwayLosesNoRequest: a server connection drained (GOAWAY) while a
// client keeps opening streams, 100 times. Every request is either
// answered or announced as not taken, which the client then sends on a
// new connection: none fails. Before, a connection with no stream left
// closed right after its GOAWAY; the client's next frames, unread, made
// the kernel reset it, and the client lost the GOAWAY with them (212 of
// 8,394 requests failed, "connection reset by peer").
func TestGoAwayLosesNoRequest(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conns := make(chan *ServerConn, 1)
	cfg := &ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}
	var served sync.WaitGroup
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			sc, err := NewServerConn(nc, nil, cfg)
			if err != nil {
				continue
			}
			served.Go(func() { sc.Serve(context.Background()) })
			conns <- sc
		}
	}()
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var sent, failed int
	var mu sync.Mutex
	var firstErr error
	for range 100 {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					resp, err := c.Get("http://" + l.Addr().String() + "/")
					if err == nil {
						_, err = io.ReadAll(resp.Body)
						resp.Body.Close()
					}
					mu.Lock()
					sent++
					if err != nil {
						failed++
						if failed < 4 {
							t.Log(err)
						}
						firstErr = err
					}
					mu.Unlock()
				}
			})
		}
		sc := <-conns // the one the client uses now
		time.Sleep(2 * time.Millisecond)
		sc.GoAway()
		<-sc.Done()
		close(stop)
		wg.Wait()
		// the client dialled again after the GOAWAY: drain that one too
		for {
			select {
			case sc := <-conns:
				sc.GoAway()
				<-sc.Done()
				continue
			default:
			}
			break
		}
	}
	l.Close()
	served.Wait()
	if failed > 0 {
		t.Fatalf("%d of %d requests failed across 100 drains; one: %v", failed, sent, firstErr)
	}
	t.Logf("%d requests across 100 drains", sent)
}
