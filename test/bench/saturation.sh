#!/usr/bin/env bash
# Where the cross-node HTTP/1.1 path's CPU goes at maximum throughput, Weft against nginx, per hop:
# the shape of run.sh's weft2p and nginx2p rows (a source and a destination weft process; nginx
# hop A and hop B, one worker each, from ../shared/bench/nginx-hop-{a,b}.conf), fortio at maximum
# rate over 16 connections. Per request and per hop it prints:
#   cpu_us   utime+stime of the process (no profiler attached)
#   sys, cs  system calls and context switches (perf stat: raw_syscalls:sys_enter, context-switches)
# then, from a perf record of each hop (4 kHz, call graphs), the µs per request spent in user space
# and in the kernel, and the kernel's share in the syscalls and scheduler paths that tell an event
# loop from a runtime that parks and wakes threads: futex (threads parked and woken), nanosleep
# (Go's sysmon thread and its work stealing), __schedule (context switches), epoll, TCP send/receive.
#   bash test/bench/saturation.sh            Env: SECS (6), ROUNDS (2), NGINX_HOP_A, NGINX_HOP_B
# Needs root (perf) and nginx; run it on a quiet machine (every process shares the cores).
set -euo pipefail
export GOTOOLCHAIN=auto
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${SECS:-6}
ROUNDS=${ROUNDS:-2}
NGINX_HOP_A=${NGINX_HOP_A:-$ROOT/../shared/bench/nginx-hop-a.conf}
NGINX_HOP_B=${NGINX_HOP_B:-$ROOT/../shared/bench/nginx-hop-b.conf}
command -v perf >/dev/null || { echo "saturation.sh needs perf (apt-get install linux-perf)" >&2; exit 2; }
# shellcheck source=test/bench/lib.sh
. "$ROOT/test/bench/lib.sh"
bench_init weft-saturation
W=$WORK
go build -o "$W/weft-bench" "$ROOT/test/bench/cmd/weft-bench"
B=$W/weft-bench
"$B" pki -dir "$W" >/dev/null
for p in 18500 18511 18512 18541 18542; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use" >&2; exit 1; fi
done
mkdir -p "$W"/{cb,pt,ft,ut,st}
"$B" backend -listen 127.0.0.1:18500 -size 1024 >"$W/backend.log" 2>&1 & PIDS+=($!)
"$B" weft -role dst -in 127.0.0.1:18512 -out 127.0.0.1:18514 -peer 127.0.0.1:18512 -backend 127.0.0.1:18500 -pki "$W" >"$W/dst.log" 2>&1 & WDST=$!; PIDS+=($!)
"$B" weft -role src -out 127.0.0.1:18511 -in 127.0.0.1:18513 -peer 127.0.0.1:18512 -backend 127.0.0.1:18500 -pki "$W" >"$W/src.log" 2>&1 & WSRC=$!; PIDS+=($!)
sed -e "s#__DIR__#$W#g" -e "s#__BACKEND__#127.0.0.1:18500#g" -e "s#127.0.0.1:18112#127.0.0.1:18542#g" \
  -e "s#listen 127.0.0.1:18111;#listen 127.0.0.1:18541;#" "$NGINX_HOP_A" >"$W/nginx-a.conf"
sed -e "s#__DIR__#$W#g" -e "s#__BACKEND__#127.0.0.1:18500#g" -e "s#127.0.0.1:18112#127.0.0.1:18542#g" "$NGINX_HOP_B" >"$W/nginx-b.conf"
grep -q 18541 "$W/nginx-a.conf" && grep -q 18542 "$W/nginx-b.conf" || { echo "nginx hop configs: unexpected listen addresses" >&2; exit 1; }
nginx -c "$W/nginx-b.conf" -e "$W/nginx-b.err" & NB=$!; PIDS+=($!)
nginx -c "$W/nginx-a.conf" -e "$W/nginx-a.err" & NA=$!; PIDS+=($!)
for p in 18500 18511 18512 18541 18542; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done
done
# the nginx workers (one per hop) do the work; their masters only wait
NAW=$(pgrep -P "$NA"); NBW=$(pgrep -P "$NB")
[ -n "$NAW" ] && [ -n "$NBW" ] || { echo "no nginx worker" >&2; exit 1; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# counts NAME PORT PID_A PID_B: one round, utime+stime and perf stat counts per request
counts() {
  "$FORTIO" load -quiet -c 16 -qps 0 -t 1s "http://127.0.0.1:$2/" >/dev/null 2>&1
  local a0 b0 a1 b1 pa pb
  a0=$(ticks "$3"); b0=$(ticks "$4")
  perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$3" -o "$W/$1-a.stat" -- sleep "$SECS" & pa=$!
  perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$4" -o "$W/$1-b.stat" -- sleep "$SECS" & pb=$!
  "$FORTIO" load -quiet -c 16 -qps 0 -t "${SECS}s" -json "$W/$1.json" "http://127.0.0.1:$2/" >/dev/null 2>&1
  wait "$pa" "$pb"
  a1=$(ticks "$3"); b1=$(ticks "$4")
  python3 - "$W/$1.json" "$W/$1-a.stat" "$W/$1-b.stat" "$((a1 - a0))" "$((b1 - b0))" "$(getconf CLK_TCK)" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); n = max(d["DurationHistogram"]["Count"], 1); hz = int(sys.argv[6])
ok = d["RetCodes"].get("200", 0)
def stat(f):
    r = {}
    for line in open(f):
        x = line.strip().split(",")
        if len(x) > 3 and x[0].replace(".", "").isdigit():
            r[x[2]] = float(x[0])
    return r
a, b = stat(sys.argv[2]), stat(sys.argv[3])
hop = lambda name, s, t: (f"{name}: cpu_us={int(t) * 1e6 / hz / n:.1f} sys={s.get('raw_syscalls:sys_enter', 0) / n:.2f}"
                          f" cs={s.get('context-switches', 0) / n:.2f}")
print(f"{sys.argv[7]:5} rps={d['ActualQPS']:.0f} ok={ok}/{n}  " + hop("source", a, sys.argv[4]) + "  " + hop("destination", b, sys.argv[5]))
PY
}
# profile NAME PORT PID_A PID_B: perf record of both hops, µs per request by path
profile() {
  local pa pb
  "$FORTIO" load -quiet -c 16 -qps 0 -t 1s "http://127.0.0.1:$2/" >/dev/null 2>&1
  perf record -q -g -F 4000 -o "$W/$1-a.data" -p "$3" -- sleep "$SECS" >/dev/null 2>&1 & pa=$!
  perf record -q -g -F 4000 -o "$W/$1-b.data" -p "$4" -- sleep "$SECS" >/dev/null 2>&1 & pb=$!
  "$FORTIO" load -quiet -c 16 -qps 0 -t "${SECS}s" -json "$W/$1-p.json" "http://127.0.0.1:$2/" >/dev/null 2>&1
  wait "$pa" "$pb"
  local n
  n=$(python3 -c "import json,sys; print(max(json.load(open(sys.argv[1]))['DurationHistogram']['Count'], 1))" "$W/$1-p.json")
  for h in a b; do
    local total
    total=$(perf report -i "$W/$1-$h.data" --no-children -n --sort dso -q -g none 2>/dev/null | awk '{t += $2} END {print t + 0}')
    {
      perf report -i "$W/$1-$h.data" --no-children -n --sort dso -q -g none 2>/dev/null | awk '{print "dso", $2, $3}'
      perf report -i "$W/$1-$h.data" --children --sort sym -q -g none 2>/dev/null |
        grep -E '\] (__x64_sys_(futex|nanosleep|epoll_pwait|epoll_wait)|__schedule|tcp_sendmsg|tcp_recvmsg)$' | awk '{print "sym", $1, $NF}'
    } | python3 -c '
import sys
name, hop, n, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) or 1
us = lambda samples: samples * 250 / n  # 4 kHz: a sample is 250 µs
kernel = user = 0.0; syms = {}
for line in sys.stdin:
    f = line.split()
    if len(f) < 3:
        continue
    if f[0] == "dso":
        if f[2] == "[kernel.kallsyms]": kernel += float(f[1])
        else: user += float(f[1])
    else:
        syms[f[2].replace("__x64_sys_", "")] = float(f[1].rstrip("%")) / 100 * total
order = ["futex", "nanosleep", "__schedule", "epoll_pwait", "epoll_wait", "tcp_sendmsg", "tcp_recvmsg"]
print(f"{name:5} {hop:11} µs/req under perf: user {us(user):.1f}, kernel {us(kernel):.1f}; in the kernel: "
      + ", ".join(f"{k} {us(syms[k]):.1f}" for k in order if k in syms))
' "$1" "$( [ "$h" = a ] && echo source || echo destination )" "$n" "$total"
  done
}
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    counts weft 18511 "$WSRC" "$WDST"; counts nginx 18541 "$NAW" "$NBW"
  else
    counts nginx 18541 "$NAW" "$NBW"; counts weft 18511 "$WSRC" "$WDST"
  fi
done
profile weft 18511 "$WSRC" "$WDST"
profile nginx 18541 "$NAW" "$NBW"
