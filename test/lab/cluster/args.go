package cluster

import (
	"fmt"
	"path/filepath"
	"strings"
)

func (cp *ControlPlane) etcdArgs() []string {
	dir := filepath.Join(cp.cfg.StateDir, "etcd")
	client := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	return []string{
		"--name=weft-lab",
		"--data-dir=" + dir,
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=weft-lab=" + peer,
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
}

func (cp *ControlPlane) apiserverArgs() []string {
	p := cp.pki
	return []string{
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--bind-address=" + APIServerAddr.Addr().String(),
		fmt.Sprintf("--secure-port=%d", APIServerAddr.Port()),
		"--advertise-address=" + AdvertiseAddress.String(),
		"--cert-dir=" + filepath.Join(cp.cfg.StateDir, "apiserver"),
		"--tls-cert-file=" + p.apiserverCert,
		"--tls-private-key-file=" + p.apiserverKey,
		"--client-ca-file=" + p.caCert,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-cluster-ip-range=" + ServiceCIDR.String(),
		"--service-account-issuer=" + Issuer,
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--kubelet-client-certificate=" + p.kubeletClientCert,
		"--kubelet-client-key=" + p.kubeletClientKey,
		"--kubelet-certificate-authority=" + p.caCert,
		"--kubelet-preferred-address-types=InternalDNS,InternalIP",
		"--profiling=false",
		"--v=1",
	}
}

func (cp *ControlPlane) controllerManagerArgs() []string {
	kc := cp.kubeconfigPath("kube-controller-manager")
	return []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--secure-port=0",
		"--controllers=*",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + cp.pki.saKey,
		"--root-ca-file=" + cp.pki.caCert,
		"--cluster-signing-cert-file=" + cp.pki.caCert,
		"--cluster-signing-key-file=" + cp.pki.caKey,
		// The node runtime sets each Node's podCIDR (10.244.<i>.0/24) itself.
		"--allocate-node-cidrs=false",
		"--service-cluster-ip-range=" + ServiceCIDR.String(),
		"--profiling=false",
		"--v=1",
	}
}

func (cp *ControlPlane) schedulerArgs() []string {
	kc := cp.kubeconfigPath("kube-scheduler")
	return []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--secure-port=0",
		"--leader-elect=false",
		"--profiling=false",
		"--v=1",
	}
}

func (cp *ControlPlane) kubeconfigPath(user string) string {
	return filepath.Join(cp.cfg.StateDir, strings.ReplaceAll(user, ":", "-")+".kubeconfig")
}
