#!/usr/bin/env bash
# What Go can do in nginx's shape: the two-process HTTP/1.1 path (run.sh's weft2p/nginx2p) with a
# third pair beside Weft and nginx, weft-bench's floor peer: per client connection one TLS 1.3
# upstream connection with a client certificate and one goroutine that moves each request up and
# its response back (no multiplexing, no hand-off between goroutines, no header map, no routing;
# see test/bench/cmd/weft-bench/floor.go). FLOOR_HANDOFF=1 makes the floor hand each response from a
# reader goroutine to the request's goroutine, one hand-off per request per hop, as a proxy that
# multiplexes does. FLOOR_LOOP=1 runs the event-loop floor instead (one goroutine per process over
# epoll and non-blocking sockets, nginx's shape; see test/bench/cmd/weft-bench/loop.go). The three
# pairs take turns, ROUNDS (5) rounds of SECS (10) seconds at QPS (0: maximum throughput; 1000 for the
# fixed load), fortio over 16 connections; then the medians and each pair's max rps and CPU per request
# against nginx's. WEFT_LOOPS=N serves Weft's source with N outbound event loops (-loops).
#   bash test/bench/floor.sh
set -euo pipefail
export GOTOOLCHAIN=auto
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
QPS=${QPS:-0}
NGINX_HOP_A=${NGINX_HOP_A:-$ROOT/../shared/bench/nginx-hop-a.conf}
NGINX_HOP_B=${NGINX_HOP_B:-$ROOT/../shared/bench/nginx-hop-b.conf}
# shellcheck source=test/bench/lib.sh
. "$ROOT/test/bench/lib.sh"
bench_init weft-floor
go build -o "$WORK/weft-bench" "$ROOT/test/bench/cmd/weft-bench"
B=$WORK/weft-bench
"$B" pki -dir "$WORK"
BACKEND=127.0.0.1:18500
for p in 18500 18511 18512 18521 18522 18531 18532; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use" >&2; exit 1; fi
done
start() { local var=$1; shift; "$@" >"$WORK/$var.log" 2>&1 & PIDS+=($!); printf -v "$var" %s $!; }
start BACKEND_PID "$B" backend -listen $BACKEND -size 1024
start WEFT_DST "$B" weft -role dst -in 127.0.0.1:18512 -out 127.0.0.1:18514 -peer 127.0.0.1:18512 -backend $BACKEND -pki "$WORK"
loops=(); [ -n "${WEFT_LOOPS:-}" ] && loops=(-loops "$WEFT_LOOPS")
start WEFT_SRC "$B" weft -role src "${loops[@]}" -out 127.0.0.1:18511 -in 127.0.0.1:18513 -peer 127.0.0.1:18512 -backend $BACKEND -pki "$WORK"
handoff=(); [ -n "${FLOOR_HANDOFF:-}" ] && handoff=(-handoff)
[ -n "${FLOOR_LOOP:-}" ] && handoff+=(-loop)
start FLOOR_B "$B" floor -role b "${handoff[@]}" -listen 127.0.0.1:18532 -upstream $BACKEND -pki "$WORK"
start FLOOR_A "$B" floor -role a "${handoff[@]}" -listen 127.0.0.1:18531 -upstream 127.0.0.1:18532 -pki "$WORK"
for d in cb pt ft ut st; do mkdir -p "$WORK/$d"; done
sed -e "s#__DIR__#$WORK#g" -e "s#__BACKEND__#$BACKEND#g" -e "s#127.0.0.1:18112#127.0.0.1:18522#g" \
  -e "s#listen 127.0.0.1:18111;#listen 127.0.0.1:18521;#" "$NGINX_HOP_A" >"$WORK/nginx-a.conf"
sed -e "s#__DIR__#$WORK#g" -e "s#__BACKEND__#$BACKEND#g" -e "s#127.0.0.1:18112#127.0.0.1:18522#g" "$NGINX_HOP_B" >"$WORK/nginx-b.conf"
grep -q 18521 "$WORK/nginx-a.conf" && grep -q 18522 "$WORK/nginx-b.conf" || { echo "nginx hop configs: unexpected listen addresses" >&2; exit 1; }
start NGINX_B nginx -c "$WORK/nginx-b.conf" -e "$WORK/nginx-b-stderr.log"
start NGINX_A nginx -c "$WORK/nginx-a.conf" -e "$WORK/nginx-a-stderr.log"
for p in 18500 18511 18512 18521 18522 18531 18532; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done
done
# nginx's CPU is its worker's (the master only waits): one worker each
worker() { for _ in $(seq 100); do pgrep -P "$1" && return 0; sleep 0.05; done; echo "nginx $1 has no worker" >&2; exit 1; }
NGINX_A_W=$(worker "$NGINX_A"); NGINX_B_W=$(worker "$NGINX_B")
declare -A PORT=([weft]=18511 [nginx]=18521 [floor]=18531) HOP_A=([weft]=$WEFT_SRC [nginx]=$NGINX_A_W [floor]=$FLOOR_A) \
  HOP_B=([weft]=$WEFT_DST [nginx]=$NGINX_B_W [floor]=$FLOOR_B)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
for k in weft nginx floor; do "$FORTIO" load -quiet -c 16 -qps 0 -t 2s "http://127.0.0.1:${PORT[$k]}/" >/dev/null 2>&1; done
for r in $(seq "$ROUNDS"); do
  echo "# round $r $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  order=(weft nginx floor); rot=$(((r - 1) % 3)); order=("${order[@]:rot}" "${order[@]:0:rot}")
  for k in "${order[@]}"; do
    a0=$(ticks "${HOP_A[$k]}"); b0=$(ticks "${HOP_B[$k]}")
    "$FORTIO" load -quiet -c 16 -qps "$QPS" -t "${SECS}s" -p 50,99 -json "$WORK/out.json" "http://127.0.0.1:${PORT[$k]}/" >/dev/null 2>&1
    a1=$(ticks "${HOP_A[$k]}"); b1=$(ticks "${HOP_B[$k]}")
    python3 - "$WORK/out.json" "$((a1 - a0))" "$((b1 - b0))" "$(getconf CLK_TCK)" "$k" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); n = d["DurationHistogram"]["Count"]; hz = int(sys.argv[4])
ok = d["RetCodes"].get("200", 0)
p = {int(x["Percentile"]): x["Value"] for x in d["DurationHistogram"]["Percentiles"]}
us = lambda t: int(t) * 1e6 / hz / max(n, 1)
print(f"{sys.argv[5]} a_us={us(sys.argv[2]):.1f} b_us={us(sys.argv[3]):.1f} p50_ms={p[50]*1e3:.3f} p99_ms={p[99]*1e3:.3f} rps={d['ActualQPS']:.0f} n={n} ok={ok}")
PY
  done
done | tee "$WORK/rounds.txt"
python3 - "$WORK/rounds.txt" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault(f[0], []).append({k: float(v) for k, v in (x.split("=") for x in f[1:])})
bad = [k for k, v in rows.items() if any(r["ok"] != r["n"] for r in v)]
if bad:
    print("failed requests through: " + " ".join(bad))
med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rows.items()}
for k in ("weft", "nginx", "floor"):
    m = med[k]
    print(f"median {k}: hop_a_us={m['a_us']:.1f} hop_b_us={m['b_us']:.1f} p50_ms={m['p50_ms']:.3f} p99_ms={m['p99_ms']:.3f} rps={m['rps']:.0f}")
n = med["nginx"]
for k in ("weft", "floor"):
    m = med[k]
    print(f"{k}/nginx cpu_per_req={(m['a_us'] + m['b_us']) / (n['a_us'] + n['b_us']):.2f} hop_a={m['a_us'] / n['a_us']:.2f} hop_b={m['b_us'] / n['b_us']:.2f} p99={m['p99_ms'] / n['p99_ms']:.2f} max_rps={m['rps'] / n['rps']:.2f}")
PY
