package forward

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/weft-mesh/weft/agent/proxy/route"
)

func TestAnswer(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	timedOut, cancel2 := context.WithTimeout(context.Background(), 0)
	defer cancel2()
	<-timedOut.Done()
	for _, tc := range []struct {
		name        string
		err         error
		ctx, reqCtx context.Context
		want        int
	}{
		{"retry wait ran out", ErrRetryWait, timedOut, gone, http.StatusGatewayTimeout},
		{"no endpoint", fmt.Errorf("pick: %w", ErrNoEndpoint), live, live, http.StatusServiceUnavailable},
		{"backend timeout", context.DeadlineExceeded, live, live, http.StatusGatewayTimeout},
		{"request timeout", errors.New("read: closed"), timedOut, live, http.StatusGatewayTimeout},
		{"client gone", context.Canceled, gone, gone, 0},
		{"upstream failed", errors.New("connection refused"), live, live, http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := Answer(tc.err, tc.ctx, tc.reqCtx); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
}

// Retry sends a replayable request again while the policy says so, a request that
// cannot be replayed once, and gives up with ErrRetryWait when time runs out
// between attempts.
func TestRetry(t *testing.T) {
	policy := &route.RetryPolicy{Attempts: 2, Codes: []int{http.StatusServiceUnavailable}}
	answers := func(codes ...int) (func() (*http.Response, error), *int) {
		n := 0
		return func() (*http.Response, error) {
			c := codes[min(n, len(codes)-1)]
			n++
			switch c {
			case 0:
				return nil, errors.New("connection reset")
			case -1:
				return nil, fmt.Errorf("%w: dial 10.0.0.1:3000: connection refused", ErrConnect)
			}
			return &http.Response{StatusCode: c, Body: http.NoBody}, nil
		}, &n
	}
	for _, tc := range []struct {
		name       string
		policy     *route.RetryPolicy
		replayable bool
		codes      []int
		wantCode   int
		wantTries  int
	}{
		{"503 then 200", policy, true, []int{503, 200}, 200, 2},
		{"failure without an answer then 200", policy, true, []int{0, 200}, 200, 2},
		{"connect failure then 200", policy, true, []int{-1, 200}, 200, 2},
		// GEP-1731: connection errors are retried even when no code is listed
		{"connect failure, no codes", &route.RetryPolicy{Attempts: 3}, true, []int{-1, -1, 200}, 200, 3},
		{"other failure, no codes", &route.RetryPolicy{Attempts: 3}, true, []int{0, 200}, 0, 1},
		{"attempts run out", policy, true, []int{503}, 503, 3},
		{"not replayable", policy, false, []int{503, 200}, 503, 1},
		{"no policy", nil, true, []int{503, 200}, 503, 1},
		{"not a retried code", policy, true, []int{500, 200}, 500, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attempt, n := answers(tc.codes...)
			resp, err := Retry(context.Background(), tc.policy, tc.replayable, attempt)
			if tc.wantCode == 0 {
				if err == nil || *n != tc.wantTries {
					t.Fatalf("got %v %v after %d tries, want the error after %d", resp, err, *n, tc.wantTries)
				}
				return
			}
			if err != nil || resp.StatusCode != tc.wantCode || *n != tc.wantTries {
				t.Fatalf("got %v %v after %d tries, want %d after %d", resp, err, *n, tc.wantCode, tc.wantTries)
			}
		})
	}
	slow := &route.RetryPolicy{Attempts: 2, Codes: []int{503}, Backoff: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	attempt, _ := answers(503)
	if _, err := Retry(ctx, slow, true, attempt); !errors.Is(err, ErrRetryWait) {
		t.Fatalf("time ran out between attempts: %v, want ErrRetryWait", err)
	}
}
