package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiext "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"
)

// bootstrapRBAC installs what the lab needs before nodes start: RBAC for kube-proxy
// running with the node identity.
func (cp *ControlPlane) bootstrapRBAC(ctx context.Context) error {
	// kube-proxy runs in each node netns with that node's credentials (group
	// system:nodes); grant it what the real kube-proxy identity gets.
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-lab:node-proxier"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node-proxier"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:nodes"}},
	}
	if err := create(ctx, func(ctx context.Context) error {
		_, err := cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("create node-proxier binding: %w", err)
	}
	return nil
}

// InstallCRDs installs the Gateway API CRDs of Config.CRDDir and waits until they are
// Established.
func (cp *ControlPlane) InstallCRDs(ctx context.Context) error {
	crds, err := LoadCRDs(cp.cfg.CRDDir)
	if err != nil {
		return err
	}
	c, err := apiext.NewForConfig(cp.AdminConfig())
	if err != nil {
		return err
	}
	return InstallCRDs(ctx, c, crds)
}

// create retries fn until the object exists: RBAC and CRD creation can fail for a
// moment right after /readyz while the apiserver's post-start hooks settle.
func create(ctx context.Context, fn func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		last = fn(ctx)
		return last == nil || apierrors.IsAlreadyExists(last), nil
	})
	if err != nil && last != nil {
		return last
	}
	return err
}

// CRDFiles lists the CRD manifests in dir: gateway.networking*.yaml, skipping the
// ValidatingAdmissionPolicy (*_vap_*) and anything else that is not a CRD file.
func CRDFiles(names []string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "gateway.networking") && strings.HasSuffix(n, ".yaml") && !strings.Contains(n, "_vap_") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// LoadCRDs reads the CRDs of dir (see CRDFiles); a selected file that does not hold a
// CustomResourceDefinition is an error.
func LoadCRDs(dir string) ([]*apiextv1.CustomResourceDefinition, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read CRD dir: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	var crds []*apiextv1.CustomResourceDefinition
	for _, n := range CRDFiles(names) {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		crd := new(apiextv1.CustomResourceDefinition)
		if err := yaml.Unmarshal(b, crd); err != nil {
			return nil, fmt.Errorf("parse %s: %w", n, err)
		}
		if crd.Kind != "CustomResourceDefinition" || crd.Name == "" {
			return nil, fmt.Errorf("%s: kind %q is not a CustomResourceDefinition", n, crd.Kind)
		}
		crds = append(crds, crd)
	}
	if len(crds) == 0 {
		return nil, fmt.Errorf("no CRDs in %s", dir)
	}
	return crds, nil
}

// InstallCRDs creates the CRDs and waits until each is Established.
func InstallCRDs(ctx context.Context, c apiext.Interface, crds []*apiextv1.CustomResourceDefinition) error {
	errs := make(chan error, len(crds))
	for _, crd := range crds {
		go func() {
			err := create(ctx, func(ctx context.Context) error {
				_, err := c.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{})
				return err
			})
			if err != nil {
				err = fmt.Errorf("create CRD %s: %w", crd.Name, err)
			}
			errs <- err
		}()
	}
	var first error
	for range crds {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	for _, crd := range crds {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			got, err := c.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", crd.Name, err)
		}
	}
	return nil
}
