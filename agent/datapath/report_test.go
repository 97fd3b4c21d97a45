package datapath

import "testing"

func TestReportFormat(t *testing.T) {
	r := Report{Kernel: "5.4.0-150-generic", Checks: []Check{
		{Name: "kernel", OK: false, Detail: "5.4.0-150-generic", Need: "Linux 5.8"},
		{Name: "btf", Optional: true, Detail: "no /sys/kernel/btf/vmlinux", Need: "CONFIG_DEBUG_INFO_BTF"},
		{Name: "program weft_getpeername4", Detail: "load: invalid argument", Need: "Linux 5.8 (cgroup/getpeername4)"},
		{Name: "cgroup v2", OK: true, Detail: "/sys/fs/cgroup"},
	}}
	want := `weft datapath preflight: FAIL (kernel 5.4.0-150-generic, minimum 5.8)
  FAIL  kernel                     5.4.0-150-generic
  warn  btf                        no /sys/kernel/btf/vmlinux
  FAIL  program weft_getpeername4  load: invalid argument
  ok    cgroup v2                  /sys/fs/cgroup
missing:
  kernel: needs Linux 5.8
  program weft_getpeername4: needs Linux 5.8 (cgroup/getpeername4)
weft needs Linux >= 5.8 with cgroup v2, bpffs and BPF cgroup links
`
	if r.OK() {
		t.Error("OK() with failed required checks")
	}
	if got := r.Format(); got != want {
		t.Errorf("Format:\n%s\nwant:\n%s", got, want)
	}
	ok := Report{Kernel: "6.18.1", Checks: []Check{{Name: "kernel", OK: true, Detail: "6.18.1"}, {Name: "btf", Optional: true}}}
	if !ok.OK() {
		t.Error("optional failure failed the report")
	}
	if got, want := ok.Format(), "weft datapath preflight: OK (kernel 6.18.1, minimum 5.8)\n  ok    kernel  6.18.1\n  warn  btf     \n"; got != want {
		t.Errorf("Format ok:\n%q\nwant\n%q", got, want)
	}
}

func TestKernelAtLeast(t *testing.T) {
	for rel, want := range map[string]bool{
		"6.18.44-fc-v669": true, "5.8.0": true, "5.10.0-28-amd64": true, "5.7.19": false,
		"4.19.0": false, "5.8": true, "garbage": false, "": false, "5.15rc1": true,
	} {
		if got := kernelAtLeast(rel, "5.8"); got != want {
			t.Errorf("kernelAtLeast(%q, 5.8) = %v, want %v", rel, got, want)
		}
	}
}
