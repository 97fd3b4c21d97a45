package echo

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestParseAdvancedClientArgs(t *testing.T) {
	cfg, err := ParseAdvancedClientArgs([]string{"http://echo/x?a=b", "--method=POST", "-H", "Host:example.org", "-H", "x-a:1:2", "--count=3"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.URL != "http://echo/x?a=b" || cfg.Method != "POST" || cfg.Count != 3 {
		t.Errorf("got %+v", cfg)
	}
	if want := [][2]string{{"Host", "example.org"}, {"x-a", "1:2"}}; !slices.Equal(cfg.Headers, want) {
		t.Errorf("headers %v, want %v", cfg.Headers, want)
	}
	for _, bad := range [][]string{nil, {"--count=0", "http://x"}, {"http://a", "http://b"}} {
		if _, err := ParseAdvancedClientArgs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseAdvancedFlagsDefaults(t *testing.T) {
	cfg, err := ParseAdvancedFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.HTTPPorts, []int{8080}) || !slices.Equal(cfg.GRPCPorts, []int{7070}) {
		t.Errorf("defaults: %+v", cfg)
	}
	cfg, err = ParseAdvancedFlags([]string{"--tcp=9090", "--port=8080", "--grpc=7070", "--port=8443", "--tls=8443", "--crt=/cert.crt", "--key=/cert.key"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.HTTPPorts, []int{8080, 8443}) || !slices.Equal(cfg.TLSPorts, []int{8443}) || !slices.Equal(cfg.TCPPorts, []int{9090}) {
		t.Errorf("flags: %+v", cfg)
	}
}

// block returns the lines of one answer without their "[i] " / "[i body] " prefixes.
func fields(block string) map[string][]string {
	out := map[string][]string{}
	for l := range strings.SplitSeq(strings.TrimSpace(block), "\n") {
		if _, rest, ok := strings.Cut(l, "] "); ok {
			l = rest
		}
		k, v, _ := strings.Cut(l, "=")
		out[k] = append(out[k], v)
	}
	return out
}

func TestAdvancedHTTP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/redirect", http.RedirectHandler("http://example.org:8083/x", http.StatusFound))
	mux.Handle("/", AdvancedHandler(Identity{Pod: "echo-v1-abc"}, "v1", 8080))
	s := &http.Server{Handler: mux}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	base := "http://" + l.Addr().String()

	var out strings.Builder
	cfg := AdvancedClientConfig{URL: base + "/p?q=1", Headers: [][2]string{{"Host", "echo"}, {"x-a", "1"}, {"x-a", "2"}}, Count: 2}
	if err := RunAdvancedClient(context.Background(), cfg, &out); err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(out.String(), "\n\n")
	if len(blocks) != 2 {
		t.Fatalf("want 2 blocks separated by a blank line, got %d:\n%s", len(blocks), out.String())
	}
	f := fields(blocks[1])
	for k, want := range map[string]string{"StatusCode": "200", "Hostname": "echo-v1-abc", "Host": "echo", "URL": "/p?q=1", "Method": "GET", "ServiceVersion": "v1"} {
		if got := f[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if got := f["RequestHeader"]; !slices.Contains(got, "X-A:1") || !slices.Contains(got, "X-A:2") {
		t.Errorf("RequestHeader lines %q: want one per value", got)
	}

	out.Reset()
	if err := RunAdvancedClient(context.Background(), AdvancedClientConfig{URL: base + "/redirect", Count: 1}, &out); err != nil {
		t.Fatal(err)
	}
	f = fields(out.String())
	if got := f["StatusCode"]; !slices.Equal(got, []string{"302"}) {
		t.Errorf("redirect followed? StatusCode %q", got)
	}
	if got := f["ResponseHeader"]; !slices.Contains(got, "Location:http://example.org:8083/x") {
		t.Errorf("ResponseHeader %q: want the Location", got)
	}
}

func TestAdvancedGRPC(t *testing.T) {
	addr := startGRPC(t, Identity{Pod: "echo-v2-xyz"})
	var out strings.Builder
	cfg := AdvancedClientConfig{URL: "grpc://" + addr, Headers: [][2]string{{"x-test-case", "set"}, {"x-add", "a"}, {"x-add", "b"}}, Count: 3}
	if err := RunAdvancedClient(context.Background(), cfg, &out); err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(out.String(), "\n\n")
	if len(blocks) != 3 {
		t.Fatalf("want 3 blocks, got %d:\n%s", len(blocks), out.String())
	}
	f := fields(blocks[0])
	if got := f["Hostname"]; !slices.Equal(got, []string{"echo-v2-xyz"}) {
		t.Errorf("Hostname %q", got)
	}
	if got := f["StatusCode"]; !slices.Equal(got, []string{"200"}) {
		t.Errorf("StatusCode %q", got)
	}
	if got := f["RequestHeader"]; !slices.Contains(got, "x-test-case:set") || !slices.Contains(got, "x-add:a") || !slices.Contains(got, "x-add:b") {
		t.Errorf("RequestHeader %q", got)
	}
	if err := RunAdvancedClient(context.Background(), AdvancedClientConfig{URL: "grpc://127.0.0.1:1", Count: 1, Timeout: 1e9}, &out); err == nil {
		t.Error("no error from a refused call")
	}
}
