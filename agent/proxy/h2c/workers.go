package h2c

import (
	"net/http"
	"time"
)

// A handler runs in a goroutine of its own. A fresh goroutine starts on a
// small stack that the proxy's request path grows at once (runtime.newstack
// and copystack were 7% of the source proxy's CPU at 1000 req/s): a
// connection keeps its handler goroutines and reuses them instead, each
// waiting up to workerIdle for its next request, and none past the
// connection's end.
const workerIdle = 10 * time.Second

type task struct {
	s   *stream
	req *http.Request
	end func()
}

// dispatch runs t on an idle worker of the connection, or on a new one.
func (sc *ServerConn) dispatch(t task) {
	select {
	case sc.tasks <- t:
	default:
		go sc.worker(t)
	}
}

func (sc *ServerConn) worker(t task) {
	timer := time.NewTimer(workerIdle)
	defer timer.Stop()
	for {
		sc.run(t.s, t.req, t.end)
		t = task{} // drop references while idle
		timer.Reset(workerIdle)
		select {
		case t = <-sc.tasks:
		case <-timer.C:
			return
		case <-sc.c.done:
			return
		}
	}
}
