package node

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\n# comment\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\nbroken line\nweb:x:1000:1000::/srv:/bin/sh\n"
	testGroup  = "root:x:0:\nnonroot:x:65532:\nweb:x:1000:\naudio:x:29:web,nonroot\nstaff:x:50:web\n"
)

func TestResolveIdentity(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		name string
		spec userSpec
		want identity
		err  string
	}{
		{"empty image user is root", userSpec{}, identity{0, 0, []uint32{0}, "/root"}, ""},
		{"numeric uid takes group and home from passwd", userSpec{ImageUser: "65532"}, identity{65532, 65532, []uint32{65532, 29}, "/home/nonroot"}, ""},
		{"numeric uid without entry", userSpec{ImageUser: "4242"}, identity{4242, 0, []uint32{0}, "/"}, ""},
		{"name", userSpec{ImageUser: "web"}, identity{1000, 1000, []uint32{1000, 29, 50}, "/srv"}, ""},
		{"name:group", userSpec{ImageUser: "web:staff"}, identity{1000, 50, []uint32{50, 29}, "/srv"}, ""},
		{"uid:gid", userSpec{ImageUser: "7:8"}, identity{7, 8, []uint32{8}, "/"}, ""},
		{"runAsUser replaces the image user and its group", userSpec{ImageUser: "web:staff", RunAsUser: i64(65532)}, identity{65532, 65532, []uint32{65532, 29}, "/home/nonroot"}, ""},
		{"runAsGroup replaces the group", userSpec{ImageUser: "65532", RunAsGroup: i64(3000)}, identity{65532, 3000, []uint32{3000, 29}, "/home/nonroot"}, ""},
		{"supplemental groups and fsGroup", userSpec{ImageUser: "4242", Supplemental: []int64{1234, 2000, 1234, 0}}, identity{4242, 0, []uint32{0, 1234, 2000}, "/"}, ""},
		{"unknown user", userSpec{ImageUser: "ghost"}, identity{}, "unable to find user ghost: no matching entries in passwd file"},
		{"unknown group", userSpec{ImageUser: "web:ghosts"}, identity{}, "unable to find group ghosts: no matching entries in group file"},
	} {
		got, err := resolveIdentity(tc.spec, []byte(testPasswd), []byte(testGroup))
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || got.UID != tc.want.UID || got.GID != tc.want.GID || got.Home != tc.want.Home || !slices.Equal(got.Groups, tc.want.Groups) {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	if got, err := resolveIdentity(userSpec{ImageUser: "65532"}, nil, nil); err != nil || got.UID != 65532 || got.GID != 0 {
		t.Errorf("numeric user in an image without /etc/passwd: %+v, %v", got, err)
	}
}

func TestVerifyRunAsNonRoot(t *testing.T) {
	yes, no, root, user := true, false, int64(0), int64(1000)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u-1"}}
	where := `(pod: "web_shop(u-1)", container: app)`
	for _, tc := range []struct {
		name      string
		podSC     *corev1.PodSecurityContext
		sc        *corev1.SecurityContext
		imageUser string
		err       string
	}{
		{"not asked", nil, nil, "", ""},
		{"asked, root image", &corev1.PodSecurityContext{RunAsNonRoot: &yes}, nil, "", "container has runAsNonRoot and image will run as root " + where},
		{"asked, uid 0 image", nil, &corev1.SecurityContext{RunAsNonRoot: &yes}, "0:0", "container has runAsNonRoot and image will run as root " + where},
		{"asked, numeric image user", nil, &corev1.SecurityContext{RunAsNonRoot: &yes}, "65532", ""},
		{"asked, named image user", nil, &corev1.SecurityContext{RunAsNonRoot: &yes}, "nonroot:nonroot", "container has runAsNonRoot and image has non-numeric user (nonroot), cannot verify user is non-root " + where},
		{"runAsUser satisfies it", &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &user}, nil, "", ""},
		{"runAsUser 0 breaks it", &corev1.PodSecurityContext{RunAsNonRoot: &yes}, &corev1.SecurityContext{RunAsUser: &root}, "65532", "container's runAsUser breaks non-root policy " + where},
		{"container overrides pod", &corev1.PodSecurityContext{RunAsNonRoot: &yes}, &corev1.SecurityContext{RunAsNonRoot: &no}, "", ""},
	} {
		p := pod.DeepCopy()
		p.Spec.SecurityContext = tc.podSC
		err := verifyRunAsNonRoot(p, corev1.Container{Name: "app", SecurityContext: tc.sc}, tc.imageUser)
		if (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestContainerUserSpec(t *testing.T) {
	fs, u := int64(2000), int64(7)
	pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsUser: &u, SupplementalGroups: []int64{1234}, FSGroup: &fs}}}
	s := containerUserSpec(pod, corev1.Container{}, "web")
	if s.RunAsUser == nil || *s.RunAsUser != 7 || !slices.Equal(s.Supplemental, []int64{1234, 2000}) || s.ImageUser != "web" {
		t.Errorf("spec %+v", s)
	}
}
