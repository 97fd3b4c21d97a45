package echo

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

func TestBasicHTTPS(t *testing.T) {
	pki := newTestPKI(t)
	addrs := startBasic(t, BasicConfig{Mode: BasicHTTP, Identity: basicID, CertFile: pki.certFile, KeyFile: pki.keyFile, ClientCAFile: pki.caFile})
	url := "https://" + addrs["https"] + "/tls?q=1"
	client := func(cfg *tls.Config, h2 bool) *http.Client {
		p := new(http.Protocols)
		p.SetHTTP1(!h2)
		p.SetHTTP2(h2)
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, Protocols: p}}
	}

	t.Run("h2 with client certificate", func(t *testing.T) {
		cfg := pki.clientTLS("abc.example.com")
		cfg.Certificates = []tls.Certificate{pki.client}
		resp, a := getBasic(t, client(cfg, true), url, nil)
		if resp.StatusCode != 200 || a.Proto != "HTTP/2.0" || a.Path != "/tls?q=1" || a.Pod != basicID.Pod {
			t.Fatalf("answer %d %+v", resp.StatusCode, a)
		}
		if a.TLS == nil {
			t.Fatal("no tls in the answer")
		}
		if a.TLS.ServerName != "abc.example.com" || a.TLS.NegotiatedProtocol != "h2" || a.TLS.Version != "TLSv1.3" || a.TLS.CipherSuite == "" {
			t.Errorf("tls %+v", *a.TLS)
		}
		if !slices.Equal(a.TLS.PeerCertificates, []string{pki.clientPEM}) {
			t.Errorf("peer certificates %q, want the client's PEM", a.TLS.PeerCertificates)
		}
	})
	t.Run("http/1.1 without client certificate", func(t *testing.T) {
		resp, a := getBasic(t, client(pki.clientTLS("abc.example.com", "http/1.1"), false), url, nil)
		if resp.StatusCode != 200 || a.Proto != "HTTP/1.1" || a.TLS == nil {
			t.Fatalf("answer %d %+v", resp.StatusCode, a)
		}
		if a.TLS.NegotiatedProtocol != "http/1.1" || len(a.TLS.PeerCertificates) != 0 {
			t.Errorf("tls %+v", *a.TLS)
		}
	})
	t.Run("SNI is reported as sent", func(t *testing.T) {
		cfg := &tls.Config{ServerName: "other.example.com", InsecureSkipVerify: true}
		_, a := getBasic(t, client(cfg, false), url, nil)
		if a.TLS == nil || a.TLS.ServerName != "other.example.com" {
			t.Errorf("answer %+v", a)
		}
	})
	t.Run("a client certificate of another CA is refused", func(t *testing.T) {
		other := newTestPKI(t)
		cfg := pki.clientTLS("abc.example.com")
		cfg.Certificates = []tls.Certificate{other.client}
		resp, err := client(cfg, false).Get(url)
		if err == nil {
			resp.Body.Close()
			t.Fatal("request with an unknown client certificate succeeded")
		}
	})
}

func TestBasicH2C(t *testing.T) {
	addrs := startBasic(t, BasicConfig{Mode: BasicHTTP, Identity: basicID, HTTPPort: "0"})
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	priorKnowledge := &http.Client{Transport: &http.Transport{Protocols: h2c}}

	// The h2c port echoes every path, /status/ included: it has no routes.
	resp, a := getBasic(t, priorKnowledge, "http://"+addrs["h2c"]+"/status/503", nil)
	if resp.StatusCode != 200 || a.Proto != "HTTP/2.0" || a.Path != "/status/503" || a.Pod != basicID.Pod {
		t.Errorf("h2c port, prior knowledge: %d %+v", resp.StatusCode, a)
	}
	resp, _ = getBasic(t, http.DefaultClient, "http://"+addrs["h2c"]+"/", nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("h2c port, HTTP/1.1: %d, want 400", resp.StatusCode)
	}
	resp, a = getBasic(t, http.DefaultClient, "http://"+addrs["h2c"]+"/", map[string]string{"Upgrade": "h2c"})
	if resp.StatusCode != 200 || a.Proto != "HTTP/1.1" {
		t.Errorf("h2c port, HTTP/1.1 asking to upgrade: %d %+v", resp.StatusCode, a)
	}
	// Like echo-basic's, the HTTP port speaks HTTP/1.1 only.
	if resp, err := priorKnowledge.Get("http://" + addrs["http"] + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("HTTP port answered h2c with %d", resp.StatusCode)
	}
}

func TestBasicWebSocket(t *testing.T) {
	addrs := startBasic(t, BasicConfig{Mode: BasicHTTP, Identity: basicID})
	ws, err := websocket.Dial("ws://"+addrs["http"]+"/ws", "", "ws://gateway/TestBasicWebSocket")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, f := range []wsFrame{
		{data: []byte("Websocket Support!"), typ: websocket.TextFrame},
		{data: []byte{1, 2, 3, 4, 5, 6, 7}, typ: websocket.BinaryFrame},
	} {
		if err := frameCodec.Send(ws, f); err != nil {
			t.Fatal(err)
		}
		var got wsFrame
		if err := frameCodec.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got.typ != f.typ || string(got.data) != string(f.data) {
			t.Errorf("sent %v (type %d), got %v (type %d)", f.data, f.typ, got.data, got.typ)
		}
	}
}

// TestBasicServeStops checks the whole command path: ServeBasic listens where the
// environment says and returns once its context ends.
func TestBasicServeStops(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	cfg, err := ParseBasicEnv(func(k string) string {
		return map[string]string{"HTTP_PORT": port, "H2C_PORT": "0", "POD_NAME": "p"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host = "127.0.0.1"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeBasic(ctx, cfg) }()
	var resp *http.Response
	for range 100 {
		if resp, err = http.Get("http://127.0.0.1:" + port + "/health"); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("ServeBasic returned early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "OK" {
		t.Errorf("/health: %q", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeBasic: %v", err)
	}
}
