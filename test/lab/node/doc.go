// Package node is the lab's node runtime: a kubelet stand-in that runs real
// processes in network namespaces, plus the network fabric linking the nodes.
//
// # API
//
//	SetupFabric(nodes []Config, host HostLink) error  // node netns + fabric (+ host link); once, before Run
//	Run(ctx, cfg Config) error         // one node; blocks until ctx is done
//	Cleanup(stateRoot string) error    // removes everything a lab left (also after a crash)
//	RouteLoadBalancers(ctx, client, host, nodes) error  // host /32s for externalTrafficPolicy Local
//
// SetupFabric writes a state file (weft-node.json) into every Config.StateDir;
// Cleanup(stateRoot) finds those files in stateRoot and up to three directory
// levels below it, so every node's StateDir must lie inside the stateRoot given
// to Cleanup. Cleanup is idempotent and safe to call before SetupFabric. Run
// and Cleanup keep Config.ImageStore: the lab decides when pulled images go.
//
// # Names (all created by this package)
//
//	netns  wl-<node>             the node (eth0 = NodeIP/24 on the fabric; lo has 172.30.255.1/32)
//	netns  wl-<nodes[0]>_fabric  a bridge (br0) linking the nodes' eth0 (and fhost)
//	link   <HostLink.Name>       in the host netns (the lab's: wl-host), a veth to fhost on br0
//	netns  wl-<node>_<podUID>    one per pod (eth0 = podIP/32, default via 169.254.1.1)
//	cgroup <CgroupRoot>/weft-lab/<node>/kubepods/pod<uid>  every process of a pod (incl. hostNetwork pods)
//	cgroup <CgroupRoot>/weft-lab/<node>/system             kube-proxy
//	files  <StateDir>/pods/<ns>_<name>_<uid>/              logs, volumes, resolv.conf, hosts, hostname
//	files  <StateDir>/pods/<ns>_<name>_<uid>/containers/<c>/{upper,work,merged}  an image container's overlay
//	files  <ImageStore>/sha256-<hex>/{rootfs,config.json}  a pulled image (hex: its config digest)
//	files  <ImageStore>/refs/, <ImageStore>/locks/        what references resolved to; flock files
//
// CgroupRoot is normally the cgroup v2 mount; any cgroup directory below it
// works too (the package's tests use one of their own).
//
// Nothing else is created in the host network namespace: the host link and
// the routes through it are all the host gets (none with the zero HostLink),
// and every other link lives in a lab netns, so deleting the namespaces and
// the host link removes every veth and route. Host sysctls are not changed
// (the host is an endpoint on the fabric, it forwards nothing).
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
// Host link: with a HostLink, the host holds HostLink.Addr (the lab's
// 172.30.0.1/24, an address no node uses) on a veth whose other end is a port
// of the fabric bridge, so the host and the nodes reach each other on-link,
// and a route for HostLink.LoadBalancerPool (the lab's 172.30.200.0/24) via
// the first node's IP. (So pods reach the host at HostLink.Addr too, and
// whatever listens on the host's wildcard address.) Every node netns routes
// the pool through eth0 as it
// does the ServiceCIDR (so connects from the node netns reach kube-proxy's
// output DNAT). A connection from the host to a LoadBalancer address thus
// enters the first node on eth0, where kube-proxy (which programs the
// Service's status.loadBalancer.ingress IPs of ipMode VIP on every node)
// translates it in prerouting: with externalTrafficPolicy Cluster it
// masquerades to the node IP and any endpoint answers back through that
// node. For externalTrafficPolicy Local, kube-proxy drops traffic on a node
// without a ready endpoint of the Service, so RouteLoadBalancers (run by the
// supervisor) keeps a /32 host route for each such address to a node with
// one (the one it has while it keeps one, else the first in node order), as
// MetalLB's layer-2 speaker answers from such a node; there the client's
// address is kept and the endpoint answers the host on-link. Without a ready
// endpoint the address falls back to the pool route and is dropped. The
// node needs no address for the pool, no route_localnet, and rp_filter
// stays as a new netns has it (off). The pool route is recorded in the
// first node's state file and Cleanup deletes it and the link (which takes
// every route through it, the /32s too). SetupFabric refuses a host link
// whose prefixes overlap a host route of another link (another lab, a
// network of the host).
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
// # CNI
//
// With Config.CNIPluginDir set (the lab sets it), a pod's network is set up
// the way a kubelet's runtime does it: each node has its own CNI directories
// under StateDir (cni/net.d is the node's /etc/cni/net.d, cni/bin its
// /opt/cni/bin, cni/cache libcni's cache, cni/ipam host-local's state), and
// a hostPath volume of /etc/cni/net.d or /opt/cni/bin (or a path below
// them) of a pod on the node resolves to the node's own directory, as it
// would on a node with its own disk (so a DaemonSet that installs a chained
// plugin installs it on that node only). Run copies the upstream reference
// plugins ptp and host-local (github.com/containernetworking/plugins,
// `make cni-plugins`) into the node's bin dir and writes
// cni/net.d/10-weft-lab.conflist (ptp + host-local over the node's PodCIDR,
// default route) unless a config is there already (a restarted node keeps
// what was chained into it). For every non-hostNetwork pod the runtime
// creates the netns, then runs the first config file's plugin chain (libcni,
// the plugins executed inside the node netns) with ADD, CNI_ARGS
// K8S_POD_NAMESPACE/NAME/INFRA_CONTAINER_ID/UID (and IP=<old pod IP> so a
// restarted node keeps its pods' addresses), before any container of the pod
// starts; the pod IP comes from the result. A failed ADD is the pod's setup
// error, retried like any. At teardown it runs DEL, then deletes the netns.
// ptp gives the pod eth0 with podIP/24 and routes via the gateway (.1 of the
// PodCIDR), which sits as a /32 on the node side of every pod veth, with a
// /32 route to each pod: so connections from the node netns to a pod have
// the gateway address as source. Without CNIPluginDir (the package's own
// tests) the pod's veth is wired directly as described under Networking.
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
// (the node netns for hostNetwork pods), in the pod cgroup, in a private
// mount namespace (a slave of the host's) and (except hostNetwork pods) in a
// UTS namespace whose hostname is the pod's spec.hostname or name. There is
// no PID namespace: /proc shows the host's processes, so the agent can read
// /proc/<pid>/ns/net of any pod process. What the process sees as its
// filesystem, user and capabilities depends on its image (see Images).
//
// Volumes: projected (serviceAccountToken via the TokenRequest API bound to
// the pod, configMap, secret, downwardAPI), configMap, secret, emptyDir
// (mode 0777) and hostPath (the host path itself, except the node's own CNI
// directories, see CNI). The ServiceAccount
// admission plugin's kube-api-access volume therefore gives
// /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}
// exactly as on a real node, and tokens are refreshed at 80% of their
// lifetime. Files are mode 0644 (defaultMode and items[].mode are ignored).
// readOnly and subPath are honoured. In image containers volumes are
// rprivate (mountPropagation None) or rslave (HostToContainer); Bidirectional
// is not supported and behaves as HostToContainer.
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
// restartPolicy is honoured with a back-off (1 s doubling to 60 s; the
// kubelet's starts at 10 s). Init containers run in order before the others.
// A container that cannot run reports what a kubelet with containerd reports,
// each retried with that back-off:
//
//	Waiting ErrImagePull "failed to pull image \"<ref>\": <cause>", then
//	        ImagePullBackOff "Back-off pulling image \"<ref>\": ErrImagePull: ..."
//	Waiting ErrImageNeverPull "Container image \"<ref>\" is not present with pull policy of Never"
//	Waiting InvalidImageName for a reference that does not parse (not retried)
//	Waiting CreateContainerConfigError: env sources missing; runAsNonRoot with a
//	        root or non-numeric image user, in the kubelet's words
//	Waiting CreateContainerError "unable to find user <u>: no matching entries in passwd file"
//	Waiting RunContainerError, then CrashLoopBackOff, with lastState.terminated
//	        {reason StartError, exitCode 128, message}: the process could not be
//	        started (mounts, a missing program `exec: "/app": stat /app: no such
//	        file or directory`, `exec: "app": executable file not found in
//	        $PATH`, a missing ELF interpreter, not executable)
//
// A missing shared library (the dynamic loader is there) is an ordinary exit
// (127, the loader's message in the log) and CrashLoopBackOff, as on a
// kubelet. imageID is <repository>@<digest> for pulled images.
//
// Deletion: on deletionTimestamp the containers get SIGTERM, then SIGKILL
// after the grace period; the netns, veth and cgroup are removed and the pod
// is deleted with grace 0 (uid precondition), as the kubelet does; the pod's
// state directory (logs, volumes, container filesystems) goes too. When
// Run's ctx ends, every pod is stopped (2 s grace) and its netns, cgroup and
// container filesystems removed, but the Node and Pod objects stay; a later
// Run starts them again (finished pods stay finished). An image container's
// mounts live only in its mount namespace and go with its last process.
//
// # Images
//
// A container's image is either binary-mapped or pulled:
//
//   - In Config.Images (reference -> host program): the process runs on the
//     host filesystem as the node's root with every capability, exactly as
//     before images could be pulled (CoreDNS, the upstream conformance apps,
//     the lab's own binaries). The command is the container's command/args
//     over the map entry's Entrypoint/Cmd; a bare program name is looked up
//     in the entry's Path, PathDirs, then the usual system directories, and
//     PATH is those. /etc/resolv.conf and every volumeMount are bind mounts
//     over host paths; missing mount points are created on the host.
//   - Any other reference, when Config.ImageStore is set, is pulled (below)
//     and runs in its own root filesystem. Without an ImageStore it stays
//     Waiting with ErrImagePull naming the image and the known ones.
//
// Pulls use go-containerregistry with the Docker keychain (~/.docker/
// config.json), for linux/GOARCH out of a multi-arch index; registries on
// loopback addresses are spoken to over plain HTTP. imagePullPolicy is the
// kubelet's (empty means Always for :latest or no tag, else IfNotPresent):
// Always resolves the reference on every container start but reuses a
// stored filesystem of the same image, IfNotPresent uses what the reference
// last resolved to, Never never pulls. The layers are flattened (whiteouts
// applied) into <ImageStore>/sha256-<config digest>/rootfs through a
// temporary directory renamed into place; flocks make concurrent pulls of one
// image by several nodes or processes pull and unpack once. Ownership,
// modes (setuid too), symlinks and hard links are kept; device nodes, FIFOs
// and extended attributes (file capabilities) in layers are not. Nothing is
// ever removed from the store (no image garbage collection), and
// imagePullSecrets are not used. ImageStore and StateDir must be absolute
// paths without ',', ':' or '\' (overlay mount options), and StateDir must
// be on a filesystem overlayfs accepts as upper dir (not overlayfs itself).
//
// An image container's root is an overlay: lower the stored rootfs, upper
// and work per container under the pod's state dir, recreated on every
// start (a restarted container starts from the image again), mounted at
// merged in the container's mount namespace. On top of it: a fresh procfs
// (host PIDs, see above) with /proc/{bus,fs,irq,sys,sysrq-trigger}
// read-only and /proc/{kcore,keys,...}, /sys/firmware masked as runc does;
// sysfs (read-only unless privileged); /dev a tmpfs with null, zero, full,
// random, urandom and tty bound from the host (privileged: every host device
// node), a devpts instance and a /dev/shm tmpfs; /etc/hosts (the kubelet's:
// localhost lines, the pod IP with its hostname and FQDN, hostAliases; the
// node's file for hostNetwork pods), /etc/hostname and /etc/resolv.conf
// (below; the host's file where the policy keeps it), unless a volumeMount
// covers them; then every volumeMount. Mount points are created inside the
// container's filesystem, never on the host. readOnlyRootFilesystem makes
// the overlay (and the three /etc files) read-only after that. The process
// is chrooted into merged (chroot, not pivot_root: a process holding
// CAP_SYS_CHROOT can leave it; the lab is not a security boundary) and
// starts in workingDir (the container's, else the image's, else /; created
// when missing).
//
// Command and environment are the kubelet's and containerd's: command/args
// over the image's Entrypoint/Cmd, $(VAR) expanded from the pod's variables
// only; the image's ENV under the container's env (the container wins;
// PATH defaults to the usual system directories when neither sets it; HOME
// from the user's /etc/passwd entry, else /). The program is looked up
// inside the container's root through its PATH, as runc does.
//
// User: runAsUser/runAsGroup of the container's securityContext over the
// pod's over the image's User (uid, uid:gid, name, name:group), resolved
// against the image's /etc/passwd and /etc/group (a numeric uid needs no
// entry; its group is then 0); the supplementary groups are the primary
// group, the /etc/group groups listing the user, supplementalGroups and
// fsGroup. fsGroup does not change the ownership or mode of volumes, and
// runAsGroup without runAsUser keeps the image's user with that group.
//
// Capabilities: a container's bounding set is containerd's default (CHOWN,
// DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP,
// SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE) with
// capabilities.add (ALL: every one) and capabilities.drop (ALL: none) applied;
// privileged gets every capability of the node. A root process holds
// exactly that set (effective and permitted; inheritable and ambient empty),
// a non-root process none. allowPrivilegeEscalation: false sets
// no_new_privs. securityContext.sysctls of the kubelet's safe network set
// are written in the pod's netns before any container starts (others, or
// any on a hostNetwork pod, fail the pod's setup, as a kubelet refuses
// them). Seccomp, AppArmor, SELinux, procMount and resource limits are not
// applied.
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
// cgroup with the container's environment. In an image container it also
// runs in the container's root and working directory, as its user, with its
// capabilities, the program looked up in its root, as runc exec does; exec
// probes run the same way. TTY exec is served without a terminal (plain
// pipes). Attach is not served; logs ignore timestamps and sinceSeconds.
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
