package cluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// pkiFiles are the paths of everything writePKI wrote, plus the client pairs that go
// into kubeconfigs.
type pkiFiles struct {
	caCert, caKey                       string
	caPEM                               []byte
	apiserverCert, apiserverKey         string
	kubeletClientCert, kubeletClientKey string
	saKey, saPub                        string
	clients                             map[string]clientPair // kubeconfig user -> pair
	serving                             map[string][2]string  // node -> serving cert, key
}

type clientPair struct{ cert, key []byte }

// APIServerSANs are the names the apiserver's serving certificate carries.
func APIServerSANs() (dns []string, ips []net.IP) {
	dns = []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + ClusterDomain}
	ips = []net.IP{net.ParseIP("127.0.0.1"), AdvertiseAddress.AsSlice(), KubernetesSvcIP.AsSlice()}
	return dns, ips
}

// clientSpecs are the client identities of the lab: the admin, the controllers, and one
// kubelet-like identity per node (Node authorizer + NodeRestriction apply to it).
func clientSpecs(nodes []NodeSpec) map[string]CertSpec {
	m := map[string]CertSpec{
		"admin":                   {CommonName: "kubernetes-admin", Organization: []string{"system:masters"}, Client: true},
		"kube-controller-manager": {CommonName: "system:kube-controller-manager", Client: true},
		"kube-scheduler":          {CommonName: "system:kube-scheduler", Client: true},
	}
	for _, n := range nodes {
		m["node-"+n.Name] = CertSpec{CommonName: "system:node:" + n.Name, Organization: []string{"system:nodes"}, Client: true}
	}
	return m
}

// Names of the pairs in <StateDir>/pki (name.crt, name.key).
const (
	caName            = "ca"
	kubeletClientName = "apiserver-kubelet-client"
)

// KubeletClientFiles are, in a control plane's StateDir, the client pair the apiserver
// calls kubelets with (group system:masters) and the CA of the kubelets' serving
// certificates. With them a test can use a node's kubelet API (exec, logs) directly,
// as the apiserver does, also while the apiserver is down.
func KubeletClientFiles(stateDir string) (cert, key, ca string) {
	dir := filepath.Join(stateDir, "pki")
	return filepath.Join(dir, kubeletClientName+".crt"), filepath.Join(dir, kubeletClientName+".key"), filepath.Join(dir, caName+".crt")
}

func writePKI(dir string, nodes []NodeSpec) (*pkiFiles, error) {
	ca, err := NewCA("weft-lab-ca")
	if err != nil {
		return nil, err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	p := &pkiFiles{caPEM: ca.CertPEM(), clients: map[string]clientPair{}, serving: map[string][2]string{}}
	if p.caCert, p.caKey, err = writePair(dir, caName, p.caPEM, caKey); err != nil {
		return nil, err
	}
	dns, ips := APIServerSANs()
	c, k, err := ca.Issue(CertSpec{CommonName: "kube-apiserver", DNSNames: dns, IPs: ips, Server: true})
	if err != nil {
		return nil, err
	}
	if p.apiserverCert, p.apiserverKey, err = writePair(dir, "apiserver", c, k); err != nil {
		return nil, err
	}
	c, k, err = ca.Issue(CertSpec{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true})
	if err != nil {
		return nil, err
	}
	if p.kubeletClientCert, p.kubeletClientKey, err = writePair(dir, kubeletClientName, c, k); err != nil {
		return nil, err
	}
	saPriv, saPub, err := NewServiceAccountKey()
	if err != nil {
		return nil, err
	}
	p.saKey, p.saPub = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(p.saKey, saPriv, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.saPub, saPub, 0o644); err != nil {
		return nil, err
	}
	for user, spec := range clientSpecs(nodes) {
		c, k, err := ca.Issue(spec)
		if err != nil {
			return nil, err
		}
		p.clients[user] = clientPair{cert: c, key: k}
	}
	for _, n := range nodes {
		c, k, err := ca.Issue(CertSpec{
			CommonName: "system:node:" + n.Name,
			DNSNames:   []string{n.Name, "localhost"},
			IPs:        []net.IP{net.ParseIP("127.0.0.1"), n.IP.AsSlice()},
			Server:     true,
		})
		if err != nil {
			return nil, err
		}
		cf, kf, err := writePair(dir, "kubelet-"+n.Name, c, k)
		if err != nil {
			return nil, err
		}
		p.serving[n.Name] = [2]string{cf, kf}
	}
	return p, nil
}

// Kubeconfig builds a kubeconfig for the lab apiserver with embedded credentials.
func Kubeconfig(server string, caPEM, certPEM, keyPEM []byte, user string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["weft-lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["weft-lab"] = &clientcmdapi.Context{Cluster: "weft-lab", AuthInfo: user}
	cfg.CurrentContext = "weft-lab"
	return cfg
}

func (cp *ControlPlane) writeKubeconfigs() error {
	server := "https://" + APIServerAddr.String()
	for user, pair := range cp.pki.clients {
		path := cp.kubeconfigPath(user)
		if user == "admin" {
			path = cp.cfg.AdminKubeconfig
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
		}
		if err := clientcmd.WriteToFile(*Kubeconfig(server, cp.pki.caPEM, pair.cert, pair.key, user), path); err != nil {
			return fmt.Errorf("write kubeconfig %s: %w", path, err)
		}
	}
	for _, n := range cp.cfg.Nodes {
		s := cp.pki.serving[n.Name]
		cp.Nodes[n.Name] = NodeCredentials{
			Kubeconfig:  cp.kubeconfigPath("node-" + n.Name),
			ServingCert: s[0],
			ServingKey:  s[1],
			ClientCA:    cp.pki.caCert,
		}
	}
	admin, err := clientcmd.BuildConfigFromFlags("", cp.cfg.AdminKubeconfig)
	if err != nil {
		return fmt.Errorf("load admin kubeconfig: %w", err)
	}
	admin.QPS, admin.Burst = 100, 200
	cp.Admin = admin
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return err
	}
	cp.Client = cs
	return nil
}

// AdminConfig returns a copy of the admin REST config.
func (cp *ControlPlane) AdminConfig() *rest.Config { return rest.CopyConfig(cp.Admin) }
