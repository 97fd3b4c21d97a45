package datapath

import (
	"encoding/binary"
	"net/netip"

	"github.com/weft-mesh/weft/bpf"
)

// The BPF maps keep IPv4 addresses in network byte order (as the kernel's
// context fields hold them) and ports in host byte order. The generated Go
// structs carry the address as a uint32, so the 4 address bytes are copied
// in native order to keep their memory layout.

var netipLoopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

func ip4Word(a netip.Addr) uint32 {
	b := a.Unmap().As4()
	return binary.NativeEndian.Uint32(b[:])
}

func wordIP4(w uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], w)
	return netip.AddrFrom4(b)
}

func vipKey(v netip.AddrPort) bpf.RedirectVipKey {
	return bpf.RedirectVipKey{Ip: ip4Word(v.Addr()), Port: v.Port()}
}

func vipFromKey(k bpf.RedirectVipKey) netip.AddrPort {
	return netip.AddrPortFrom(wordIP4(k.Ip), k.Port)
}

// tupleKey builds the record key for a connection the proxy accepted:
// client = remote address, proxy = local address. ok is false for
// addresses the redirect never records (IPv6).
func tupleKey(client, proxy netip.AddrPort) (bpf.RedirectTuple, bool) {
	c, p := client.Addr().Unmap(), proxy.Addr().Unmap()
	if !c.Is4() || !p.Is4() {
		return bpf.RedirectTuple{}, false
	}
	return bpf.RedirectTuple{
		ClientIp:   ip4Word(c),
		ProxyIp:    ip4Word(p),
		ClientPort: client.Port(),
		ProxyPort:  proxy.Port(),
	}, true
}

func originalFromRecord(r bpf.RedirectOrigDst) Original {
	return Original{Dst: netip.AddrPortFrom(wordIP4(r.Ip), r.Port), NetnsCookie: r.NetnsCookie}
}
