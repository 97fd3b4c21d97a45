package bpffstest

import (
	"os"
	"slices"
	"strconv"
	"testing"
)

// The state file survives its writers: a holder that died is dropped when
// read, the mount flag is kept, and what is written reads back the same.
func TestStateDropsDeadHolders(t *testing.T) {
	self := os.Getpid()
	st := parse("mounted 1\nholder " + strconv.Itoa(self) + "\nholder 2147483646\nnoise\n")
	if !st.mounted || !slices.Equal(st.holders, []int{self}) {
		t.Fatalf("parsed %+v, want mounted and only this process", st)
	}
	if back := parse(st.String()); back.mounted != st.mounted || !slices.Equal(back.holders, st.holders) {
		t.Fatalf("round trip %+v -> %q -> %+v", st, st.String(), back)
	}
	if st := parse(""); st.mounted || len(st.holders) != 0 {
		t.Fatalf("empty file parsed as %+v", st)
	}
}
