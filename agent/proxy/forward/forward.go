// Package forward holds what the node proxy's outbound and a Gateway's data
// plane share when they send a request to a backend: the retry loop of a
// rule's retry policy (GEP-1731) and the answer a failed forward gets.
package forward

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/weft-mesh/weft/agent/proxy/route"
)

var (
	// ErrNoEndpoint: the cluster is unknown or has no endpoint to send to.
	ErrNoEndpoint = errors.New("no healthy endpoint")
	// ErrRetryWait: the request's time ran out while waiting to retry.
	ErrRetryWait = errors.New("request timeout while waiting to retry")
	// ErrConnect marks a failure to connect to the chosen endpoint
	// (refused, timed out, tunnel CONNECT refused, TLS handshake failed):
	// the request never reached the backend application.
	ErrConnect = errors.New("connecting to the backend failed")
)

// Retry calls attempt until it gives an answer policy does not retry. Only a
// replayable request (no body, or a buffered one) is sent more than once; a
// nil policy sends once. A failed connect (ErrConnect) is retried while
// attempts remain, whatever the codes (GEP-1731: connection errors SHOULD be
// retried); another failed attempt (no response) counts as a 503. ctx bounds
// the waits between attempts: when it ends during one, the error is
// ErrRetryWait.
func Retry(ctx context.Context, policy *route.RetryPolicy, replayable bool, attempt func() (*http.Response, error)) (*http.Response, error) {
	for n := 0; ; n++ {
		resp, err := attempt()
		if !replayable || policy == nil {
			return resp, err
		}
		status := http.StatusServiceUnavailable
		if err == nil {
			status = resp.StatusCode
		} else if ctx.Err() != nil {
			return resp, err
		}
		retry, wait := policy.ShouldRetry(status, n)
		if errors.Is(err, ErrConnect) {
			retry, wait = policy.ShouldRetryConnect(n)
		}
		if !retry {
			return resp, err
		}
		if err == nil {
			resp.Body.Close()
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ErrRetryWait
		}
	}
}

// Answer maps a failed forward to the client's answer: code 0 when the client
// went away (reqCtx ended) and nothing is to be answered. ctx is the forward's
// own context, which may carry the rule's request timeout.
func Answer(err error, ctx, reqCtx context.Context) (code int, msg string) {
	switch {
	case errors.Is(err, ErrRetryWait):
		return http.StatusGatewayTimeout, "request timeout"
	case errors.Is(err, ErrNoEndpoint):
		return http.StatusServiceUnavailable, "no healthy endpoint"
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "upstream timeout"
	case reqCtx.Err() != nil:
		return 0, ""
	default:
		return http.StatusBadGateway, "upstream failed"
	}
}

// CancelOnClose returns body that also calls cancel once it is closed: an
// attempt's context (a backend request timeout) then covers reading the
// response, and ends with it.
// The body of a 101 Switching Protocols response is the upgraded
// connection (an io.ReadWriteCloser): it stays writable, or the upgrade
// could not be completed.
func CancelOnClose(body io.ReadCloser, cancel context.CancelFunc) io.ReadCloser {
	if rw, ok := body.(io.ReadWriteCloser); ok {
		return &cancelRWBody{cancelBody{ReadCloser: rw, cancel: cancel}, rw}
	}
	return &cancelBody{ReadCloser: body, cancel: cancel}
}

type cancelRWBody struct {
	cancelBody
	w io.Writer
}

func (b *cancelRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
