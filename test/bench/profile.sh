#!/usr/bin/env bash
# Profiles of the cross-node path under make bench's fixed load: a source-node and a
# destination-node weft process (as in run.sh's weft2p, h2weft2p, grpc... rows), fortio at
# 1000 req/s over 16 connections, and pprof CPU and allocation profiles of both processes.
#   bash test/bench/profile.sh [http|h2c] [OUT_DIR]
# Writes OUT_DIR/{src,dst}.cpu, {src,dst}.alloc, the binary they belong to (weft-bench), and
# top.txt (per-hop CPU per request, then each profile's top functions). Read them with
# `go tool pprof -top OUT_DIR/weft-bench OUT_DIR/src.cpu`. Env: SECS (20); QPS (1000; 0 profiles at
# maximum throughput, where the two proxies, fortio and the backend contend for the cores); WEFT_LOOPS
# (the source's outbound event loops, -loops).
set -euo pipefail
export GOTOOLCHAIN=auto
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROTO=${1:-http}
OUT=${2:-$(mktemp -d /tmp/weft-profile.XXXXXX)}
SECS=${SECS:-20}
QPS=${QPS:-1000}
case $PROTO in http | h2c) ;; *) echo "protocol: http or h2c, not $PROTO" >&2; exit 2 ;; esac
mkdir -p "$OUT"
bash "$ROOT/test/deps.sh" bench
FORTIO=$ROOT/.cache/bench/fortio
[ -x "$FORTIO" ] || GOBIN=$ROOT/.cache/bench go install fortio.org/fortio@v1.68.2
go build -o "$OUT/weft-bench" "$ROOT/test/bench/cmd/weft-bench"
B=$OUT/weft-bench
"$B" pki -dir "$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
for p in 18300 18311 18312 18315 18316; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use" >&2; exit 1; fi
done
"$B" backend -listen 127.0.0.1:18300 -size 1024 >"$OUT/backend.log" 2>&1 & PIDS+=($!)
"$B" weft -role dst -proto "$PROTO" -in 127.0.0.1:18312 -out 127.0.0.1:18314 -peer 127.0.0.1:18312 \
  -backend 127.0.0.1:18300 -pki "$OUT" -pprof 127.0.0.1:18316 >"$OUT/dst.log" 2>&1 & DST=$!; PIDS+=($DST)
loops=(); [ -n "${WEFT_LOOPS:-}" ] && loops=(-loops "$WEFT_LOOPS")
"$B" weft -role src "${loops[@]}" -proto "$PROTO" -out 127.0.0.1:18311 -in 127.0.0.1:18313 -peer 127.0.0.1:18312 \
  -backend 127.0.0.1:18300 -pki "$OUT" -pprof 127.0.0.1:18315 >"$OUT/src.log" 2>&1 & SRC=$!; PIDS+=($SRC)
for p in 18300 18311 18312 18315 18316; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done
done
h2=(); [ "$PROTO" = h2c ] && h2=(-h2 -stdclient)
"$FORTIO" load -quiet "${h2[@]}" -c 16 -qps 0 -t 2s http://127.0.0.1:18311/ >/dev/null 2>&1 # warm-up
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
curl -s -o "$OUT/src.cpu" "http://127.0.0.1:18315/debug/pprof/profile?seconds=$SECS" & C1=$!
curl -s -o "$OUT/dst.cpu" "http://127.0.0.1:18316/debug/pprof/profile?seconds=$SECS" & C2=$!
s0=$(ticks $SRC); d0=$(ticks $DST)
"$FORTIO" load -quiet "${h2[@]}" -c 16 -qps "$QPS" -t "${SECS}s" -p 50,99 -json "$OUT/load.json" http://127.0.0.1:18311/ >/dev/null 2>&1
s1=$(ticks $SRC); d1=$(ticks $DST)
wait $C1 $C2
curl -s -o "$OUT/src.alloc" http://127.0.0.1:18315/debug/pprof/allocs
curl -s -o "$OUT/dst.alloc" http://127.0.0.1:18316/debug/pprof/allocs
{
  python3 - "$OUT/load.json" "$((s1 - s0))" "$((d1 - d0))" "$(getconf CLK_TCK)" "$PROTO" "$QPS" "$SECS" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); n = d["DurationHistogram"]["Count"]; hz = int(sys.argv[4])
p = {int(x["Percentile"]): x["Value"] for x in d["DurationHistogram"]["Percentiles"]}
us = lambda t: int(t) * 1e6 / hz / max(n, 1)
rate = f"{sys.argv[6]} req/s" if sys.argv[6] != "0" else f"maximum throughput ({n / int(sys.argv[7]):.0f} req/s)"
print(f"{sys.argv[5]}: {n} requests at {rate}; source {us(sys.argv[2]):.1f} us/req, destination {us(sys.argv[3]):.1f} us/req;"
      f" p50 {p[50] * 1e3:.3f} ms, p99 {p[99] * 1e3:.3f} ms")
PY
  for f in src.cpu dst.cpu; do echo; echo "== $f"; go tool pprof -top -nodecount=25 "$B" "$OUT/$f" 2>/dev/null | sed -n '5,$p'; done
  for f in src.alloc dst.alloc; do echo; echo "== $f (allocated bytes)"; go tool pprof -sample_index=alloc_space -top -nodecount=15 "$B" "$OUT/$f" 2>/dev/null | sed -n '5,$p'; done
} >"$OUT/top.txt"
head -1 "$OUT/top.txt"
echo "profiles in $OUT (top.txt: the summary)"
