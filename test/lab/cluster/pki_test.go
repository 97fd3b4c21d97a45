package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssuedCertificatesVerifyAgainstTheCA(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	dns, ips := APIServerSANs()
	certPEM, keyPEM, err := ca.Issue(CertSpec{CommonName: "kube-apiserver", DNSNames: dns, IPs: ips, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("key pair: %v", err)
	}
	c := parseCert(t, certPEM)
	for _, name := range []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "127.0.0.1", "172.30.255.1", "10.96.0.1"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("apiserver cert for %s: %v", name, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "10.96.0.2"}); err == nil {
		t.Error("apiserver cert verified for 10.96.0.2")
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("server-only cert verified as a client cert")
	}

	certPEM, _, err = ca.Issue(CertSpec{CommonName: "system:node:n1", Organization: []string{"system:nodes"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	c = parseCert(t, certPEM)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert: %v", err)
	}
	if c.Subject.CommonName != "system:node:n1" || !slices.Equal(c.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("subject = %v", c.Subject)
	}

	other, _ := NewCA("other")
	op := x509.NewCertPool()
	op.AddCert(other.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: op, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("cert verified against an unrelated CA")
	}
}

func TestIssueRejectsIncompleteSpecs(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range []CertSpec{{Server: true}, {CommonName: "x"}} {
		if _, _, err := ca.Issue(spec); !errors.Is(err, ErrPKI) {
			t.Errorf("Issue(%+v) err = %v, want ErrPKI", spec, err)
		}
	}
}

func TestWritePKIForNodes(t *testing.T) {
	dir := t.TempDir()
	nodes := []NodeSpec{{Name: "lab-node-1", IP: mustAddr("172.30.0.11")}, {Name: "lab-node-2", IP: mustAddr("172.30.0.12")}}
	p, err := writePKI(dir, nodes)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(p.caCert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	for _, n := range nodes {
		b, err := os.ReadFile(p.serving[n.Name][0])
		if err != nil {
			t.Fatal(err)
		}
		c := parseCert(t, b)
		// The apiserver dials the kubelet at 127.0.0.1:<port> and verifies its cert.
		for _, host := range []string{"127.0.0.1", n.IP.String(), n.Name} {
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
				t.Errorf("%s serving cert for %s: %v", n.Name, host, err)
			}
		}
		if _, ok := p.clients["node-"+n.Name]; !ok {
			t.Errorf("no client identity for %s", n.Name)
		}
	}
	st, err := os.Stat(filepath.Join(dir, "sa.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("sa.key: %v %v", st, err)
	}
	if len(p.clients) != 3+len(nodes) {
		t.Errorf("%d client identities, want %d", len(p.clients), 3+len(nodes))
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
