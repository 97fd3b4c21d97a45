package datapath

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/bpf"
)

// hookNeed names the kernel version that introduced each hook.
var hookNeed = map[string]string{
	bpf.RedirectProgWeftConnect4:     "Linux 4.17 (cgroup/connect4), 5.7 (netns cookie in sock_addr programs)",
	bpf.RedirectProgWeftConnect6:     "Linux 4.17 (cgroup/connect6), 5.7 (netns cookie in sock_addr programs)",
	bpf.RedirectProgWeftGetpeername4: "Linux 5.8 (cgroup/getpeername4)",
	bpf.RedirectProgWeftGetpeername6: "Linux 5.8 (cgroup/getpeername6)",
	bpf.RedirectProgWeftSockops:      "Linux 4.13 (sockops), 5.0 (socket cookie in sockops)",
}

var attachName = map[ebpf.AttachType]string{
	ebpf.AttachCGroupInet4Connect:     "cgroup/connect4",
	ebpf.AttachCGroupInet6Connect:     "cgroup/connect6",
	ebpf.AttachCgroupInet4GetPeername: "cgroup/getpeername4",
	ebpf.AttachCgroupInet6GetPeername: "cgroup/getpeername6",
	ebpf.AttachCGroupSockOps:          "sockops",
}

// Preflight probes what the redirect needs: kernel version, BTF, the cgroup
// v2 mount, bpffs, loading every program (the verifier accepts it) and
// attaching it as a cgroup bpf_link (to a temporary cgroup it creates below
// under, the attach point relative to the cgroup v2 mount, "" for its root,
// and removes), and SO_NETNS_COOKIE for enrollment. It changes nothing it
// does not undo. The agent passes its attach point: it needs no write access
// anywhere else (the root of a cgroup v2 mount may be read-only to a root
// without CAP_DAC_OVERRIDE, which the agent does not hold).
// Render the result with Report.Format.
func Preflight(under string) Report {
	var r Report
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		r.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	r.Checks = append(r.Checks, Check{
		Name: "kernel", OK: kernelAtLeast(r.Kernel, MinKernel),
		Detail: r.Kernel, Need: "Linux " + MinKernel,
	})

	btf := Check{Name: "btf", Optional: true, Need: "CONFIG_DEBUG_INFO_BTF (not required: the programs use no CO-RE)"}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err == nil {
		btf.OK, btf.Detail = true, "/sys/kernel/btf/vmlinux"
	} else {
		btf.Detail = "no /sys/kernel/btf/vmlinux"
	}
	r.Checks = append(r.Checks, btf)

	cg2, cgErr := Cgroup2Root()
	cg := Check{Name: "cgroup v2", OK: true, Need: "a cgroup v2 hierarchy holding the pods (unified or hybrid layout)"}
	if cgErr != nil {
		cg.Detail = fmt.Sprintf("none mounted (%v); Open mounts a private one at %s, which only works with an attach point at its root", cgErr, privateCgroup2)
	} else {
		cg.Detail = cg2
	}
	r.Checks = append(r.Checks, cg)

	bfs := Check{Name: "bpffs", Optional: true, Need: "bpffs mounted on the host at " + DefaultBPFFS}
	if isFS(DefaultBPFFS, unix.BPF_FS_MAGIC) {
		bfs.OK, bfs.Detail = true, "mounted at "+DefaultBPFFS
	} else {
		bfs.Detail = "not mounted at " + DefaultBPFFS + ": the agent refuses to start; run `weft-agent mount-bpffs` (the DaemonSet's init container does)"
	}
	r.Checks = append(r.Checks, bfs)

	parent := cg2
	if cg2 != "" && under != "" {
		parent = filepath.Join(cg2, filepath.Clean("/"+under))
	}
	r.Checks = append(r.Checks, probePrograms(parent)...)
	r.Checks = append(r.Checks, probeNetnsCookie())
	return r
}

// probePrograms loads the programs and attaches each to a temporary cgroup
// below parent ("": no cgroup v2 mounted).
func probePrograms(parent string) []Check {
	var out []Check
	spec, err := bpf.LoadRedirect()
	if err != nil {
		return []Check{{Name: "programs", Detail: err.Error(), Need: "a readable embedded object"}}
	}
	_ = spec.Variables[bpf.RedirectVarProxyIp4].Set(ip4Word(netipLoopback))
	_ = spec.Variables[bpf.RedirectVarProxyPort].Set(uint16(DefaultCapturePort))

	progs := map[string]*ebpf.Program{}
	coll, err := ebpf.NewCollection(spec)
	if err == nil {
		defer coll.Close()
		for _, h := range hooks {
			progs[h.prog] = coll.Programs[h.prog]
			out = append(out, Check{Name: "program " + h.prog, OK: true, Detail: "loaded", Need: hookNeed[h.prog]})
		}
	} else {
		// Load one at a time to name the ones that fail.
		for _, h := range hooks {
			one := spec.Copy()
			for name := range one.Programs {
				if name != h.prog {
					delete(one.Programs, name)
				}
			}
			c, err := ebpf.NewCollection(one)
			chk := Check{Name: "program " + h.prog, Need: hookNeed[h.prog]}
			if err != nil {
				chk.Detail = "load: " + err.Error()
			} else {
				defer c.Close()
				progs[h.prog] = c.Programs[h.prog]
				chk.OK, chk.Detail = true, "loaded"
			}
			out = append(out, chk)
		}
	}

	if parent == "" {
		out = append(out, Check{Name: "attach", Detail: "skipped: no cgroup v2 mounted", Need: "cgroup v2", Optional: true})
		return out
	}
	dir := filepath.Join(parent, fmt.Sprintf("weft-preflight-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return append(out, Check{Name: "attach", Detail: "create temporary cgroup: " + err.Error(), Need: "a writable cgroup v2 at the attach point (run as root)"})
	}
	defer os.Remove(dir)
	f, err := os.Open(dir)
	if err != nil {
		return append(out, Check{Name: "attach", Detail: err.Error(), Need: "a readable cgroup v2"})
	}
	defer f.Close()
	for _, h := range hooks {
		chk := Check{Name: "attach " + attachName[h.attach], Need: hookNeed[h.prog] + ", Linux 5.7 (cgroup bpf_link)"}
		p := progs[h.prog]
		if p == nil {
			chk.Detail = "program did not load"
			out = append(out, chk)
			continue
		}
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: int(f.Fd()), Program: p, Attach: h.attach})
		if err != nil {
			chk.Detail = "attach as bpf_link: " + err.Error()
		} else {
			l.Close()
			chk.OK, chk.Detail = true, "bpf_link ok"
		}
		out = append(out, chk)
	}
	return out
}

func probeNetnsCookie() Check {
	c := Check{Name: "netns cookie", Need: "Linux 5.14 (SO_NETNS_COOKIE, used to enroll pods)"}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		c.Detail = "socket: " + err.Error()
		return c
	}
	defer unix.Close(fd)
	v, err := socketNetnsCookie(fd)
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	c.OK, c.Detail = true, fmt.Sprintf("SO_NETNS_COOKIE ok (this netns: %d)", v)
	return c
}
