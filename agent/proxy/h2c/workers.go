package h2c

import (
	"net/http"
	"time"
)

// A handler runs in a goroutine of its own. A fresh goroutine starts on a
// small stack that the proxy's request path grows at once (runtime.newstack
// and copystack were 7% of the source proxy's CPU at 1000 req/s): handler
// goroutines are kept and reused instead, each waiting workerIdle for its
// next request before it exits.
const workerIdle = 10 * time.Second

type task struct {
	sc  *ServerConn
	s   *stream
	req *http.Request
	end func()
}

// tasks hands a request to an idle worker; unbuffered, so a send succeeds
// only when one is waiting.
var tasks = make(chan task)

// dispatch runs t on an idle worker, or on a new one.
func dispatch(t task) {
	select {
	case tasks <- t:
	default:
		go worker(t)
	}
}

func worker(t task) {
	timer := time.NewTimer(workerIdle)
	defer timer.Stop()
	for {
		t.sc.run(t.s, t.req, t.end)
		t = task{} // drop references while idle
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(workerIdle)
		select {
		case t = <-tasks:
		case <-timer.C:
			return
		}
	}
}
