package inbound_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/agent/proxy/inbound"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/agent/proxy/tunnel/tunneltest"
	"github.com/weft-mesh/weft/api/logkey"
)

// records keeps log records as key=value maps.
type records struct {
	mu   sync.Mutex
	recs []map[string]string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]string{"msg": rec.Message, "level": rec.Level.String()}
	rec.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	r.mu.Lock()
	r.recs = append(r.recs, m)
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) with(key, val string) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, m := range r.recs {
		if m[key] == val {
			out = append(out, m)
		}
	}
	return out
}

// TestRefusedHandshakesLeaveATrace: each kind of refused handshake at
// :15008 bumps its counter and leaves one Warn line with its reason, the
// peer address and the identity the peer claimed, if any.
func TestRefusedHandshakesLeaveATrace(t *testing.T) {
	evil, _ := tunneltest.NewCA("evil.example")
	evilID := spiffeid.RequireFromString("spiffe://evil.example/ns/a/sa/client")
	for _, tc := range []struct {
		reason  limits.Reason
		claimed string
		try     func(t *testing.T, f *fixture)
	}{
		{limits.NotTLS, "", func(t *testing.T, f *fixture) {
			c, err := net.Dial("tcp", f.node)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.ReadAll(c)
		}},
		{limits.NoClientCert, "", func(t *testing.T, f *fixture) {
			c, err := tls.Dial("tcp", f.node, &tls.Config{InsecureSkipVerify: true, ServerName: tunnel.ServerName(serverID), NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
			if err != nil {
				return
			}
			defer c.Close()
			c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 64))
		}},
		{limits.UntrustedCert, clientID.String(), func(t *testing.T, f *fixture) {
			// a certificate of a root the bundle does not hold, claiming a
			// valid identity of the trust domain
			rogue, _ := tunneltest.NewCA("cluster.local")
			handshakeWith(t, f, rogue.MustIssue(clientID))
		}},
		{limits.BadSPIFFEID, evilID.String(), func(t *testing.T, f *fixture) {
			handshakeWith(t, f, evil.MustIssue(evilID))
		}},
		{limits.UnknownServerName, "", func(t *testing.T, f *fixture) {
			c, err := tls.Dial("tcp", f.node, &tls.Config{InsecureSkipVerify: true, ServerName: "nobody.weft.internal", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
			if err == nil {
				c.Close()
				t.Error("unknown server name accepted")
			}
		}},
	} {
		t.Run(tc.reason.String(), func(t *testing.T) {
			checkGoroutines(t)
			recs := &records{}
			var ref *limits.Refusals
			f := startWithCA(t, mustCA(t), serverID, nil, func(c *inbound.Config) {
				c.Logger = slog.New(recs)
				ref = limits.NewRefusals(limits.RefusalsConfig{Logger: c.Logger})
				c.Refusals = ref
			})
			tc.try(t, f)
			deadline := time.Now().Add(5 * time.Second)
			// the count comes before the line: wait for the line
			for len(recs.with(logkey.Reason, tc.reason.String())) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if n := ref.Count(tc.reason); n != 1 {
				t.Fatalf("count of %s = %d, want 1 (all: %v)", tc.reason, n, ref.Counts())
			}
			lines := recs.with(logkey.Reason, tc.reason.String())
			if len(lines) != 1 {
				t.Fatalf("want one line with reason %s, got %v (all: %v)", tc.reason, lines, recs.recs)
			}
			l := lines[0]
			if l["level"] != "WARN" || !strings.HasPrefix(l[logkey.Peer], "127.0.0.1:") {
				t.Errorf("line lacks level or peer: %v", l)
			}
			if l[logkey.Identity] != tc.claimed {
				t.Errorf("claimed identity %q, want %q", l[logkey.Identity], tc.claimed)
			}
			for _, r := range limits.Reasons() {
				if r != tc.reason && ref.Count(r) != 0 {
					t.Errorf("also counted as %s: %v", r, ref.Counts())
				}
			}
		})
	}
}

// TestRefusedStreamLeavesATrace: a stream the identity checks refuse (403)
// is logged with the peer's identity and counted.
func TestRefusedStreamLeavesATrace(t *testing.T) {
	checkGoroutines(t)
	recs := &records{}
	var ref *limits.Refusals
	// the pod runs as "server"; the server presents "other", which the
	// source asks for: the handshake succeeds, the stream is refused
	ca := mustCA(t)
	f := startWithCA(t, ca, serverID, ca.MustIssue(otherID), func(c *inbound.Config) {
		c.Logger = slog.New(recs)
		ref = limits.NewRefusals(limits.RefusalsConfig{Logger: c.Logger})
		c.Refusals = ref
	})
	d := dialer(t, f.ca, f.ca.MustIssue(clientID))
	if _, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: otherID}); err == nil {
		t.Fatal("stream for another identity accepted")
	}
	if ref.Count(limits.Forbidden) != 1 {
		t.Fatalf("counts: %v", ref.Counts())
	}
	l := recs.with(logkey.Reason, limits.Forbidden.String())
	if len(l) != 1 || l[0][logkey.Identity] != clientID.String() || l[0][logkey.Status] != "403" {
		t.Fatalf("lines: %v", l)
	}
}

// handshakeWith makes one TLS handshake presenting svid and waits for the
// server's verdict (in TLS 1.3 it comes after the client's handshake).
func handshakeWith(t *testing.T, f *fixture, svid *x509svid.SVID) {
	t.Helper()
	cert := tls.Certificate{PrivateKey: svid.PrivateKey}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	c, err := tls.Dial("tcp", f.node, &tls.Config{InsecureSkipVerify: true, ServerName: tunnel.ServerName(serverID),
		NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 64)); err == nil {
		t.Error("the server accepted the certificate")
	}
}

func mustCA(t *testing.T) *tunneltest.CA {
	ca, err := tunneltest.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}
