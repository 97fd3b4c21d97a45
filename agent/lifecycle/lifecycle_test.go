package lifecycle

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

func record(log *[]string, name string, startErr error) Hook {
	return Hook{
		Name: name,
		Start: func(context.Context) error {
			*log = append(*log, "start "+name)
			return startErr
		},
		Stop: func(context.Context) error {
			*log = append(*log, "stop "+name)
			return nil
		},
	}
}

func TestStartsInOrderStopsInReverse(t *testing.T) {
	var log []string
	var l Lifecycle
	l.Append(record(&log, "a", nil))
	l.Append(Hook{Name: "no stop", Start: func(context.Context) error { log = append(log, "start no stop"); return nil }})
	l.Append(record(&log, "b", nil))
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"start a", "start no stop", "start b", "stop b", "stop a"}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("got %q, want %q", log, want)
	}
	if err := l.Stop(context.Background()); err != nil || len(log) != len(want) {
		t.Fatalf("a second Stop stopped again: %q, %v", log, err)
	}
}

func TestFailedStartStopsWhatStarted(t *testing.T) {
	var log []string
	boom := errors.New("boom")
	var l Lifecycle
	l.Append(record(&log, "a", nil))
	l.Append(record(&log, "b", boom))
	l.Append(record(&log, "c", nil))
	err := l.Start(context.Background())
	if !errors.Is(err, boom) || err.Error() != "start b: boom" {
		t.Fatalf("err = %v", err)
	}
	want := []string{"start a", "start b", "stop a"}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("got %q, want %q", log, want)
	}
}

func TestStopRunsEveryHookAndJoinsErrors(t *testing.T) {
	e1, e2 := errors.New("e1"), errors.New("e2")
	var l Lifecycle
	l.Append(Hook{Name: "a", Stop: func(context.Context) error { return e1 }})
	l.Append(Hook{Name: "b", Stop: func(context.Context) error { return e2 }})
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := l.Stop(context.Background())
	if !errors.Is(err, e1) || !errors.Is(err, e2) {
		t.Fatalf("err = %v, want both", err)
	}
}
