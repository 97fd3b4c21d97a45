package outbound

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestErrorAnswer(t *testing.T) {
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
		{"retry wait ran out", errRetryWait, timedOut, gone, http.StatusGatewayTimeout},
		{"no endpoint", fmt.Errorf("pick: %w", errNoEndpoint), live, live, http.StatusServiceUnavailable},
		{"backend timeout", context.DeadlineExceeded, live, live, http.StatusGatewayTimeout},
		{"request timeout", errors.New("read: closed"), timedOut, live, http.StatusGatewayTimeout},
		{"client gone", context.Canceled, gone, gone, 0},
		{"upstream failed", errors.New("connection refused"), live, live, http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := errorAnswer(tc.err, tc.ctx, tc.reqCtx); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
}
