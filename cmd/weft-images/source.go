package main

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// source is what the images say about the tree they were built from.
type source struct {
	Epoch    time.Time // every timestamp in the images (SOURCE_DATE_EPOCH)
	Revision string    // commit, "-dirty" when the tree has changes; "" outside git
	Version  string
}

// readSource reads the epoch and the revision of the git tree at dir.
// sourceDateEpoch (the SOURCE_DATE_EPOCH variable) wins over the time of the
// last commit; outside git the epoch is 0 and the revision unknown.
func readSource(ctx context.Context, dir, sourceDateEpoch, version string) (source, error) {
	src := source{Version: version, Epoch: time.Unix(0, 0).UTC()}
	if sourceDateEpoch == "" {
		sourceDateEpoch, _ = git(ctx, dir, "log", "-1", "--format=%ct")
	}
	if sourceDateEpoch != "" {
		t, err := parseEpoch(sourceDateEpoch)
		if err != nil {
			return src, err
		}
		src.Epoch = t
	}
	head, err := git(ctx, dir, "rev-parse", "HEAD")
	if err != nil {
		return src, nil
	}
	status, err := git(ctx, dir, "status", "--porcelain")
	if err != nil {
		return src, nil
	}
	src.Revision = revision(head, status)
	return src, nil
}

func parseEpoch(s string) (time.Time, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

func revision(head, porcelain string) string {
	if strings.TrimSpace(porcelain) != "" {
		return head + "-dirty"
	}
	return head
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
