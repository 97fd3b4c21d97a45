package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/api/promserve"
)

// TestHistoryAnswersThePastSample: the history keeps only the request
// families, answers the newest sample at or before now-ago with its age,
// forgets samples older than its span, and refuses a bad ago.
func TestHistoryAnswersThePastSample(t *testing.T) {
	reg := promserve.Registry()
	m := NewProxy(reg, nil)
	p := &Peer{SourceNamespace: "faces", SourceWorkload: "client", DestNamespace: "faces", DestService: "color", Route: "faces/canary", Backend: "faces/color:80"}
	clock := time.Unix(1000, 0)
	h := NewHistory(reg, 5*time.Second, 20*time.Second)
	h.now = func() time.Time { return clock }
	for i := range 10 { // t=1000..1045: one more request before each sample
		m.HTTPRequest(p, 200, "", time.Millisecond)
		h.Sample()
		if i < 9 {
			clock = clock.Add(5 * time.Second)
		}
	}
	get := func(q string) (int, string, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, HistoryPath+q, nil))
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, rec.Header().Get(SampleAgeHeader), string(b)
	}
	code, age, body := get("?ago=12s") // newest at or before 1033: 1030, the 7th request
	if code != 200 || age != "15.000" {
		t.Fatalf("ago=12s: %d age %q", code, age)
	}
	if !strings.Contains(body, `weft_http_requests_total{backend="faces/color:80",code="200",destination_namespace="faces",destination_service="color",grpc_status="",route="faces/canary",source_namespace="faces",source_workload="client"} 7`) {
		t.Errorf("ago=12s body:\n%s", body)
	}
	if strings.Contains(body, "go_goroutines") {
		t.Error("the history keeps families it should not")
	}
	// Span 20s at 5s: five samples kept (1025..1045); a minute ago gives the oldest.
	if _, age, body := get("?ago=60s"); age != "20.000" || !strings.Contains(body, "} 6\n") {
		t.Errorf("ago=60s: age %q body:\n%s", age, body)
	}
	if code, _, _ := get("?ago=-1s"); code != http.StatusBadRequest {
		t.Errorf("ago=-1s: %d", code)
	}
	if code, _, _ := get(""); code != http.StatusBadRequest {
		t.Errorf("no ago: %d", code)
	}
}

func TestHistoryStartsWithItsAge(t *testing.T) {
	reg := promserve.Registry()
	NewProxy(reg, nil).HTTPRequest(&Peer{}, 200, "", time.Millisecond)
	h := NewHistory(reg, time.Second, time.Minute)
	h.Sample()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, HistoryPath+"?ago=0s", nil))
	first, _, _ := strings.Cut(rec.Body.String(), "\n")
	if !strings.HasPrefix(first, SampleAgeComment+" ") {
		t.Fatalf("first line %q", first)
	}
}
