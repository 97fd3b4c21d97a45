package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// serveAPI starts the kubelet API (logs, exec) on 127.0.0.1:KubeletPort.
func (k *kubelet) serveAPI() (*http.Server, error) {
	cfg := k.cfg
	pair, err := tls.LoadX509KeyPair(cfg.KubeletServingCert, cfg.KubeletServingKey)
	if err != nil {
		return nil, fmt.Errorf("load serving certificate: %w", err)
	}
	caPEM, err := os.ReadFile(cfg.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("read client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("client CA %s holds no PEM certificate", cfg.ClientCA)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", k.handleLogs)
	for _, p := range []string{"/exec/{ns}/{pod}/{container}", "/exec/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc("GET "+p, k.handleExec)
		mux.HandleFunc("POST "+p, k.handleExec)
	}
	for _, p := range []string{"/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"} {
		mux.HandleFunc("GET "+p, k.handlePortForward)
		mux.HandleFunc("POST "+p, k.handlePortForward)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.KubeletPort))
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
			// SPDY upgrades need HTTP/1.1.
			NextProtos: []string{"http/1.1"},
		},
	}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			k.log.Error("kubelet API stopped", "err", err)
		}
	}()
	return srv, nil
}

func (k *kubelet) lookup(r *http.Request) (*podWorker, *container, error) {
	w, err := k.findPod(r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid"))
	if err != nil {
		return nil, nil, err
	}
	c := w.container(r.PathValue("container"))
	if c == nil {
		return nil, nil, fmt.Errorf("container %q not found in pod %s", r.PathValue("container"), w.key)
	}
	return w, c, nil
}

// handleLogs serves a container's log (tailLines, follow, previous,
// limitBytes).
func (k *kubelet) handleLogs(rw http.ResponseWriter, r *http.Request) {
	_, c, err := k.lookup(r)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	c.mu.Lock()
	instance, exited, started := c.instance, c.exited, c.cmd != nil
	c.mu.Unlock()
	if q.Get("previous") == "true" {
		if instance == 0 {
			http.Error(rw, fmt.Sprintf("previous terminated container %q not found", c.spec.Name), http.StatusBadRequest)
			return
		}
		instance, exited = instance-1, nil
	}
	if !started {
		http.Error(rw, fmt.Sprintf("container %q is waiting to start", c.spec.Name), http.StatusBadRequest)
		return
	}
	f, err := os.Open(c.logPath(instance))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusNotFound)
		return
	}
	defer f.Close()
	var out io.Writer = rw
	if lb, err := strconv.ParseInt(q.Get("limitBytes"), 10, 64); err == nil && lb > 0 {
		out = &limitWriter{w: rw, n: lb}
	}
	rw.Header().Set("Content-Type", "text/plain")
	if n, err := strconv.Atoi(q.Get("tailLines")); err == nil && n >= 0 {
		b, err := io.ReadAll(f)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = out.Write(tailLines(b, n))
	} else if _, err := io.Copy(out, f); err != nil {
		return
	}
	if q.Get("follow") != "true" || exited == nil {
		return
	}
	flusher, _ := rw.(http.Flusher)
	for {
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-exited:
			_, _ = io.Copy(out, f)
			return
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := io.Copy(out, f); err != nil {
			return
		}
	}
}

// tailLines returns the last n lines of b.
func tailLines(b []byte, n int) []byte {
	if n == 0 {
		return nil
	}
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.ErrShortWrite
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}

// handleExec serves the remotecommand (SPDY or WebSocket) exec protocol.
func (k *kubelet) handleExec(rw http.ResponseWriter, r *http.Request) {
	w, c, err := k.lookup(r)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusNotFound)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(rw, "no command", http.StatusBadRequest)
		return
	}
	remotecommand.ServeExec(rw, r, execAdapter{w: w, c: c}, w.key, string(w.uid), c.spec.Name, cmd, opts,
		4*time.Hour, remotecommand.DefaultStreamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

type execAdapter struct {
	w *podWorker
	c *container
}

func (a execAdapter) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	var stdout, stderr io.Writer
	if out != nil {
		stdout = out
	}
	if errw != nil {
		stderr = errw
	} else if tty {
		stderr = stdout
	}
	code, err := a.w.execInContainer(ctx, a.c, cmd, in, stdout, stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

// execInContainer runs cmd in a running container's netns, mount namespace
// and cgroup with its environment, and returns the exit code. In an image
// container it runs in the container's root, working directory, user and
// capabilities, the program looked up there, as runc exec does.
func (w *podWorker) execInContainer(ctx context.Context, c *container, cmd []string, in io.Reader, out, errw io.Writer) (int, error) {
	t := c.running()
	if t.pid == 0 {
		return 0, fmt.Errorf("container %s of pod %s is not running", c.spec.Name, w.key)
	}
	if in == nil {
		in = bytes.NewReader(nil)
	}
	spec := procSpec{
		Argv:      cmd,
		Env:       t.env,
		Dir:       "/",
		Netns:     fmt.Sprintf("/proc/%d/ns/net", t.pid),
		Mntns:     fmt.Sprintf("/proc/%d/ns/mnt", t.pid),
		Utsns:     fmt.Sprintf("/proc/%d/ns/uts", t.pid),
		Cgroup:    w.cgroup,
		Stdin:     in,
		Stdout:    out,
		Stderr:    errw,
		WaitDelay: time.Second,
	}
	if r := t.root; r != nil {
		spec.Chroot, spec.Dir, spec.Security = r.merged, r.workdir, r.sec
	} else {
		path, err := lookPath(cmd[0], w.k.cfg.pathDirs(c.spec.Image))
		if err != nil {
			return 0, err
		}
		spec.Argv = append([]string{path}, cmd[1:]...)
	}
	p, err := startProc(spec)
	if err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = p.Process.Kill()
		case <-done:
		}
	}()
	werr := p.Wait()
	close(done)
	if p.ProcessState == nil {
		return 0, werr
	}
	return exitCode(p, werr), nil
}

// handlePortForward serves the port-forward protocol (SPDY, as the apiserver
// speaks it to kubelets): each stream is connected to localhost:port inside
// the pod's netns, as container runtimes do.
func (k *kubelet) handlePortForward(rw http.ResponseWriter, r *http.Request) {
	w, err := k.findPod(r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid"))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusNotFound)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(rw, r, forwarder{w: w}, w.key, string(w.uid), opts,
		4*time.Hour, remotecommand.DefaultStreamCreationTimeout, portforward.SupportedProtocols)
}

type forwarder struct{ w *podWorker }

func (f forwarder) PortForward(ctx context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	netns := f.w.netnsFile()
	if netns == "" {
		return fmt.Errorf("pod %s has no network yet", f.w.key)
	}
	conn, err := dialInNetns(ctx, netns, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("port-forward to %s port %d: %w", f.w.key, port, err)
	}
	defer conn.Close()
	go func() {
		_, _ = io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	toClient := make(chan struct{})
	go func() {
		_, _ = io.Copy(stream, conn)
		close(toClient)
	}()
	select {
	case <-toClient:
	case <-ctx.Done():
	}
	return nil
}
