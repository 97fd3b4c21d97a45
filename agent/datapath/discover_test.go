package datapath

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindCgroup2(t *testing.T) {
	cases := []struct {
		name, mountinfo, want string
		ok                    bool
	}{
		{
			name: "hybrid",
			mountinfo: `25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
`,
			want: "/sys/fs/cgroup/unified", ok: true,
		},
		{
			name:      "unified",
			mountinfo: "34 25 0:29 / /sys/fs/cgroup rw,nosuid shared:10 - cgroup2 cgroup2 rw\n36 25 0:40 / /run/other\\040cg rw - cgroup2 none rw\n",
			want:      "/sys/fs/cgroup", ok: true,
		},
		{
			name:      "elsewhere, escaped",
			mountinfo: "36 25 0:40 / /run/my\\040cg rw shared:1 - cgroup2 none rw\n",
			want:      "/run/my cg", ok: true,
		},
		{
			name:      "v1 only",
			mountinfo: "35 33 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := findCgroup2(c.mountinfo)
			if got != c.want || ok != c.ok {
				t.Errorf("findCgroup2 = %q, %v; want %q, %v", got, ok, c.want, c.ok)
			}
		})
	}
}

func TestPodCgroupMatches(t *testing.T) {
	uid := "0b6c7a3e-1f2d-4c5b-9a8e-7d6f5e4c3b2a"
	u := strings.ReplaceAll(uid, "-", "_")
	for name, want := range map[string]bool{
		"pod" + uid:                               true, // cgroupfs driver, lab
		"kubepods-besteffort-pod" + u + ".slice":  true, // systemd driver
		"kubepods-pod" + u + ".slice":             true, // guaranteed QoS, systemd
		"pod" + uid + "x":                         false,
		"pod" + uid[:10]:                          false,
		"cri-containerd-" + uid + ".scope":        false,
		"kubepods-burstable-pod" + uid + ".slice": true,
	} {
		if got := podCgroupMatches(name, uid); got != want {
			t.Errorf("podCgroupMatches(%q) = %v, want %v", name, got, want)
		}
	}
	if podCgroupMatches("pod", "") {
		t.Error("empty uid matched")
	}
}

// FindPodNetns on a fake tree: plain directories with cgroup.procs files.
func TestFindPodNetns(t *testing.T) {
	root := t.TempDir()
	uid := "11111111-2222-3333-4444-555555555555"
	scope := filepath.Join(root, "kubepods-burstable.slice", "kubepods-burstable-pod11111111_2222_3333_4444_555555555555.slice", "cri-containerd-abc.scope")
	if err := os.MkdirAll(scope, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(filepath.Dir(scope), "cgroup.procs"), "")
	write(filepath.Join(scope, "cgroup.procs"), "4242\n4243\n")
	got, err := FindPodNetns(root, uid)
	if err != nil || got != "/proc/4242/ns/net" {
		t.Fatalf("FindPodNetns = %q, %v", got, err)
	}
	if _, err := FindPodNetns(root, "99999999-2222-3333-4444-555555555555"); err == nil || !strings.Contains(err.Error(), "pod cgroup not found") {
		t.Errorf("unknown pod: %v", err)
	}
	write(filepath.Join(scope, "cgroup.procs"), "")
	if _, err := FindPodNetns(root, uid); err == nil || !strings.Contains(err.Error(), "no process") {
		t.Errorf("empty pod: %v", err)
	}
}

func TestPodUIDFromCgroupName(t *testing.T) {
	for name, want := range map[string]string{
		"pod0b6c7a3e-1f2d-4c5b-9a8e-7d6f5e4c3b2a":                               "0b6c7a3e-1f2d-4c5b-9a8e-7d6f5e4c3b2a",
		"kubepods-burstable-pod0b6c7a3e_1f2d_4c5b_9a8e_7d6f5e4c3b2a.slice":      "0b6c7a3e-1f2d-4c5b-9a8e-7d6f5e4c3b2a",
		"kubepods-pod0b6c7a3e_1f2d_4c5b_9a8e_7d6f5e4c3b2a.slice":                "0b6c7a3e-1f2d-4c5b-9a8e-7d6f5e4c3b2a",
		"pod6d4b8f3e9a0c1b2d3e4f5a6b7c8d9e0f":                                   "6d4b8f3e9a0c1b2d3e4f5a6b7c8d9e0f", // static pod (config hash)
		"kubepods-besteffort.slice":                                             "",
		"cri-containerd-0b6c7a3e1f2d4c5b9a8e7d6f5e4c3b2a0b6c7a3e1f2d4c5b.scope": "",
		"pod123": "",
		"mypod0b6c7a3e-1f2d-4c5b-9a8e-7d6f5e4c3b2a": "",
		"podzzzzzzzz-1f2d-4c5b-9a8e-7d6f5e4c3b2a":   "",
	} {
		got, ok := podUIDFromCgroupName(name)
		if got != want || ok != (want != "") {
			t.Errorf("podUIDFromCgroupName(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}

func TestPodCgroupsIndex(t *testing.T) {
	root := t.TempDir()
	dirs := []string{
		"besteffort/pod11111111-2222-3333-4444-555555555555/abc",
		"kubepods-burstable.slice/kubepods-burstable-pod66666666_2222_3333_4444_555555555555.slice/cri-containerd-x.scope",
		"system.slice/sshd.service",
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got, err := podCgroups(root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"11111111-2222-3333-4444-555555555555": filepath.Join(root, "besteffort/pod11111111-2222-3333-4444-555555555555"),
		"66666666-2222-3333-4444-555555555555": filepath.Join(root, "kubepods-burstable.slice/kubepods-burstable-pod66666666_2222_3333_4444_555555555555.slice"),
	}
	if len(got) != len(want) {
		t.Fatalf("podCgroups = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("podCgroups[%s] = %q, want %q", k, got[k], v)
		}
	}
	if _, err := podCgroups(filepath.Join(root, "missing")); err == nil {
		t.Error("podCgroups of a missing parent: no error")
	}
}
