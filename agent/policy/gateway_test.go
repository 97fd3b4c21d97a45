package policy

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func gatewaySnapshot(version uint64, gw string, port uint32) *weftv1.PolicySnapshot {
	ns, name, _ := strings.Cut(gw, "/")
	l := &weftv1.GatewayListener{Name: "web", Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTP}
	p := &weftv1.GatewayPolicy{Namespace: ns, Name: name, Ports: []*weftv1.GatewayPort{{Port: port, Listeners: []*weftv1.GatewayListener{l}}}}
	return &weftv1.PolicySnapshot{Version: version, ControllerNonce: "c1", Gateway: p}
}

func TestGatewayClientSubscribesAndNACKsKeepingLastGood(t *testing.T) {
	var applied []uint32
	ctl, c, _ := startCfg(t, func(cfg *Config) {
		cfg.Node, cfg.Gateway = "", "infra/gw"
		cfg.ApplyGateway = func(p *weftv1.GatewayPolicy) error {
			if p.GetPorts()[0].GetPort() == 666 {
				return errors.New("listen on port 666: address already in use")
			}
			applied = append(applied, p.GetPorts()[0].GetPort())
			return nil
		}
	})
	sub := recv(t, ctl.reqs)
	if sub.GetGateway() != "infra/gw" || sub.GetNode() != "" || sub.GetVersion() != 0 {
		t.Fatalf("subscribe = %v", sub)
	}
	ctl.send <- gatewaySnapshot(1, "infra/gw", 80)
	if r := recv(t, ctl.reqs); r.GetVersion() != 1 || r.GetError() != "" || r.GetGateway() != "infra/gw" {
		t.Fatalf("want ACK of 1, got %v", r)
	}
	nacks := map[uint64]*weftv1.PolicySnapshot{
		2: gatewaySnapshot(2, "infra/gw", 0),   // invalid: port 0
		3: gatewaySnapshot(3, "other/gw", 81),  // another gateway's
		4: gatewaySnapshot(4, "infra/gw", 666), // refused by the applier
		5: {Version: 5, ControllerNonce: "c1"}, // no gateway policy
	}
	for v := uint64(2); v <= 5; v++ {
		ctl.send <- nacks[v]
		r := recv(t, ctl.reqs)
		if r.GetVersion() != v || r.GetError() == "" {
			t.Fatalf("want NACK of %d, got %v", v, r)
		}
		t.Logf("NACK %d: %s", v, r.GetError())
	}
	if cur := c.Current(); cur.GetVersion() != 1 || len(applied) != 1 {
		t.Fatalf("in force: version %d, applied %v; want version 1 only", cur.GetVersion(), applied)
	}
}

func TestNewNeedsExactlyOneSubject(t *testing.T) {
	for _, cfg := range []Config{
		{Conn: fakeConn{}, Apply: func(*weftv1.NodePolicy) error { return nil }},
		{Node: "n", Gateway: "a/b", Conn: fakeConn{}, Apply: func(*weftv1.NodePolicy) error { return nil }},
		{Gateway: "a/b", Conn: fakeConn{}, Apply: func(*weftv1.NodePolicy) error { return nil }},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// fakeConn is a connection New accepts and nothing uses.
type fakeConn struct{ grpc.ClientConnInterface }
