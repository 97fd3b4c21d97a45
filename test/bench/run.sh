#!/usr/bin/env bash
# Mesh-path benchmark: one run, four paths side by side, interleaved, 3 rounds, medians.
#   direct : client -> backend
#   weft   : client -> Weft outbound -> mTLS 1.3 HTTP/2 CONNECT tunnel -> Weft inbound -> backend, one
#            weft process doing both hops (the same-node path; the shape of the nginx peer, which is
#            one nginx process with both server blocks); metrics off
#   weftm  : the same with the proxy's Prometheus metrics on (every request counted and timed, as the
#            agent runs by default): weftm/weft is what metrics cost
#   weft2p : the same with the two hops in two weft processes (source node, destination node: the
#            cross-node path, where each node's proxy pays its own wake-ups)
#   nginx  : client -> nginx hop A -> TLS 1.3 mutual auth -> nginx hop B -> backend (../shared/bench/nginx-2hop-mtls.conf)
#   rp     : client -> httputil.ReverseProxy A -> TLS 1.3 mutual auth -> httputil.ReverseProxy B -> backend
# Load (fortio): HTTP/1.1, 1 KiB responses, 16 connections; a fixed 1000 req/s for CPU and
# latency, and max throughput separately. CPU comes from /proc/<pid>/stat (utime+stime) of
# the proxy processes only.
# Then the same for HTTP/2 cleartext from the client (H2=0 skips it): h2c direct, Weft with an
# h2c service (h2c end to end, multiplexed in the tunnel; one process, h2weft2p: two), nginx with `listen ... http2` on
# hop A (nginx proxies HTTP/1.1 between its hops and to the backend: its usual shape).
# Env: ROUNDS (3), FIXED_SECS (10), MAX_SECS (8), H2 (1), NGINX_CONF (shared config path),
# ONLY (space-separated paths to measure, e.g. ONLY="weft weftm" for the metrics cost alone).
set -euo pipefail
export GOTOOLCHAIN=auto
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
FIXED_SECS=${FIXED_SECS:-10}
MAX_SECS=${MAX_SECS:-8}
H2=${H2:-1}
NGINX_CONF=${NGINX_CONF:-$ROOT/../shared/bench/nginx-2hop-mtls.conf}
TOOLS=$ROOT/.cache/bench
WORK=$(mktemp -d /tmp/weft-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log() { echo "# $*" >&2; }

# --- tools -----------------------------------------------------------------
bash "$(dirname "$0")/../deps.sh" bench
mkdir -p "$TOOLS"
if [ ! -x "$TOOLS/fortio" ]; then
  log "installing fortio v1.68.2"
  GOBIN=$TOOLS go install fortio.org/fortio@v1.68.2
fi
FORTIO=$TOOLS/fortio
log "building weft-bench"
go build -o "$WORK/weft-bench" "$ROOT/test/bench/cmd/weft-bench"
B=$WORK/weft-bench
$B pki -dir "$WORK"

# --- processes -------------------------------------------------------------
BACKEND=127.0.0.1:18100
# start VAR cmd...: runs cmd in the background, records its pid in VAR and in PIDS
start() { local var=$1; shift; "$@" >"$WORK/$var.log" 2>&1 & PIDS+=($!); printf -v "$var" %s $!; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/${1%:*}/${1#*:}) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; tail -n 3 "$WORK"/*.log >&2; exit 1; }
# every port must be free: a leftover listener would be measured instead of ours
for p in 18100 18111 18112 18121 18122 18131 18211 18212 18213 18214 18215 18216 18217 18218 18219 18221 18222 18223 18224 18225 18226; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use" >&2; exit 1; fi
done

start BACKEND_PID $B backend -listen $BACKEND -size 1024
start WEFT_DST $B weft -role dst -in 127.0.0.1:18212 -out 127.0.0.1:18214 -peer 127.0.0.1:18212 -backend $BACKEND -pki "$WORK"
start WEFT_SRC $B weft -role src -out 127.0.0.1:18211 -in 127.0.0.1:18213 -peer 127.0.0.1:18212 -backend $BACKEND -pki "$WORK"
start WEFT_NODE $B weft -role node -out 127.0.0.1:18215 -in 127.0.0.1:18216 -peer 127.0.0.1:18216 -backend $BACKEND -pki "$WORK"
start WEFTM_NODE $B weft -role node -out 127.0.0.1:18217 -in 127.0.0.1:18218 -peer 127.0.0.1:18218 -backend $BACKEND -pki "$WORK" -metrics 127.0.0.1:18219
start WEFT2_NODE $B weft -role node -proto h2c -out 127.0.0.1:18225 -in 127.0.0.1:18226 -peer 127.0.0.1:18226 -backend $BACKEND -pki "$WORK"
start WEFT2_DST $B weft -role dst -proto h2c -in 127.0.0.1:18222 -out 127.0.0.1:18224 -peer 127.0.0.1:18222 -backend $BACKEND -pki "$WORK"
start WEFT2_SRC $B weft -role src -proto h2c -out 127.0.0.1:18221 -in 127.0.0.1:18223 -peer 127.0.0.1:18222 -backend $BACKEND -pki "$WORK"
start RP_B $B rp -role b -listen 127.0.0.1:18122 -upstream $BACKEND -pki "$WORK"
start RP_A $B rp -role a -listen 127.0.0.1:18121 -upstream 127.0.0.1:18122 -pki "$WORK"
for d in cb pt ft ut st; do mkdir -p "$WORK/$d"; done
sed -e "s#__DIR__#$WORK#g" -e "s#__BACKEND__#$BACKEND#g" \
  -e "s#listen 127.0.0.1:18111;#listen 127.0.0.1:18111; listen 127.0.0.1:18131 http2;#" "$NGINX_CONF" >"$WORK/nginx.conf"
start NGINX nginx -c "$WORK/nginx.conf" -e "$WORK/nginx-stderr.log"
for p in $BACKEND 127.0.0.1:18211 127.0.0.1:18212 127.0.0.1:18215 127.0.0.1:18216 127.0.0.1:18217 127.0.0.1:18218 127.0.0.1:18219 127.0.0.1:18225 127.0.0.1:18226 127.0.0.1:18221 127.0.0.1:18222 127.0.0.1:18121 127.0.0.1:18122 127.0.0.1:18111 127.0.0.1:18131; do wait_port $p; done
sleep 0.5
NGINX_PIDS="$NGINX $(cat /proc/$NGINX/task/*/children 2>/dev/null)"

declare -A URL=([direct]=http://$BACKEND/ [weft]=http://127.0.0.1:18215/ [weftm]=http://127.0.0.1:18217/ [weft2p]=http://127.0.0.1:18211/ [nginx]=http://127.0.0.1:18111/ [rp]=http://127.0.0.1:18121/
  [h2direct]=http://$BACKEND/ [h2weft]=http://127.0.0.1:18225/ [h2weft2p]=http://127.0.0.1:18221/ [h2nginx]=http://127.0.0.1:18131/)
declare -A PROCS=([direct]="" [weft]="$WEFT_NODE" [weftm]="$WEFTM_NODE" [weft2p]="$WEFT_SRC $WEFT_DST" [nginx]="$NGINX_PIDS" [rp]="$RP_A $RP_B"
  [h2direct]="" [h2weft]="$WEFT2_NODE" [h2weft2p]="$WEFT2_SRC $WEFT2_DST" [h2nginx]="$NGINX_PIDS")

ticks() { local t=0; for p in $1; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
rss_kb() { local t=0; for p in $1; do t=$((t + $(awk '/^VmRSS/{print $2}' /proc/$p/status))); done; echo $t; }

# sanity: every path answers 200 with 1 KiB
for k in direct weft weftm weft2p nginx rp; do
  n=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "${URL[$k]}")
  [ "$n" = "200 1024" ] || { echo "path $k answers '$n'" >&2; for f in "$WORK"/*.log; do tail -5 "$f" >&2; done; exit 1; }
done
for k in weft weftm weft2p nginx rp; do echo "idle_rss $k $(rss_kb "${PROCS[$k]}")" >>"$WORK/results"; done

run() { # name qps secs -> json
  local h2=()
  case $1 in h2*) h2=(-h2 -stdclient) ;; esac
  "$FORTIO" load -quiet "${h2[@]}" -c 16 -qps "$2" -t "${3}s" -p "50,99" -json "$WORK/out.json" "${URL[$1]}" >/dev/null 2>&1
}

for r in $(seq "$ROUNDS"); do
  # rotate the order each round (interleaved)
  order=(direct weft weftm weft2p nginx rp); rot=$(( (r - 1) % 6 )); order=("${order[@]:rot}" "${order[@]:0:rot}")
  if [ "$H2" = 1 ]; then h2o=(h2direct h2weft h2weft2p h2nginx); rot=$(( (r - 1) % 4 )); order+=("${h2o[@]:rot}" "${h2o[@]:0:rot}"); fi
  if [ -n "${ONLY:-}" ]; then keep=(); for k in "${order[@]}"; do [[ " $ONLY " == *" $k "* ]] && keep+=("$k"); done; order=("${keep[@]}"); fi
  for k in "${order[@]}"; do
    log "round $r $k"
    run "$k" 0 1 # warm-up
    t0=$(ticks "${PROCS[$k]}")
    run "$k" 1000 "$FIXED_SECS"
    t1=$(ticks "${PROCS[$k]}")
    python3 - "$WORK/out.json" "$k" "$((t1 - t0))" "$(getconf CLK_TCK)" >>"$WORK/results" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); k = sys.argv[2]; ticks = int(sys.argv[3]); hz = int(sys.argv[4])
n = d["DurationHistogram"]["Count"]; ok = d.get("RetCodes", {}).get("200", 0)
p = {int(x["Percentile"]): x["Value"] for x in d["DurationHistogram"]["Percentiles"]}
print(f"fixed {k} cpu_us_per_req={ticks * 1e6 / hz / max(n, 1):.1f} p50_ms={p[50] * 1e3:.3f} p99_ms={p[99] * 1e3:.3f} qps={d['ActualQPS']:.0f} n={n} ok={ok}")
PY
    run "$k" 0 "$MAX_SECS"
    python3 - "$WORK/out.json" "$k" "$(rss_kb "${PROCS[$k]}")" >>"$WORK/results" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); k = sys.argv[2]
ok = d.get("RetCodes", {}).get("200", 0)
print(f"max {k} rps={d['ActualQPS']:.0f} ok={ok} n={d['DurationHistogram']['Count']} rss_kb={sys.argv[3]}")
PY
  done
done

# what the metrics path counted (one series per code: the label set is bounded)
curl -s http://127.0.0.1:18219/metrics | grep '^weft_http_requests_total' >&2 || true

python3 - "$WORK/results" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "idle_rss":
        rows[f[1]]["idle_rss_kb"].append(float(f[2])); continue
    kind, name = f[0], f[1]
    for kv in f[2:]:
        key, v = kv.split("="); rows[name][f"{kind}_{key}"].append(float(v))
print("raw per round:"); print(open(sys.argv[1]).read().rstrip())
med = {k: {m: st.median(v) for m, v in ms.items()} for k, ms in rows.items()}
def g(k, m): return med.get(k, {}).get(m, float("nan"))
print()
print(f"{'path':8} {'cpu_us/req':>11} {'p50_ms':>8} {'p99_ms':>8} {'max_rps':>9} {'rss_MB':>7} {'idle_MB':>8}   (medians of rounds; cpu and rss: proxy processes only)")
for k in ["direct", "weft", "weftm", "weft2p", "nginx", "rp"]:
    print(f"{k:8} {g(k,'fixed_cpu_us_per_req'):11.1f} {g(k,'fixed_p50_ms'):8.3f} {g(k,'fixed_p99_ms'):8.3f} {g(k,'max_rps'):9.0f} {g(k,'max_rss_kb')/1024:7.1f} {g(k,'idle_rss_kb')/1024:8.1f}")
for k in ["h2direct", "h2weft", "h2weft2p", "h2nginx"]:
    if k in med:
        print(f"{k:8} {g(k,'fixed_cpu_us_per_req'):11.1f} {g(k,'fixed_p50_ms'):8.3f} {g(k,'fixed_p99_ms'):8.3f} {g(k,'max_rps'):9.0f} {g(k,'max_rss_kb')/1024:7.1f} {'':>8}")
print()
for k in ["h2weft", "h2weft2p"]:
    if k not in med:
        continue
    print(f"h2c: {k}/h2nginx cpu_per_req={g(k,'fixed_cpu_us_per_req')/g('h2nginx','fixed_cpu_us_per_req'):.2f} p50={g(k,'fixed_p50_ms')/g('h2nginx','fixed_p50_ms'):.2f} p99={g(k,'fixed_p99_ms')/g('h2nginx','fixed_p99_ms'):.2f} max_rps={g(k,'max_rps')/g('h2nginx','max_rps'):.2f}")
print()
print("ratios to nginx:")
for k in ["weft", "weft2p", "rp"]:
    print(f"  {k}/nginx cpu_per_req={g(k,'fixed_cpu_us_per_req')/g('nginx','fixed_cpu_us_per_req'):.2f} p50={g(k,'fixed_p50_ms')/g('nginx','fixed_p50_ms'):.2f} p99={g(k,'fixed_p99_ms')/g('nginx','fixed_p99_ms'):.2f} max_rps={g(k,'max_rps')/g('nginx','max_rps'):.2f} rss={g(k,'max_rss_kb')/g('nginx','max_rss_kb'):.2f}")
print(f"  weft/rp cpu_per_req={g('weft','fixed_cpu_us_per_req')/g('rp','fixed_cpu_us_per_req'):.2f}  weft2p/rp cpu_per_req={g('weft2p','fixed_cpu_us_per_req')/g('rp','fixed_cpu_us_per_req'):.2f}")
print()
print(f"metrics on/off: weftm/weft cpu_per_req={g('weftm','fixed_cpu_us_per_req')/g('weft','fixed_cpu_us_per_req'):.3f} p50={g('weftm','fixed_p50_ms')/g('weft','fixed_p50_ms'):.3f} p99={g('weftm','fixed_p99_ms')/g('weft','fixed_p99_ms'):.3f} max_rps={g('weftm','max_rps')/g('weft','max_rps'):.3f} rss={g('weftm','max_rss_kb')/g('weft','max_rss_kb'):.3f}  (budget: cpu_per_req <= 1.05)")
print(f"weft/nginx cpu_per_req={g('weft','fixed_cpu_us_per_req')/g('nginx','fixed_cpu_us_per_req'):.2f} p50={g('weft','fixed_p50_ms')/g('nginx','fixed_p50_ms'):.2f} p99={g('weft','fixed_p99_ms')/g('nginx','fixed_p99_ms'):.2f} max_rps={g('weft','max_rps')/g('nginx','max_rps'):.2f}")
PY
