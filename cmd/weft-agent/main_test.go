package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/controller/provision"
)

func TestKubepodsAncestor(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0::/weft-lab/lab-node-1/kubepods/pod1234/\n", "weft-lab/lab-node-1/kubepods"},
		{"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12_34.slice/cri-containerd-ab.scope\n", "kubepods.slice"},
		{"12:cpu:/x\n0::/kubepods/burstable/podab/cd\n", "kubepods"},
	} {
		got, err := kubepodsAncestor(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("kubepodsAncestor(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"0::/user.slice/session-1.scope\n", "1:name=systemd:/x\n"} {
		if got, err := kubepodsAncestor(in); err == nil {
			t.Errorf("kubepodsAncestor(%q) = %q, want an error", in, got)
		}
	}
}

// TestLogLevel: --log-level sets the level of the run logger (the chart's
// logLevel value), info when absent; an unknown level is an error.
func TestLogLevel(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want slog.Level
	}{
		{nil, slog.LevelInfo},
		{[]string{"--log-level=debug"}, slog.LevelDebug},
		{[]string{"--log-level=info"}, slog.LevelInfo},
		{[]string{"--log-level=warn"}, slog.LevelWarn},
		{[]string{"--log-level=error"}, slog.LevelError},
	} {
		f, err := parse("run", append([]string{"--node=n1"}, tc.args...))
		if err != nil {
			t.Errorf("parse(%q): %v", tc.args, err)
		} else if f.logLevel != tc.want {
			t.Errorf("parse(%q): level %v, want %v", tc.args, f.logLevel, tc.want)
		}
	}
	if _, err := parse("run", []string{"--node=n1", "--log-level=verbose"}); err == nil {
		t.Error("parse(--log-level=verbose) succeeded, want an error")
	}

	var buf bytes.Buffer
	log := newLogger(&buf, slog.LevelWarn)
	log.Info("dropped")
	log.Warn("kept")
	if out := buf.String(); strings.Contains(out, "dropped") || !strings.Contains(out, "kept") {
		t.Errorf("logger at warn wrote %q, want only the warning", out)
	}
}

// TestGatewayFlags: the command line the controller provisions (every
// parameter set) is the one `weft-agent gateway` parses.
func TestGatewayFlags(t *testing.T) {
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "gw"}}
	args := provision.Args(gw, provision.Params{Image: "img", Controller: "weft-controller.weft-system.svc:15012", CABundle: []byte("PEM"), LogLevel: "debug"})
	if args[0] != "gateway" {
		t.Fatalf("provisioned command %q, want gateway", args)
	}
	f, err := parseGateway(args[1:])
	if err != nil {
		t.Fatalf("provisioned flags %q: %v", args, err)
	}
	if f.gateway != "infra/gw" || f.controller != "weft-controller.weft-system.svc:15012" || f.controllerCA != "/var/run/secrets/weft/ca.crt" ||
		f.tokenFile != "/var/run/secrets/weft/token" || f.healthAddr != ":15021" || f.logLevel != slog.LevelDebug {
		t.Fatalf("flags = %+v", f)
	}
	for _, bad := range []string{"", "gw", "/gw", "infra/", "a/b/c"} {
		if _, err := parseGateway([]string{"--gateway=" + bad}); err == nil {
			t.Errorf("--gateway=%q accepted", bad)
		}
	}
}
