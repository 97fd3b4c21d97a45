package labtest

import (
	"bytes"
	"context"
	"fmt"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/weft-mesh/weft/test/lab"
	"github.com/weft-mesh/weft/test/lab/cluster"
)

// Exec runs cmd in the first container of a pod through the apiserver (pods/exec, as
// `kubectl exec` does) and returns its output. A command that exits non-zero returns
// an error that carries the exit code (client-go's exec.CodeExitError).
func (l *Lab) Exec(ctx context.Context, ns, pod string, cmd ...string) (stdout, stderr string, err error) {
	return ExecIn(ctx, l.Config, l.Client, ns, pod, "", cmd...)
}

// ExecIn runs cmd in a pod's container ("" for the first one) through the apiserver.
func ExecIn(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, ns, pod, container string, cmd ...string) (stdout, stderr string, err error) {
	if container == "" {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return "", "", fmt.Errorf("get pod %s/%s: %w", ns, pod, err)
		}
		if len(p.Spec.Containers) == 0 {
			return "", "", fmt.Errorf("pod %s/%s has no containers", ns, pod)
		}
		container = p.Spec.Containers[0].Name
	}
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: container,
			Command:   cmd,
			Stdout:    true,
			Stderr:    true,
		}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		return "", "", err
	}
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, httpstream.IsUpgradeFailure)
	if err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
	if err != nil {
		err = fmt.Errorf("exec %v in %s/%s: %w (stderr: %s)", cmd, ns, pod, err, errb.String())
	}
	return out.String(), errb.String(), err
}

// ExecOnNode runs cmd in a pod's container through the kubelet API of the pod's node,
// directly, with the client certificate the apiserver uses for kubelets. Unlike Exec it
// does not go through the apiserver, so a test can send traffic from a pod while the
// control plane is down (as `crictl exec` on a node would). container must be named.
func (l *Lab) ExecOnNode(ctx context.Context, node, ns, pod, container string, cmd ...string) (stdout, stderr string, err error) {
	port := 0
	for i := 1; i <= l.Nodes; i++ {
		if lab.NodeName(i) == node {
			port = lab.KubeletPort(i)
		}
	}
	if port == 0 || container == "" {
		return "", "", fmt.Errorf("exec on node %q, container %q: no such lab node, or no container named", node, container)
	}
	cert, key, ca := cluster.KubeletClientFiles(l.Paths.CPDir)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := &rest.Config{Host: "https://" + host, TLSClientConfig: rest.TLSClientConfig{CertFile: cert, KeyFile: key, CAFile: ca}}
	q := url.Values{"output": {"1"}, "error": {"1"}, "command": cmd}
	u := &url.URL{Scheme: "https", Host: host, Path: fmt.Sprintf("/exec/%s/%s/%s", ns, pod, container), RawQuery: q.Encode()}
	exec, err := remotecommand.NewSPDYExecutor(cfg, "POST", u)
	if err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
	if err != nil {
		err = fmt.Errorf("exec %v in %s/%s on %s: %w (stderr: %s)", cmd, ns, pod, node, err, errb.String())
	}
	return out.String(), errb.String(), err
}

// ControlPlane returns the lab's control-plane processes as its supervisor records
// them: current pid, restarts, why the last run ended.
func (l *Lab) ControlPlane() ([]cluster.PIDRecord, error) {
	return cluster.ReadPIDs(l.Paths.CPDir)
}
