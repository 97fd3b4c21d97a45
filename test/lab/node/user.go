package node

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// identity is who a container's processes run as.
type identity struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups, the primary group first
	Home     string   // from the image's /etc/passwd; "/" when the user has no entry
}

// userSpec is what decides a container's identity: the effective
// securityContext over the image config's User.
type userSpec struct {
	RunAsUser, RunAsGroup *int64
	ImageUser             string  // "", "uid", "uid:gid", "name", "name:group"
	Supplemental          []int64 // pod supplementalGroups, then fsGroup
}

// effectiveSecurityContext merges the pod's securityContext under the
// container's for the fields the lab uses, as the kubelet does.
func effectiveSecurityContext(pod *corev1.Pod, c corev1.Container) corev1.SecurityContext {
	var sc corev1.SecurityContext
	if p := pod.Spec.SecurityContext; p != nil {
		sc.RunAsUser, sc.RunAsGroup, sc.RunAsNonRoot = p.RunAsUser, p.RunAsGroup, p.RunAsNonRoot
	}
	if c.SecurityContext != nil {
		own := *c.SecurityContext
		own.RunAsUser = firstNonNil(own.RunAsUser, sc.RunAsUser)
		own.RunAsGroup = firstNonNil(own.RunAsGroup, sc.RunAsGroup)
		own.RunAsNonRoot = firstNonNil(own.RunAsNonRoot, sc.RunAsNonRoot)
		sc = own
	}
	return sc
}

func firstNonNil[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

// containerUserSpec is the userSpec of a container of pod running image user.
func containerUserSpec(pod *corev1.Pod, c corev1.Container, imageUser string) userSpec {
	sc := effectiveSecurityContext(pod, c)
	s := userSpec{RunAsUser: sc.RunAsUser, RunAsGroup: sc.RunAsGroup, ImageUser: imageUser}
	if p := pod.Spec.SecurityContext; p != nil {
		s.Supplemental = append(s.Supplemental, p.SupplementalGroups...)
		if p.FSGroup != nil {
			s.Supplemental = append(s.Supplemental, *p.FSGroup)
		}
	}
	return s
}

// verifyRunAsNonRoot is the kubelet's runAsNonRoot check (a
// CreateContainerConfigError when it fails). Only the image config's user is
// known at this point, not the image's /etc/passwd.
func verifyRunAsNonRoot(pod *corev1.Pod, c corev1.Container, imageUser string) error {
	sc := effectiveSecurityContext(pod, c)
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		return nil
	}
	where := fmt.Sprintf("(pod: %q, container: %s)", fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID), c.Name)
	if sc.RunAsUser != nil {
		if *sc.RunAsUser == 0 {
			return fmt.Errorf("container's runAsUser breaks non-root policy %s", where)
		}
		return nil
	}
	user, _, _ := strings.Cut(imageUser, ":")
	uid, err := strconv.ParseInt(user, 10, 64)
	switch {
	case user == "" || (err == nil && uid == 0):
		return fmt.Errorf("container has runAsNonRoot and image will run as root %s", where)
	case err != nil:
		return fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root %s", user, where)
	}
	return nil
}

type passwdEntry struct {
	Name     string
	UID, GID uint32
	Home     string
}

type groupEntry struct {
	Name    string
	GID     uint32
	Members []string
}

// parsePasswd reads /etc/passwd lines; malformed lines are skipped.
func parsePasswd(b []byte) []passwdEntry {
	var out []passwdEntry
	for _, f := range colonLines(b, 7) {
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 == nil && err2 == nil {
			out = append(out, passwdEntry{Name: f[0], UID: uint32(uid), GID: uint32(gid), Home: f[5]})
		}
	}
	return out
}

// parseGroup reads /etc/group lines; malformed lines are skipped.
func parseGroup(b []byte) []groupEntry {
	var out []groupEntry
	for _, f := range colonLines(b, 4) {
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		g := groupEntry{Name: f[0], GID: uint32(gid)}
		for m := range strings.SplitSeq(f[3], ",") {
			if m = strings.TrimSpace(m); m != "" {
				g.Members = append(g.Members, m)
			}
		}
		out = append(out, g)
	}
	return out
}

// colonLines splits the non-comment lines of a passwd-style file into
// exactly n fields.
func colonLines(b []byte, n int) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if f := strings.Split(line, ":"); len(f) == n {
			out = append(out, f)
		}
	}
	return out
}

// resolveIdentity resolves a userSpec against the image's /etc/passwd and
// /etc/group the way containerd and runc do: runAsUser replaces the image
// user (its primary group then comes from /etc/passwd, else 0), runAsGroup
// replaces the group, a user name must exist in /etc/passwd and a group name
// in /etc/group. The supplementary groups are the primary group, the groups
// of /etc/group listing the user, then spec.Supplemental.
func resolveIdentity(s userSpec, passwd, group []byte) (identity, error) {
	users, groups := parsePasswd(passwd), parseGroup(group)
	userPart, groupPart, _ := strings.Cut(s.ImageUser, ":")
	if s.RunAsUser != nil {
		userPart, groupPart = strconv.FormatInt(*s.RunAsUser, 10), ""
	}
	if s.RunAsGroup != nil {
		groupPart = strconv.FormatInt(*s.RunAsGroup, 10)
	}
	if userPart == "" {
		userPart = "0"
	}
	entry, err := findUser(users, userPart)
	if err != nil {
		return identity{}, err
	}
	id := identity{UID: entry.UID, GID: entry.GID, Home: cmp.Or(entry.Home, "/")}
	if groupPart != "" {
		if id.GID, err = findGroup(groups, groupPart); err != nil {
			return identity{}, err
		}
	}
	var extra []uint32
	for _, g := range groups {
		if entry.Name != "" && g.Name != entry.Name && slices.Contains(g.Members, entry.Name) {
			extra = append(extra, g.GID)
		}
	}
	for _, g := range s.Supplemental {
		extra = append(extra, uint32(g))
	}
	slices.Sort(extra)
	extra = slices.DeleteFunc(slices.Compact(extra), func(g uint32) bool { return g == id.GID })
	id.Groups = append([]uint32{id.GID}, extra...)
	return id, nil
}

// findUser looks a user up by uid or name. A numeric uid without an entry
// is valid (group 0, home "/"); an unknown name is not.
func findUser(users []passwdEntry, u string) (passwdEntry, error) {
	if n, err := strconv.ParseUint(u, 10, 32); err == nil {
		for _, e := range users {
			if e.UID == uint32(n) {
				return e, nil
			}
		}
		return passwdEntry{UID: uint32(n)}, nil
	}
	for _, e := range users {
		if e.Name == u {
			return e, nil
		}
	}
	return passwdEntry{}, fmt.Errorf("unable to find user %s: no matching entries in passwd file", u)
}

func findGroup(groups []groupEntry, g string) (uint32, error) {
	if n, err := strconv.ParseUint(g, 10, 32); err == nil {
		return uint32(n), nil
	}
	for _, e := range groups {
		if e.Name == g {
			return e.GID, nil
		}
	}
	return 0, fmt.Errorf("unable to find group %s: no matching entries in group file", g)
}
