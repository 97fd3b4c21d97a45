package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/weft-mesh/weft/test/kubetest"
	"github.com/weft-mesh/weft/test/syncbuf"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// TestCommandOutsideCluster runs the built weft-controller binary with
// --kubeconfig against a real apiserver: it becomes ready, takes the Lease,
// creates the CA root Secret, and exits cleanly on SIGTERM.
func TestCommandOutsideCluster(t *testing.T) {
	kc := kubetest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()

	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: kc.Config.Host, CertificateAuthorityData: kc.Config.CAData}
	cfg.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: kc.Config.CertData, ClientKeyData: kc.Config.KeyData, Token: kc.Config.BearerToken}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	cfg.CurrentContext = "test"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-cmd-test"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	bin := filepath.Join(dir, "weft-controller")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOTOOLCHAIN=auto")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	health := "127.0.0.1:" + freePort(t)
	cmd := exec.Command(bin, "--kubeconfig", kubeconfig, "--namespace", "weft-cmd-test", "--grpc-addr", "127.0.0.1:"+freePort(t),
		"--health-addr", health, "--id", "cmd-test", "--leader-elect=true")
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + health + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready in 30s (last %v)\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		lease, lerr := kc.Client.CoordinationV1().Leases("weft-cmd-test").Get(ctx, "weft-controller", metav1.GetOptions{})
		_, serr := kc.Client.CoreV1().Secrets("weft-cmd-test").Get(ctx, "weft-ca", metav1.GetOptions{})
		if lerr == nil && serr == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == "cmd-test" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease (%v) or ca secret (%v) missing\n%s", lerr, serr, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit 20s after SIGTERM\n%s", logs.String())
	}
	exited <- nil // for the cleanup
	// The Lease was released on the way out.
	lease, err := kc.Client.CoordinationV1().Leases("weft-cmd-test").Get(ctx, "weft-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h == "cmd-test" {
		t.Fatalf("lease still held by %q after exit", *h)
	}
}
