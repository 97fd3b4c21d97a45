package proxy_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

func TestShutdownDrainsInFlight(t *testing.T) {
	e, caller := routedEnv(t)
	c := e.client(caller, vip)
	got := make(chan int, 1)
	go func() {
		resp, err := c.Get("http://" + vip + "/only?delay=400ms")
		if err != nil {
			got <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	time.Sleep(150 * time.Millisecond) // the request is in flight
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.p.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if code := <-got; code != http.StatusOK {
		t.Fatalf("in-flight request got %d during the drain", code)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("drain took %v", time.Since(start))
	}
	if _, err := e.dialErr(caller, vip); err == nil {
		t.Error("new connections accepted after shutdown")
	}
}

func TestShutdownGracePeriodEnds(t *testing.T) {
	e, caller := routedEnv(t)
	c := e.client(caller, vip)
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Get("http://" + vip + "/only?delay=30s")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		errc <- err
	}()
	time.Sleep(150 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := e.p.Shutdown(ctx); err == nil {
		t.Fatal("shutdown reported a clean drain with a request still running")
	}
	select {
	case <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("request still running after the grace period")
	}
}
