package limits

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/time/rate"

	"github.com/weft-mesh/weft/api/logkey"
)

func TestBudgetPodShareAndConns(t *testing.T) {
	b := NewBudget(Limits{BufferBytes: 100, PodBufferBytes: 60, PodConns: 2})
	a1, ok := b.Open(1)
	if !ok {
		t.Fatal("first connection of pod 1 refused")
	}
	a2, _ := b.Open(1)
	if _, ok := b.Open(1); ok {
		t.Fatal("third connection of pod 1 accepted over PodConns=2")
	}
	if !a1.Reserve(40) || a2.Reserve(21) {
		t.Fatal("pod share not enforced: 40 then 21 more of 60")
	}
	c, _ := b.Open(2)
	if !c.Reserve(60) {
		t.Fatal("pod 2 starved by pod 1")
	}
	if c.Reserve(1) {
		t.Fatal("node budget exceeded")
	}
	a1.Close()
	a1.Close() // idempotent
	if !a2.Reserve(1) {
		t.Fatal("closed lease did not return its bytes")
	}
	if _, ok := b.Open(1); !ok {
		t.Fatal("closed lease did not return its slot")
	}
	if !b.Check() {
		t.Fatalf("invariant broken: %+v", b.Usage())
	}
}

// FuzzBudget runs random opens, reserves, releases and closes over a few
// pods and checks the accounting invariant after every step, and that all
// of it returns to zero.
func FuzzBudget(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 200, 17, 33})
	f.Add(bytes.Repeat([]byte{1, 255}, 50))
	f.Fuzz(func(t *testing.T, ops []byte) {
		b := NewBudget(Limits{BufferBytes: 1000, PodBufferBytes: 400, PodConns: 3})
		var leases []*Lease
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], int64(ops[i+1])
			switch op % 4 {
			case 0:
				if l, ok := b.Open(uint64(arg % 4)); ok {
					leases = append(leases, l)
				}
			case 1:
				if len(leases) > 0 {
					leases[int(arg)%len(leases)].Reserve(arg * 3)
				}
			case 2:
				if len(leases) > 0 {
					leases[int(arg)%len(leases)].Release(arg)
				}
			case 3:
				if len(leases) > 0 {
					k := int(arg) % len(leases)
					leases[k].Close()
					leases = append(leases[:k], leases[k+1:]...)
				}
			}
			if !b.Check() {
				t.Fatalf("step %d: invariant broken: %+v", i/2, b.Usage())
			}
		}
		for _, l := range leases {
			l.Close()
		}
		if u := b.Usage(); u.Held != 0 || u.Pods != 0 {
			t.Fatalf("not all returned: %+v", u)
		}
	})
}

func TestRefusalsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	r := NewRefusals(RefusalsConfig{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Rate: 1e-9, Burst: 2})
	for range 5 {
		r.Refuse(NotTLS, "tunnel refused", slog.String(logkey.Peer, "10.0.0.1:1234"))
	}
	r.Refuse(HeaderTooLarge, "request refused")
	if got := r.Count(NotTLS); got != 5 {
		t.Fatalf("count = %d, want 5", got)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 2 lines of not_tls and 1 of header_too_large, got:\n%s", buf.String())
	}
	if !strings.Contains(lines[0], "reason=not_tls") || !strings.Contains(lines[0], "peer=10.0.0.1:1234") || !strings.Contains(lines[0], "level=WARN") {
		t.Fatalf("line lacks reason, peer or level: %s", lines[0])
	}
	if r.suppressed[NotTLS].Load() != 3 {
		t.Fatalf("suppressed = %d, want 3", r.suppressed[NotTLS].Load())
	}
	if r.Counts()["not_tls"] != 5 {
		t.Fatalf("counts: %v", r.Counts())
	}
	var nilR *Refusals
	nilR.Refuse(NotTLS, "x") // no panic
}

func TestRefusalsReportSuppressed(t *testing.T) {
	var buf bytes.Buffer
	r := NewRefusals(RefusalsConfig{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Rate: 1e-9, Burst: 1})
	r.Refuse(BadRequest, "a")
	r.Refuse(BadRequest, "b")
	r.limiters[BadRequest].SetLimit(rate.Inf) // let the next line through
	r.Refuse(BadRequest, "c")
	if !strings.Contains(buf.String(), "suppressed=1") {
		t.Fatalf("the line after a suppressed one does not count it:\n%s", buf.String())
	}
}
