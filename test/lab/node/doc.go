// Package node is the lab's node runtime: a kubelet stand-in that runs real
// processes in network namespaces, plus the network fabric linking the nodes.
//
// # API
//
//	SetupFabric(nodes []Config) error  // node netns + fabric; call once, before Run
//	Run(ctx, cfg Config) error         // one node; blocks until ctx is done
//	Cleanup(stateRoot string) error    // removes everything a lab left (also after a crash)
//
// SetupFabric writes a state file (weft-node.json) into every Config.StateDir;
// Cleanup(stateRoot) finds those files in stateRoot and up to three directory
// levels below it, so every node's StateDir must lie inside the stateRoot given
// to Cleanup. Cleanup is idempotent and safe to call before SetupFabric.
//
// # Names (all created by this package)
//
//	netns  wl-<node>             the node (eth0 = NodeIP/24 on the fabric; lo has 172.30.255.1/32)
//	netns  wl-<nodes[0]>_fabric  a bridge (br0) linking the nodes' eth0
//	netns  wl-<node>_<podUID>    one per pod (eth0 = podIP/32, default via 169.254.1.1)
//	cgroup <CgroupRoot>/weft-lab/<node>/kubepods/pod<uid>  every process of a pod (incl. hostNetwork pods)
//	cgroup <CgroupRoot>/weft-lab/<node>/system             kube-proxy
//	files  <StateDir>/pods/<ns>_<name>_<uid>/              logs, volumes, resolv.conf
//
// CgroupRoot is normally the cgroup v2 mount; any cgroup directory below it
// works too (the package's tests use one of their own).
//
// Nothing is created in the host network namespace: every link lives in a lab
// netns, so deleting the namespaces removes every veth and route.
//
// # Networking
//
// A node netns holds eth0 (NodeIP/24 on the fabric bridge), a route to every
// other node's PodCIDR via that node's IP, a route for ServiceCIDR through eth0
// (so connects to ClusterIPs from the node netns reach kube-proxy's DNAT), and
// ip_forward on. A pod netns holds eth0 with podIP/32 and a default route via
// 169.254.1.1; the node side of the veth (vp<hash>) has a /32 route to the
// pod, and both sides have static neighbour entries (no ARP, no bridge).
//
// The apiserver is reached from every node netns at APIServerVIP
// (172.30.255.1:6443 on lo): Run opens that listener inside the node netns
// and forwards each connection to APIServerHost on the host. kube-proxy runs
// inside the node netns with a kubeconfig whose server is https://APIServerVIP
// and whose tls-server-name is the host of the original kubeconfig server, so
// the apiserver certificate needs no extra SAN for it. Pods reach the
// apiserver through the `kubernetes` Service (10.96.0.1:443) which kube-proxy
// DNATs to the advertised 172.30.255.1:6443; the apiserver certificate must
// carry 10.96.0.1 (in-cluster clients verify it).
//
// # Pods
//
// Run runs kube-proxy (Config.KubeProxyBin; empty means none) in the node
// netns and the system cgroup, nftables mode when nft is installed, else
// iptables; its log is <StateDir>/kube-proxy.log.
//
// Run registers the Node (InternalIP NodeIP, InternalDNS 127.0.0.1, kubelet
// port KubeletPort, podCIDR, capacity, Ready), renews its Lease in
// kube-node-lease every 10 s and its status every 10 s. It watches pods with
// spec.nodeName == Name. A container's process is started in the pod netns
// (the node netns for hostNetwork pods), in the pod cgroup and in a private
// mount namespace where /etc/resolv.conf and every volumeMount are bind
// mounts, and (except hostNetwork pods) in a UTS namespace whose hostname is
// the pod's spec.hostname or name. There is no PID namespace: /proc is the
// host's, so the agent can read /proc/<pid>/ns/net of any pod process.
//
// The command is the container's command/args over the image's
// Entrypoint/Cmd (Config.Images); a bare program name is looked up in
// PathDirs then the usual system directories, and PATH is PathDirs + those.
//
// Volumes: projected (serviceAccountToken via the TokenRequest API bound to
// the pod, configMap, secret, downwardAPI), configMap, secret, emptyDir and
// hostPath (the host path itself). The ServiceAccount admission plugin's
// kube-api-access volume therefore gives /var/run/secrets/kubernetes.io/
// serviceaccount/{token,ca.crt,namespace} exactly as on a real node, and
// tokens are refreshed at 80% of their lifetime. Mount points missing on the
// host are created there as empty directories (the processes share the host
// filesystem).
//
// DNS: dnsPolicy ClusterFirst (non-hostNetwork) and ClusterFirstWithHostNet
// get "nameserver ClusterDNS, search <ns>.svc.<domain> svc.<domain> <domain>,
// options ndots:5"; Default keeps the host file; None uses spec.dnsConfig.
//
// Env: env (value, fieldRef metadata.name/namespace/uid, spec.nodeName,
// spec.serviceAccountName, status.podIP, status.hostIP, metadata.labels/
// annotations['k'], configMapKeyRef, secretKeyRef), envFrom, $(VAR)
// expansion, KUBERNETES_SERVICE_HOST/PORT (and the KUBERNETES_PORT* family).
// Other services' link variables are not injected.
//
// Status: phase, hostIP, podIP(s), conditions (PodScheduled, Initialized,
// ContainersReady, Ready; readiness from httpGet/tcpSocket/exec probes run
// against the pod IP from the node netns), containerStatuses with state,
// lastState, restartCount and ready. Liveness probes restart the container;
// startup and gRPC probes are not run (a gRPC probe never passes).
// restartPolicy is honoured with a back-off (1 s doubling to 60 s). Init
// containers run in order before the others. An image missing from the map
// leaves the container Waiting with reason ErrImagePull and a message naming
// the image; a program that cannot be started gives RunContainerError.
//
// Deletion: on deletionTimestamp the containers get SIGTERM, then SIGKILL
// after the grace period; the netns, veth and cgroup are removed and the pod
// is deleted with grace 0 (uid precondition), as the kubelet does; the pod's
// state directory (logs, volumes) goes too. When Run's ctx ends, every pod
// is stopped (2 s grace) and its netns and cgroup removed, but the Node and
// Pod objects stay; a later Run starts them again (finished pods stay
// finished).
//
// # Kubelet API
//
// HTTPS on 127.0.0.1:KubeletPort (KubeletServingCert/Key; client certificates
// are verified against ClientCA and required):
//
//	GET  /healthz
//	GET  /containerLogs/{ns}/{pod}/{container}?follow=&tailLines=&previous=
//	GET|POST /exec/{ns}/{pod}/{container}?command=...&input=&output=&error=
//	GET|POST /exec/{ns}/{pod}/{uid}/{container}?...
//	GET|POST /portForward/{ns}/{pod}[/{uid}]   (SPDY; to localhost:port in the pod netns)
//
// Exec uses k8s.io/cri-streaming's remotecommand over SPDY (v1-v4), which is
// what the apiserver speaks to kubelets (it translates kubectl's WebSocket
// requests); the command runs in the container's netns, mount namespace and
// cgroup with the container's environment. TTY exec is served without a
// terminal (plain pipes). Attach is not served; logs ignore timestamps and
// sinceSeconds.
//
// # For the agent
//
// A pod's netns is /proc/<pid>/ns/net of any pid in
// <CgroupRoot>/weft-lab/<node>/kubepods/pod<uid>/cgroup.procs; it is also
// bind-mounted at /run/netns/wl-<node>_<uid>.
//
// Logs: <StateDir>/pods/<ns>_<name>_<uid>/logs/<container>/<restartCount>.log
// (stdout and stderr, raw).
package node
