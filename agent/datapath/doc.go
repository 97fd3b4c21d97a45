// Package datapath loads, attaches and feeds Weft's eBPF redirect (bpf/) for
// one node, and answers the proxy's original-destination lookups.
//
// # What the agent calls
//
//	rep := datapath.Preflight(cgroupPath)  // probe; rep.Format() for logs and `weftctl check`
//	if !rep.OK() { exit with rep.Format() }
//	dp, err := datapath.Open(datapath.Config{
//		Node:       nodeName,                       // pins under /sys/fs/bpf/weft/<node>/
//		CgroupPath: "kubepods",                     // or "weft-lab/<node>/kubepods"; "" = cgroup v2 root
//		ProxyAddr:  netip.MustParseAddrPort("172.30.0.11:15001"),
//	})
//	res, err := dp.Sync(datapath.Desired{Pods: pods, Meshed: vipPorts}) // on every pod/policy change
//	for _, p := range res.Pods { if p.Enrolled { annotate } else { report p.Err } }
//	orig, ok := dp.Lookup(conn.RemoteAddr, conn.LocalAddr)          // proxy accept path; !ok: refuse
//	dp.Close()                             // agent exit: pins stay, redirect keeps working
//	datapath.Cleanup(cfg)                  // `weft-agent cleanup`: detach and unpin this node's objects
//	datapath.Inspect(cfg)                  // read-only: enrolled cookies, meshed VIPs, records, links
//
// A Pod with Strict set (strict mTLS) also gets its IPv4 addresses into the
// strict map; see strict.go for what is refused, what passes (the proxy's
// marked dials, the pod itself, the kubelet) and the known gaps.
// dp.StrictCounters() reads the refusal counters for metrics.
//
// Sync refuses (PodResult.Err wraps ErrNodeNetns) a pod whose netns is the
// agent's own: a hostNetwork pod must never be enrolled, or the proxy's own
// dials would be redirected to itself.
//
// The proxy's outbound.OrigDstLookup is satisfied by a one-line adapter
// converting datapath.Original to outbound.Original (same fields).
//
// # How the redirect works
//
// cgroup/connect4 and cgroup/connect6 (v4-mapped ::ffff:a.b.c.d) run for
// every socket in the attach cgroup's subtree. When the caller's netns
// cookie is in the node's enrolled map and the destination VIP:port in its
// meshed map, the destination is rewritten to Config.ProxyAddr and the
// original destination parked by socket cookie. sockops, at TCP_CONNECT_CB
// (local port known, SYN not sent yet), moves it to orig_dsts keyed by the
// 4-tuple (client ip:port, proxy ip:port): exactly what the proxy sees on
// accept. The record is deleted when the client socket reaches TCP_CLOSE
// (both maps are LRU as a backstop). getpeername4/6 rewrite the proxy
// address back to the VIP for the application. Everything else is left
// alone: other netns (including the node netns the proxy dials from),
// non-meshed destinations, UDP, IPv6 destinations. A connection to the
// capture port with no record gets false from Lookup and must be refused;
// Sync never meshes the proxy's own address, so such a record cannot exist.
// MPTCP clients work: the hooks run on the TCP subflow that reaches the
// proxy.
//
// # bpffs
//
// Pins must live on the host's bpffs to survive a restart: a bpffs mounted
// in the agent container's private mount namespace dies with the container,
// and with it every pinned link, so pods would bypass the mesh until the
// next agent attaches. Open therefore fails (ErrNoBPFFS) when Config.BPFFS
// is not a bpffs, unless Config.AllowPrivateBPFFS (tests). The DaemonSet's
// init container runs `weft-agent mount-bpffs`, which enters the host's
// mount namespace (hostPID, /proc/1/ns/mnt; CAP_SYS_ADMIN, CAP_SYS_CHROOT
// and CAP_SYS_PTRACE) and mounts bpffs at /sys/fs/bpf there when nothing is
// (MountBPFFSIn); the agent's hostPath /sys/fs/bpf (HostToContainer) then
// shows the host's mount. Cilium instead mounts from an init container with
// a Bidirectional hostPath, which requires a privileged container and a
// shared host mount; entering the namespace needs neither.
//
// # Several agents on one kernel
//
// Each node's agent loads its own copy of the programs and maps, pinned
// under <PinRoot>/<Node>/ (maps enrolled, meshed, pending, orig_dsts,
// strict, node_addrs, strict_refusals; links link_<program>). A program acts only on cookies in its own enrolled map,
// so agents attached at the same cgroup (or at nested ones) never act on
// each other's pods, and Cleanup of one node leaves the others alone.
//
// # Restarts
//
// Open adopts pinned objects instead of detaching: pinned maps are reused
// (contents survive), each pinned link is pointed at the newly loaded
// program with BPF_LINK_UPDATE. A kill -9 leaves the pinned links attached,
// so connections keep being redirected while no agent runs.
//
// # Finding a pod's netns cookie
//
// Sync takes a pod UID (and optionally a known netns path). Without a path
// it walks Config.CgroupPath once per Sync, indexing pod cgroups by UID:
// "pod<uid>" with the
// cgroupfs driver (kubepods/burstable/pod<uid>/<container-id>), or
// "kubepods-<qos>-pod<uid with _>.slice" with the systemd driver
// (kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/
// cri-containerd-<id>.scope). It reads a pid from any cgroup.procs below it
// (the pause process or any container: they share the sandbox netns), opens
// /proc/<pid>/ns/net, creates a socket in that netns on a locked OS thread
// (setns and back) and reads SO_NETNS_COOKIE (Linux 5.14); this kernel
// (6.18) has no NS_GET_COOKIE ioctl for netns files in its UAPI headers we
// build against, so the socket is the portable way. On a real node the
// agent runs with hostPID and the host's /sys/fs/cgroup mounted. The agent
// should skip hostNetwork pods before calling Sync (they share the node
// netns, which must never be enrolled).
//
// Programs cannot be unit-tested with BPF_PROG_TEST_RUN here: the kernel
// (6.18) does not support test runs for cgroup/sock_addr or sockops
// programs (TestPrivilegedProgTestRun records that); the privileged tests
// exercise them with real sockets in network namespaces instead.
package datapath
