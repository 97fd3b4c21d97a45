package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// startProbes runs the container's readiness and liveness probes until ctx
// ends (the process exited). Startup probes are not run.
func (w *podWorker) startProbes(ctx context.Context, c *container) {
	if p := c.spec.ReadinessProbe; p != nil {
		go w.probeLoop(ctx, c, p, func(ok bool) {
			c.update(func(s *containerSnap) {
				if s.State.Running != nil {
					s.Ready = ok
				}
			})
		})
	}
	if p := c.spec.LivenessProbe; p != nil {
		go w.probeLoop(ctx, c, p, func(ok bool) {
			if !ok {
				w.log.Info("liveness probe failed, restarting container", "container", c.spec.Name)
				c.livenessFailed()
			}
		})
	}
}

// probeLoop runs a probe with the kubelet's timing and thresholds and calls
// report on every change of the result.
func (w *podWorker) probeLoop(ctx context.Context, c *container, p *corev1.Probe, report func(bool)) {
	period := secondsOr(p.PeriodSeconds, 10)
	timeout := secondsOr(p.TimeoutSeconds, 1)
	success, failure := max(p.SuccessThreshold, 1), max(p.FailureThreshold, 3)
	t := time.NewTimer(secondsOr(p.InitialDelaySeconds, 0))
	defer t.Stop()
	var okRun, failRun int32
	result := -1 // unknown
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := w.probe(pctx, c, p.ProbeHandler)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			okRun, failRun = okRun+1, 0
			if okRun >= success && result != 1 {
				result = 1
				report(true)
			}
		} else {
			okRun, failRun = 0, failRun+1
			if failRun >= failure && result != 0 {
				result = 0
				report(false)
			}
		}
		t.Reset(period)
	}
}

func secondsOr(s, def int32) time.Duration {
	if s <= 0 {
		s = def
	}
	return time.Duration(s) * time.Second
}

// probe runs one probe: HTTP GET and TCP from the node netns against the
// pod IP, exec inside the container.
func (w *podWorker) probe(ctx context.Context, c *container, h corev1.ProbeHandler) error {
	switch {
	case h.HTTPGet != nil:
		return w.httpProbe(ctx, c, h.HTTPGet)
	case h.TCPSocket != nil:
		addr, err := w.probeAddr(c, h.TCPSocket.Host, h.TCPSocket.Port)
		if err != nil {
			return err
		}
		conn, err := dialInNetns(ctx, netnsPath(nodeNetns(w.k.cfg.Name)), "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	case h.Exec != nil:
		var out bytes.Buffer
		code, err := w.execInContainer(ctx, c, h.Exec.Command, nil, &out, &out)
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("exec probe exited %d: %s", code, out.String())
		}
		return nil
	}
	return fmt.Errorf("probe handler not supported by the lab node")
}

func (w *podWorker) probeAddr(c *container, host string, port intstr.IntOrString) (string, error) {
	p, err := resolvePort(port, c.spec)
	if err != nil {
		return "", err
	}
	if host == "" {
		host = w.podIP.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// resolvePort turns a probe port (number or container port name) into a number.
func resolvePort(port intstr.IntOrString, c corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		if port.IntVal <= 0 || port.IntVal > 65535 {
			return 0, fmt.Errorf("invalid probe port %d", port.IntVal)
		}
		return int(port.IntVal), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, port.StrVal)
}

func (w *podWorker) httpProbe(ctx context.Context, c *container, g *corev1.HTTPGetAction) error {
	addr, err := w.probeAddr(c, g.Host, g.Port)
	if err != nil {
		return err
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	nodeNS := netnsPath(nodeNetns(w.k.cfg.Name))
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return dialInNetns(ctx, nodeNS, network, a)
		},
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the kubelet does not verify probe certificates either
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	path := g.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	for _, h := range g.HTTPHeaders {
		if h.Name == "Host" {
			req.Host = h.Value
		} else {
			req.Header.Add(h.Name, h.Value)
		}
	}
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe status %d", resp.StatusCode)
	}
	return nil
}
