# Shared by the benchmark scripts that start their own processes (sourced, with ROOT set).
# bench_init PREFIX: WORK is a new directory under /tmp named after PREFIX, removed on exit with
# every process whose pid the script appends to PIDS; FORTIO is the load generator, installed
# into .cache/bench when missing.
bench_init() {
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
  bash "$ROOT/test/deps.sh" bench
  FORTIO=$ROOT/.cache/bench/fortio
  [ -x "$FORTIO" ] || GOBIN=$ROOT/.cache/bench go install fortio.org/fortio@v1.68.2
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
