package identity

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// An agent that replaces another on the node takes its SVIDs over and
// serves mTLS with them while the controller is unreachable; it rotates
// them once the controller is back.
func TestImportServesWithoutTheController(t *testing.T) {
	env := startCA(t, 24*time.Hour)
	old := startAgent(t, env, "node-2")
	old.m.SetWanted([]spiffeid.ID{idPay})
	eventually(t, "svid", func() bool { return serial(t, old.m, idPay) != "" })
	caller := startAgent(t, env, "node-1")
	caller.m.SetWanted([]spiffeid.ID{idCart})
	eventually(t, "caller svid", func() bool { return serial(t, caller.m, idCart) != "" })

	env.down.Store(true)
	recs, err := old.m.Export()
	if err != nil || len(recs) != 1 {
		t.Fatalf("export: %d records, %v", len(recs), err)
	}
	succ := startAgent(t, env, "node-2")
	succ.m.SetWanted([]spiffeid.ID{idPay, idShip})
	n, err := succ.m.Import(recs)
	if n != 1 || err != nil {
		t.Fatalf("import: %d taken, %v", n, err)
	}
	if got, want := serial(t, succ.m, idPay), serial(t, old.m, idPay); got != want {
		t.Fatalf("successor serves serial %s, want the predecessor's %s", got, want)
	}
	srv := startServer(t, succ.m, idPay)
	c, err := dial(caller.m, idCart, idPay, srv.addr)
	if err != nil {
		t.Fatalf("mTLS to the successor with the controller down: %v", err)
	}
	c.Close()
	if _, err := succ.m.SVID(idShip); err == nil {
		t.Fatal("an identity the predecessor did not hold got an SVID with the controller down")
	}

	// The controller is back: past half-life the successor rotates.
	env.down.Store(false)
	first := serial(t, succ.m, idPay)
	succ.step(t, 13*time.Hour)
	eventually(t, "rotation after import", func() bool { s := serial(t, succ.m, idPay); return s != "" && s != first })
}

// Import takes only what verifies and is wanted, reports the rest, and
// never replaces a fresher SVID.
func TestImportRefuses(t *testing.T) {
	env := startCA(t, 24*time.Hour)
	old := startAgent(t, env, "node-2")
	old.m.SetWanted([]spiffeid.ID{idPay, idShip})
	eventually(t, "svids", func() bool { return serial(t, old.m, idPay) != "" && serial(t, old.m, idShip) != "" })
	recs, err := old.m.Export()
	if err != nil || len(recs) != 2 {
		t.Fatalf("export: %d records, %v", len(recs), err)
	}
	other := startCA(t, 24*time.Hour) // another trust root
	foreign := startAgent(t, other, "node-2")
	foreign.m.SetWanted([]spiffeid.ID{idPay})
	eventually(t, "foreign svid", func() bool { return serial(t, foreign.m, idPay) != "" })
	frecs, _ := foreign.m.Export()

	// A key that does not match its certificate.
	var a, b record
	json.Unmarshal(recs[0], &a)
	json.Unmarshal(recs[1], &b)
	swapped, _ := json.Marshal(record{Chain: a.Chain, Key: b.Key})

	// The controller is down while the successor imports, as in a restart
	// during an outage: else the successor may fetch a fresher SVID of its
	// own first, and Import rightly keeps that one.
	env.down.Store(true)
	succ := startAgent(t, env, "node-2")
	succ.m.SetWanted([]spiffeid.ID{idPay}) // ship is not wanted any more
	n, err := succ.m.Import([][]byte{swapped, []byte("{not json"), frecs[0], recs[0], recs[1]})
	env.down.Store(false)
	if n != 1 {
		t.Fatalf("taken %d, want 1 (pay)", n)
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	for _, want := range []string{"record 0", "record 1", "record 2", idShip.String() + ": not an identity"} {
		if !strings.Contains(msg, want) {
			t.Errorf("import error %q does not mention %q", msg, want)
		}
	}
	if _, err := succ.m.SVID(idShip); err == nil {
		t.Error("an unwanted identity was taken")
	}

	// Expired: refused.
	late := startAgent(t, env, "node-2")
	late.m.SetWanted([]spiffeid.ID{idPay, idShip})
	late.clock.Step(25 * time.Hour)
	if n, err := late.m.Import(recs[:1]); n != 0 || err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired svid: %d taken, %v", n, err)
	}

	// A fresher SVID held already is kept.
	fresh := startAgent(t, env, "node-2")
	fresh.m.SetWanted([]spiffeid.ID{idPay})
	eventually(t, "own svid", func() bool { return serial(t, fresh.m, idPay) != "" })
	own := serial(t, fresh.m, idPay)
	if n, err := fresh.m.Import(recs); n != 0 || serial(t, fresh.m, idPay) != own {
		t.Fatalf("older import replaced a fresher svid: %d taken, %v", n, err)
	}
}
