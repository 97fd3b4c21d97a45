#!/usr/bin/env bash
# A/B of two builds of the cross-node HTTP/1.1 path (run.sh's weft2p shape), interleaved, so a
# change is measured against its parent under the same machine load (a shared machine moves
# run.sh's absolute figures by ±30% between runs; two builds side by side move together).
#   bash test/bench/ab.sh [REV_A] [REV_B]     (defaults: HEAD~1 and the working tree)
# ENV_A, ENV_B: environment for each build's processes (e.g. ENV_B=GOMAXPROCS=1 with A = B).
# Each build: a destination and a source weft process, one backend for both; fortio at a fixed
# 1000 req/s over 16 connections, ROUNDS (5) rounds of SECS (10) seconds, A and B alternating.
# QPS=0 measures at maximum throughput instead (rps is then a result: it is printed and compared too).
# PROTO=h2c measures run.sh's h2weft2p shape instead (h2c end to end, fortio -h2 -stdclient).
# Prints per round, then the medians: source and destination CPU µs per request (utime+stime of
# the process), p50 and p99, B/A of the medians, and the median of each round's own B/A (paired:
# steadier when the machine's load drifts between rounds). STRACE=1 then counts each process's system calls per
# request (strace -c -f, a 5 s round at 1000 req/s per build and process): futex and nanosleep are the
# scheduler waking idle threads, which CPU figures on a loaded machine hide in the noise.
set -euo pipefail
export GOTOOLCHAIN=auto
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REV_A=${1:-HEAD~1}
REV_B=${2:-}
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
QPS=${QPS:-1000}
PROTO=${PROTO:-http}
case $PROTO in http) LOAD=() ;; h2c) LOAD=(-h2 -stdclient) ;; *) echo "PROTO: http or h2c, not $PROTO" >&2; exit 2 ;; esac
# shellcheck source=test/bench/lib.sh
. "$ROOT/test/bench/lib.sh"
bench_init weft-ab

# build REV DIR: weft-bench of a git revision (empty: the working tree) into DIR
build() {
  local src=$ROOT
  if [ -n "$1" ]; then
    src=$WORK/src-$2
    mkdir -p "$src"
    git -C "$ROOT" archive "$1" | tar -x -C "$src"
  fi
  (cd "$src" && go build -o "$WORK/$2" ./test/bench/cmd/weft-bench)
}
build "$REV_A" a
build "$REV_B" b
"$WORK/a" pki -dir "$WORK"
for p in 18400 18411 18412 18421 18422; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use" >&2; exit 1; fi
done
"$WORK/a" backend -listen 127.0.0.1:18400 -size 1024 >"$WORK/backend.log" 2>&1 & PIDS+=($!)
# pair NAME IN OUT: a destination and a source process of build NAME
pair() {
  local envv=ENV_${1^^}
  # shellcheck disable=SC2086
  env ${!envv:-} "$WORK/$1" weft -role dst -proto "$PROTO" -in 127.0.0.1:$2 -out 127.0.0.1:$(($2 + 50)) -peer 127.0.0.1:$2 \
    -backend 127.0.0.1:18400 -pki "$WORK" >"$WORK/$1-dst.log" 2>&1 & PIDS+=($!); printf -v "DST_$1" %s $!
  # shellcheck disable=SC2086
  env ${!envv:-} "$WORK/$1" weft -role src -proto "$PROTO" -out 127.0.0.1:$3 -in 127.0.0.1:$(($3 + 50)) -peer 127.0.0.1:$2 \
    -backend 127.0.0.1:18400 -pki "$WORK" >"$WORK/$1-src.log" 2>&1 & PIDS+=($!); printf -v "SRC_$1" %s $!
}
pair a 18412 18411
pair b 18422 18421
for p in 18400 18411 18412 18421 18422; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done
done
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# measure NAME PORT SRC DST: one fixed-load round, one result line
measure() {
  "$FORTIO" load -quiet "${LOAD[@]}" -c 16 -qps 0 -t 1s "http://127.0.0.1:$2/" >/dev/null 2>&1 # warm-up
  local s0 d0 s1 d1
  s0=$(ticks "$3"); d0=$(ticks "$4")
  "$FORTIO" load -quiet "${LOAD[@]}" -c 16 -qps "$QPS" -t "${SECS}s" -p 50,99 -json "$WORK/$1.json" "http://127.0.0.1:$2/" >/dev/null 2>&1
  s1=$(ticks "$3"); d1=$(ticks "$4")
  python3 - "$WORK/$1.json" "$((s1 - s0))" "$((d1 - d0))" "$(getconf CLK_TCK)" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); n = d["DurationHistogram"]["Count"]; hz = int(sys.argv[4])
ok = d["RetCodes"].get("200", 0)
p = {int(x["Percentile"]): x["Value"] for x in d["DurationHistogram"]["Percentiles"]}
us = lambda t: int(t) * 1e6 / hz / max(n, 1)
print(f"{sys.argv[5]} src_us={us(sys.argv[2]):.1f} dst_us={us(sys.argv[3]):.1f} p50_ms={p[50]*1e3:.3f} p99_ms={p[99]*1e3:.3f} rps={d['ActualQPS']:.0f} n={n} ok={ok}")
PY
}
for r in $(seq "$ROUNDS"); do
  echo "# round $r $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  if [ $((r % 2)) = 1 ]; then
    measure a 18411 "$SRC_a" "$DST_a"; measure b 18421 "$SRC_b" "$DST_b"
  else
    measure b 18421 "$SRC_b" "$DST_b"; measure a 18411 "$SRC_a" "$DST_a"
  fi
done | tee "$WORK/rounds.txt"
python3 - "$WORK/rounds.txt" "${REV_A}" "${REV_B:-working tree}" <<'PY'
import statistics, sys
rows = {"a": [], "b": []}
for line in open(sys.argv[1]):
    f = line.split()
    rows[f[0]].append({k: float(v) for k, v in (x.split("=") for x in f[1:])})
med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
for k, name in (("a", sys.argv[2]), ("b", sys.argv[3])):
    m = med[k]
    print(f"median {k} ({name}): src_us={m['src_us']:.1f} dst_us={m['dst_us']:.1f} p50_ms={m['p50_ms']:.3f} p99_ms={m['p99_ms']:.3f} rps={m['rps']:.0f}")
a, b = med["a"], med["b"]
print(f"b/a src_cpu={b['src_us']/a['src_us']:.2f} dst_cpu={b['dst_us']/a['dst_us']:.2f} p50={b['p50_ms']/a['p50_ms']:.2f} p99={b['p99_ms']/a['p99_ms']:.2f} rps={b['rps']/a['rps']:.2f}")
# the median of each round's own B/A: A and B of one round ran under the same load
pair = {m: statistics.median(rb[m] / ra[m] for ra, rb in zip(rows["a"], rows["b"])) for m in ("src_us", "dst_us", "p50_ms", "p99_ms", "rps")}
print(f"paired b/a src_cpu={pair['src_us']:.3f} dst_cpu={pair['dst_us']:.3f} p50={pair['p50_ms']:.3f} p99={pair['p99_ms']:.3f} rps={pair['rps']:.3f}")
PY
# syscalls NAME PORT PID: a process's system calls per request under strace
syscalls() {
  strace -c -f -q -o "$WORK/$1.strace" -p "$3" & local st=$!
  sleep 1
  "$FORTIO" load -quiet "${LOAD[@]}" -c 16 -qps 1000 -t 5s -json "$WORK/$1-st.json" "http://127.0.0.1:$2/" >/dev/null 2>&1
  kill -INT "$st"; wait "$st" 2>/dev/null || true
  python3 - "$WORK/$1.strace" "$WORK/$1-st.json" "$1" <<'PY'
import json, sys
n = json.load(open(sys.argv[2]))["DurationHistogram"]["Count"]
calls = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls[f[-1]] = int(f[3])
top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
print(f"{sys.argv[3]} syscalls per request ({n} requests): " + " ".join(f"{k}={v / max(n, 1):.2f}" for k, v in top))
PY
}
if [ -n "${STRACE:-}" ]; then
  syscalls a-src 18411 "$SRC_a"
  syscalls b-src 18421 "$SRC_b"
  syscalls a-dst 18411 "$DST_a"
  syscalls b-dst 18421 "$DST_b"
fi
