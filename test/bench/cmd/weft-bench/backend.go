package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"time"
)

// runBackend serves a fixed body of size bytes over HTTP/1.1 and h2c.
func runBackend(ctx context.Context, listen string, size int) error {
	body := bytes.Repeat([]byte("x"), size)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols: &p,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = []string{"application/octet-stream"}
			w.Write(body)
		}),
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), time.Second)
		defer c()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		return err
	}
	return nil
}
