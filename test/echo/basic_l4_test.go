package echo

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tcpExchange sends each line and reads one line back for each.
func tcpExchange(t *testing.T, c net.Conn, lines ...string) []string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	welcome, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if welcome != TCPWelcome {
		t.Fatalf("welcome %q", welcome)
	}
	var out []string
	for _, l := range lines {
		if _, err := io.WriteString(c, l+"\n"); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		out = append(out, strings.TrimSuffix(got, "\n"))
	}
	return out
}

func TestBasicTCP(t *testing.T) {
	pki := newTestPKI(t)
	addrs := startBasic(t, BasicConfig{Mode: BasicTCP, Identity: basicID, TCPPort: "0", TLSPort: "0", CertFile: pki.certFile, KeyFile: pki.keyFile})
	want := TCPAnswer{Namespace: basicID.Namespace, Ingress: basicID.Ingress, Service: basicID.Service, Pod: basicID.Pod, TCPPort: "0", TLSPort: "0"}

	c, err := net.Dial("tcp", addrs["tcp"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// An unknown line gets no answer: PING's PONG is the next line read.
	out := tcpExchange(t, c, "HELLO\nPING", "IS_TLS", "TEST")
	if out[0] != "PONG" || out[1] != "false" {
		t.Errorf("answers %q", out)
	}
	var got TCPAnswer
	if err := json.Unmarshal([]byte(out[2]), &got); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("TEST: %q (%v), want %+v", out[2], err, want)
	}

	tc, err := tls.Dial("tcp", addrs["tcp-tls"], pki.clientTLS("abc.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	out = tcpExchange(t, tc, "IS_TLS", "TEST")
	got = TCPAnswer{}
	if err := json.Unmarshal([]byte(out[1]), &got); err != nil {
		t.Fatal(err)
	}
	if out[0] != "true" || !got.IsTLS || got.TLS == nil || got.TLS.ServerName != "abc.example.com" || got.TLS.Version != "TLS 1.3" || got.TLS.CipherSuite == "" || got.TLS.Curves == "" {
		t.Errorf("over TLS: %q", out)
	}

	// TLS 1.1 and older are refused.
	old := pki.clientTLS("abc.example.com")
	old.MaxVersion = tls.VersionTLS11
	if c, err := tls.Dial("tcp", addrs["tcp-tls"], old); err == nil {
		c.Close()
		t.Error("TLS 1.1 handshake succeeded")
	}
}

func TestBasicTCPReset(t *testing.T) {
	addrs := startBasic(t, BasicConfig{Mode: BasicTCP, Identity: basicID, TCPReset: true})
	// The reset may arrive before the dial returns, or on the first read.
	c, err := net.Dial("tcp", addrs["tcp"])
	if err == nil {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 64))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("got %v, want a connection reset", err)
	}
}

func TestBasicUDP(t *testing.T) {
	addrs := startBasic(t, BasicConfig{Mode: BasicUDP, Identity: basicID})
	c, err := net.Dial("udp", addrs["udp"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("gateway-api-conformance-udp-echo")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var got UDPAnswer
	want := UDPAnswer{Request: "gateway-api-conformance-udp-echo", Namespace: basicID.Namespace, Ingress: basicID.Ingress, Service: basicID.Service, Pod: basicID.Pod}
	if err := json.Unmarshal(buf[:n], &got); err != nil || got != want {
		t.Errorf("answer %q (%v), want %+v", buf[:n], err, want)
	}
}
