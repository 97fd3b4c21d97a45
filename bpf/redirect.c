//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Weft redirect: connections from enrolled network namespaces to meshed
// Service VIP:ports are rewritten to the node proxy's outbound capture
// address; the proxy learns the original destination from orig_dsts, keyed by
// the 4-tuple it sees; getpeername still shows the VIP to the application.
//
// One agent per node loads its own copy of these programs and maps (pinned
// under /sys/fs/bpf/weft/<node>/), so several agents on one kernel never share
// state: a program only acts on netns cookies in its own node's `enrolled` map.
//
// Byte order: IPv4 addresses are kept as on the wire (network order, as the
// context fields hold them); ports in map keys and values are in host order.
//
// clang-14 trap: each context field is read exactly once into a local, so the
// compiler never emits ctx+offset pointer arithmetic the verifier rejects.

#include "headers/vmlinux.h"

char __license[] SEC("license") = "Dual BSD/GPL";

// Set from Go (spec.Variables[...].Set) before loading.
volatile const __u32 proxy_ip4 = 0;  // network byte order
volatile const __u16 proxy_port = 0; // host byte order
// The node proxy marks (SO_MARK) the sockets it dials pods with:
// (sk->mark & dial_mark_mask) == dial_mark proves a connect is the proxy's.
// dial_mark 0 disables the proof (no socket passes it).
volatile const __u32 dial_mark = 0;
volatile const __u32 dial_mark_mask = 0;

// A meshed destination: Service VIP (IPv4) and port.
struct vip_key {
	__be32 ip;
	__u16 port;
	__u16 pad;
};

// The original destination of a redirected connection.
struct orig_dst {
	__be32 ip;
	__u16 port;
	__u16 pad;
	__u64 netns_cookie;
};

// A redirected connection as the proxy sees it: client = the accepted
// connection's remote address, proxy = its local address.
struct tuple {
	__be32 client_ip;
	__be32 proxy_ip;
	__u16 client_port;
	__u16 proxy_port;
};

// Netns cookies of this node's enrolled pods. Written by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} enrolled SEC(".maps");

// Meshed VIP:ports (destinations that have mesh policy). Written by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct vip_key);
	__type(value, __u32);
} meshed SEC(".maps");

// Between connect (no local port yet) and the SYN: socket cookie -> original
// destination. Moved into orig_dsts by sockops; LRU so failed connects never
// leak.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct orig_dst);
} pending SEC(".maps");

// 4-tuple -> original destination, read by the proxy. Deleted when the
// client socket closes; LRU as a backstop.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct tuple);
	__type(value, struct orig_dst);
} orig_dsts SEC(".maps");

// Strict mTLS. A pod whose workload requires mTLS accepts TCP connections
// only through its node proxy's inbound (which dials it from the node netns
// with a marked socket). Two checks, both at the node's kubepods cgroup:
//
//  - connect4/6: a connect from this node's kubepods subtree (other pods,
//    hostNetwork pods) to a strict pod IP is refused (EPERM) unless the
//    socket carries the proxy's mark or the caller is the pod itself
//    (its own netns). The kubelet runs outside kubepods: its probes never
//    meet this check.
//  - cgroup_skb/egress on this node's pods' sockets: a TCP SYN to a strict
//    pod, as addressed after NAT (a Service VIP or NodePort that kube-proxy
//    translated to the pod), from a socket without the proxy's mark and
//    not the pod's own is dropped. This closes the path around connect4:
//    a hostNetwork pod reaching a strict pod of its node through a Service
//    (its SYN carries the node's address, which the ingress check trusts).
//  - cgroup_skb/ingress on the strict pod's own sockets: a TCP SYN whose
//    source is not one of this node's addresses (node_addrs: where the
//    proxy and the kubelet dial from) and not the pod's own IP or
//    loopback is dropped. This refuses other nodes and pods on other
//    nodes (and, again, same-node pods, whose SYN carries their pod IP).
//
// Known gaps (documented in agent/datapath): traffic this node forwards
// and SNATs to its own address (a NodePort Service with
// externalTrafficPolicy: Cluster) looks like the node's own and passes the
// SYN check; host processes outside kubepods (kubelet, an admin's shell)
// are trusted as the node; UDP and IPv6 are not checked.

// A strict pod, keyed by its IPv4 address (network order).
struct strict_pod {
	__u64 netns_cookie; // the pod's own netns: it may connect to itself
	__u32 flags;        // reserved, 0
	__u32 pad;
};

// Strict pods of this node. Written by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32);
	__type(value, struct strict_pod);
} strict SEC(".maps");

// This node's own IPv4 addresses (network order): a SYN to a strict pod
// from one of them was sent by this node (the proxy, the kubelet). Written
// by the agent. Sized for kube-proxy's IPVS mode, which puts every ClusterIP
// on a dummy interface of the node.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __be32);
	__type(value, __u32);
} node_addrs SEC(".maps");

// Refusals by reason (index), summed over CPUs by the agent's metrics.
enum strict_reason {
	STRICT_REFUSED_CONNECT = 0, // plaintext connect from this node refused
	STRICT_DROPPED_SYN = 1,     // SYN from another host dropped
	STRICT_DROPPED_EGRESS = 2,  // SYN from this node's pods, after NAT, dropped
	STRICT_REASONS = 3,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STRICT_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} strict_refusals SEC(".maps");

static __always_inline void count_refusal(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&strict_refusals, &reason);
	if (n)
		*n += 1;
}

// strict_refuses decides a TCP connect to IPv4 ip (network order). It
// returns 1 when the connect must be refused.
static __always_inline int strict_refuses(struct bpf_sock_addr *ctx, __u32 type, __be32 ip, __u32 mark)
{
	if (type != SOCK_STREAM)
		return 0;
	struct strict_pod *sp = bpf_map_lookup_elem(&strict, &ip);
	if (!sp)
		return 0;
	if (dial_mark != 0 && (mark & dial_mark_mask) == dial_mark)
		return 0; // the node proxy's inbound delivering a tunnelled connection
	__u64 own = sp->netns_cookie;
	if (bpf_get_netns_cookie(ctx) == own)
		return 0; // the pod calling itself on its own IP
	count_refusal(STRICT_REFUSED_CONNECT);
	return 1;
}

// sock_mark reads the socket's SO_MARK (0 without a socket).
static __always_inline __u32 sock_mark(struct bpf_sock *sk)
{
	if (!sk)
		return 0;
	__u32 mark = sk->mark;
	return mark;
}

// should_redirect decides for one IPv4 destination (network order ip, network
// order port as the context holds it). Returns 1 and fills *od when the
// connection must go to the proxy.
static __always_inline int should_redirect(void *ctx, __u32 type, __be32 ip, __u32 user_port,
					   struct orig_dst *od)
{
	if (type != SOCK_STREAM)
		return 0;
	if (proxy_ip4 == 0 || proxy_port == 0)
		return 0;

	__u64 netns = bpf_get_netns_cookie(ctx);
	if (!bpf_map_lookup_elem(&enrolled, &netns))
		return 0;

	struct vip_key key = {};
	key.ip = ip;
	key.port = bpf_ntohs((__u16)user_port);
	key.pad = 0;
	if (!bpf_map_lookup_elem(&meshed, &key))
		return 0;

	od->ip = ip;
	od->port = key.port;
	od->pad = 0;
	od->netns_cookie = netns;
	return 1;
}

SEC("cgroup/connect4")
int weft_connect4(struct bpf_sock_addr *ctx)
{
	__u32 type = ctx->type;
	__u32 ip = ctx->user_ip4;
	__u32 port = ctx->user_port;
	struct bpf_sock *sk = ctx->sk;

	if (strict_refuses(ctx, type, ip, sock_mark(sk)))
		return 0; // EPERM

	struct orig_dst od = {};
	if (!should_redirect(ctx, type, ip, port, &od))
		return 1;

	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&pending, &cookie, &od, BPF_ANY))
		return 1; // cannot record: leave the connection untouched

	ctx->user_ip4 = proxy_ip4;
	ctx->user_port = (__u32)bpf_htons(proxy_port);
	return 1;
}

// An AF_INET6 socket connecting to ::ffff:a.b.c.d runs connect6, not
// connect4: handle the v4-mapped form the same way.
SEC("cgroup/connect6")
int weft_connect6(struct bpf_sock_addr *ctx)
{
	__u32 type = ctx->type;
	__u32 w0 = ctx->user_ip6[0];
	__u32 w1 = ctx->user_ip6[1];
	__u32 w2 = ctx->user_ip6[2];
	__u32 w3 = ctx->user_ip6[3];
	__u32 port = ctx->user_port;
	struct bpf_sock *sk = ctx->sk;

	if (w0 != 0 || w1 != 0 || w2 != bpf_htonl(0x0000ffff))
		return 1;

	if (strict_refuses(ctx, type, w3, sock_mark(sk)))
		return 0; // EPERM

	struct orig_dst od = {};
	if (!should_redirect(ctx, type, w3, port, &od))
		return 1;

	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&pending, &cookie, &od, BPF_ANY))
		return 1;

	ctx->user_ip6[3] = proxy_ip4;
	ctx->user_port = (__u32)bpf_htons(proxy_port);
	return 1;
}

// peer_record finds the record of a socket whose peer is the proxy.
static __always_inline struct orig_dst *peer_record(struct bpf_sock *sk, __be32 peer_ip, __u32 peer_port)
{
	if (!sk)
		return 0;
	if (peer_ip != proxy_ip4 || bpf_ntohs((__u16)peer_port) != proxy_port)
		return 0;
	__u32 src_ip = sk->src_ip4;
	__u32 src_port = sk->src_port;

	struct tuple key = {};
	key.client_ip = src_ip;
	key.proxy_ip = peer_ip;
	key.client_port = (__u16)src_port;
	key.proxy_port = proxy_port;
	return bpf_map_lookup_elem(&orig_dsts, &key);
}

SEC("cgroup/getpeername4")
int weft_getpeername4(struct bpf_sock_addr *ctx)
{
	__u32 ip = ctx->user_ip4;
	__u32 port = ctx->user_port;
	struct bpf_sock *sk = ctx->sk;

	struct orig_dst *od = peer_record(sk, ip, port);
	if (!od)
		return 1;
	__u32 oip = od->ip;
	__u16 oport = od->port;
	ctx->user_ip4 = oip;
	ctx->user_port = (__u32)bpf_htons(oport);
	return 1;
}

SEC("cgroup/getpeername6")
int weft_getpeername6(struct bpf_sock_addr *ctx)
{
	__u32 w0 = ctx->user_ip6[0];
	__u32 w1 = ctx->user_ip6[1];
	__u32 w2 = ctx->user_ip6[2];
	__u32 w3 = ctx->user_ip6[3];
	__u32 port = ctx->user_port;
	struct bpf_sock *sk = ctx->sk;

	if (w0 != 0 || w1 != 0 || w2 != bpf_htonl(0x0000ffff))
		return 1;

	struct orig_dst *od = peer_record(sk, w3, port);
	if (!od)
		return 1;
	__u32 oip = od->ip;
	__u16 oport = od->port;
	ctx->user_ip6[3] = oip;
	ctx->user_port = (__u32)bpf_htons(oport);
	return 1;
}

SEC("sockops")
int weft_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		// The local port is assigned by now and the SYN not yet sent, so
		// the record exists before the proxy can accept.
		__u64 cookie = bpf_get_socket_cookie(skops);
		struct orig_dst *od = bpf_map_lookup_elem(&pending, &cookie);
		if (!od)
			return 1;
		struct orig_dst rec = *od;

		__u32 lip = skops->local_ip4;
		__u32 lport = skops->local_port;   // host order
		__u32 rip = skops->remote_ip4;
		__u32 rport = skops->remote_port;  // network order, in the high 16 bits

		struct tuple key = {};
		key.client_ip = lip;
		key.proxy_ip = rip;
		key.client_port = (__u16)lport;
		key.proxy_port = bpf_ntohs((__u16)(rport >> 16));
		bpf_map_update_elem(&orig_dsts, &key, &rec, BPF_ANY);
		bpf_map_delete_elem(&pending, &cookie);
		bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}

	if (op == BPF_SOCK_OPS_STATE_CB) {
		__u32 newstate = skops->args[1];
		if (newstate != BPF_TCP_CLOSE)
			return 1;
		__u32 lip = skops->local_ip4;
		__u32 lport = skops->local_port;
		__u32 rip = skops->remote_ip4;
		__u32 rport = skops->remote_port;

		struct tuple key = {};
		key.client_ip = lip;
		key.proxy_ip = rip;
		key.client_port = (__u16)lport;
		key.proxy_port = bpf_ntohs((__u16)(rport >> 16));
		bpf_map_delete_elem(&orig_dsts, &key);
	}
	return 1;
}

// tcp_syn reads an IPv4 TCP packet's addresses and whether it opens a
// connection (SYN without ACK). skb data starts at the network header.
static __always_inline int tcp_syn(struct __sk_buff *skb, __be32 *saddr, __be32 *daddr)
{
	__u8 iph[20];
	if (bpf_skb_load_bytes(skb, 0, iph, sizeof(iph)))
		return 0;
	if ((iph[0] >> 4) != 4 || iph[9] != IPPROTO_TCP)
		return 0;
	__u8 flags;
	__u32 ihl = (iph[0] & 0x0f) * 4;
	if (ihl < 20 || bpf_skb_load_bytes(skb, ihl + 13, &flags, 1))
		return 0;
	if (!(flags & 0x02) || (flags & 0x10))
		return 0; // not a SYN: no new connection
	__builtin_memcpy(saddr, &iph[12], 4);
	__builtin_memcpy(daddr, &iph[16], 4);
	return 1;
}

// Strict mTLS, third check: runs for every packet sent by a socket in the
// kubepods subtree, after the output NAT hooks, so daddr is where the SYN
// really goes. The socket's own mark is read (not the packet's, which
// netfilter rules may rewrite).
SEC("cgroup_skb/egress")
int weft_strict_egress(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	__be32 saddr = 0, daddr = 0;
	if (!tcp_syn(skb, &saddr, &daddr))
		return 1;
	if (!bpf_map_lookup_elem(&strict, &daddr))
		return 1;
	if (saddr == daddr)
		return 1; // the pod itself
	if (sk) {
		sk = bpf_sk_fullsock(sk);
		if (sk) {
			__u32 mark = sk->mark;
			if (dial_mark != 0 && (mark & dial_mark_mask) == dial_mark)
				return 1; // the node proxy's inbound
		}
	}
	count_refusal(STRICT_DROPPED_EGRESS);
	return 0;
}

// Strict mTLS, second check: runs for every packet delivered to a socket
// in the kubepods subtree. skb data starts at the network header. Only an
// IPv4 TCP SYN (SYN set, ACK clear) to a strict pod is examined: without a
// SYN no connection exists, so later packets pass untouched.
SEC("cgroup_skb/ingress")
int weft_strict_ingress(struct __sk_buff *skb)
{
	__be32 saddr = 0, daddr = 0;
	if (!tcp_syn(skb, &saddr, &daddr))
		return 1;
	if (!bpf_map_lookup_elem(&strict, &daddr))
		return 1;
	if (saddr == daddr || (bpf_ntohl(saddr) >> 24) == 127)
		return 1; // the pod itself
	if (bpf_map_lookup_elem(&node_addrs, &saddr))
		return 1; // this node: its proxy, its kubelet
	count_refusal(STRICT_DROPPED_SYN);
	return 0;
}
