#!/usr/bin/env bash
# Mesh-path benchmark: every path side by side, interleaved, 3 rounds, medians.
# The headline is the cross-node shape: one proxy process per node, two processes per path.
#   direct   : client -> backend
#   weft2p   : client -> Weft source-node proxy -> mTLS 1.3 HTTP/2 CONNECT tunnel -> Weft destination-node
#              proxy -> backend: two weft processes (the cross-node path); metrics off
#   nginx2p  : client -> nginx hop A -> TLS 1.3 mutual auth -> nginx hop B -> backend, two nginx processes
#              (../shared/bench/nginx-hop-a.conf + nginx-hop-b.conf, one worker each)
# Secondary, the one-process shape (the same-node path):
#   weft     : both hops in one weft process; metrics off
#   weftm    : the same with the proxy's Prometheus metrics on (as the agent runs by default):
#              weftm/weft is what metrics cost
#   nginx    : both server blocks in one nginx process (../shared/bench/nginx-2hop-mtls.conf)
#   rp       : httputil.ReverseProxy A -> TLS 1.3 mutual auth -> httputil.ReverseProxy B (two processes)
# Load (fortio): HTTP/1.1, 1 KiB responses, 16 connections; a fixed 1000 req/s for CPU and
# latency, and max throughput separately. CPU comes from /proc/<pid>/stat (utime+stime) of
# the proxy processes only.
# Then the same for HTTP/2 cleartext from the client (H2=0 skips it): h2c direct; Weft with an
# h2c service (h2c end to end, multiplexed in the tunnel; h2weft2p: two processes, h2weft: one);
# nginx with `listen ... http2` on hop A (h2nginx2p: the two-process pair, h2nginx: one process; nginx
# proxies HTTP/1.1 between its hops and to the backend: its usual shape).
# Then gRPC (GRPC=0 skips it): fortio's gRPC ping with a 1 KiB payload each way, 16 connections, to fortio's
# gRPC server: grpcdirect; grpcweft2p (a gRPC Service through two weft processes); grpcnginx2p (the same nginx
# pair with a gRPC server block each: grpc_pass over TLS 1.3 with mutual auth between the hops, as nginx proxies
# gRPC; the block is added to the shared hop configs here).
# Env: ROUNDS (3), FIXED_SECS (10), MAX_SECS (8), H2 (1), GRPC (1), NGINX_CONF, NGINX_HOP_A, NGINX_HOP_B (shared
# config paths), ONLY (space-separated paths to measure, e.g. ONLY="weft weftm" for the metrics cost alone),
# WEFT_ENV (environment for the weft processes, e.g. WEFT_ENV=GOMAXPROCS=1 for a proxy sized to one core,
# as a CPU limit of 1 sizes the agent).
# The last two lines: `h2c weft/nginx ...` (h2weft2p/h2nginx2p) and `weft/nginx ...` (weft2p/nginx2p).
set -euo pipefail
export GOTOOLCHAIN=auto
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
FIXED_SECS=${FIXED_SECS:-10}
MAX_SECS=${MAX_SECS:-8}
H2=${H2:-1}
GRPC=${GRPC:-1}
WEFT_ENV=${WEFT_ENV:-}
NGINX_CONF=${NGINX_CONF:-$ROOT/../shared/bench/nginx-2hop-mtls.conf}
NGINX_HOP_A=${NGINX_HOP_A:-$ROOT/../shared/bench/nginx-hop-a.conf}
NGINX_HOP_B=${NGINX_HOP_B:-$ROOT/../shared/bench/nginx-hop-b.conf}
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
for p in 18100 18101 18102 18111 18112 18141 18142 18143 18144 18145 18121 18122 18131 18211 18212 18213 18214 18215 18216 18217 18218 18219 18221 18222 18223 18224 18225 18226 18231 18232 18233 18234; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use" >&2; exit 1; fi
done

start BACKEND_PID $B backend -listen $BACKEND -size 1024
start WEFT_DST env $WEFT_ENV $B weft -role dst -in 127.0.0.1:18212 -out 127.0.0.1:18214 -peer 127.0.0.1:18212 -backend $BACKEND -pki "$WORK"
start WEFT_SRC env $WEFT_ENV $B weft -role src -out 127.0.0.1:18211 -in 127.0.0.1:18213 -peer 127.0.0.1:18212 -backend $BACKEND -pki "$WORK"
start WEFT_NODE env $WEFT_ENV $B weft -role node -out 127.0.0.1:18215 -in 127.0.0.1:18216 -peer 127.0.0.1:18216 -backend $BACKEND -pki "$WORK"
start WEFTM_NODE env $WEFT_ENV $B weft -role node -out 127.0.0.1:18217 -in 127.0.0.1:18218 -peer 127.0.0.1:18218 -backend $BACKEND -pki "$WORK" -metrics 127.0.0.1:18219
GRPC_BACKEND=127.0.0.1:18101
start GRPC_BACKEND_PID "$FORTIO" server -http-port 127.0.0.1:18102 -grpc-port $GRPC_BACKEND -redirect-port disabled -tcp-port disabled -udp-port disabled
start WEFTG_DST env $WEFT_ENV $B weft -role dst -proto grpc -in 127.0.0.1:18232 -out 127.0.0.1:18234 -peer 127.0.0.1:18232 -backend $GRPC_BACKEND -pki "$WORK"
start WEFTG_SRC env $WEFT_ENV $B weft -role src -proto grpc -out 127.0.0.1:18231 -in 127.0.0.1:18233 -peer 127.0.0.1:18232 -backend $GRPC_BACKEND -pki "$WORK"
start WEFT2_NODE env $WEFT_ENV $B weft -role node -proto h2c -out 127.0.0.1:18225 -in 127.0.0.1:18226 -peer 127.0.0.1:18226 -backend $BACKEND -pki "$WORK"
start WEFT2_DST env $WEFT_ENV $B weft -role dst -proto h2c -in 127.0.0.1:18222 -out 127.0.0.1:18224 -peer 127.0.0.1:18222 -backend $BACKEND -pki "$WORK"
start WEFT2_SRC env $WEFT_ENV $B weft -role src -proto h2c -out 127.0.0.1:18221 -in 127.0.0.1:18223 -peer 127.0.0.1:18222 -backend $BACKEND -pki "$WORK"
start RP_B $B rp -role b -listen 127.0.0.1:18122 -upstream $BACKEND -pki "$WORK"
start RP_A $B rp -role a -listen 127.0.0.1:18121 -upstream 127.0.0.1:18122 -pki "$WORK"
for d in cb pt ft ut st; do mkdir -p "$WORK/$d"; done
sed -e "s#__DIR__#$WORK#g" -e "s#__BACKEND__#$BACKEND#g" \
  -e "s#listen 127.0.0.1:18111;#listen 127.0.0.1:18111; listen 127.0.0.1:18131 http2;#" "$NGINX_CONF" >"$WORK/nginx.conf"
start NGINX nginx -c "$WORK/nginx.conf" -e "$WORK/nginx-stderr.log"
# the two-process pair on its own ports (hop A 18141, http2 18143; hop B 18142); each keeps its own pid file
sed -e "s#__DIR__#$WORK#g" -e "s#__BACKEND__#$BACKEND#g" -e "s#127.0.0.1:18112#127.0.0.1:18142#g" \
  -e "s#listen 127.0.0.1:18111;#listen 127.0.0.1:18141; listen 127.0.0.1:18143 http2;#" "$NGINX_HOP_A" >"$WORK/nginx-a.conf"
sed -e "s#__DIR__#$WORK#g" -e "s#__BACKEND__#$BACKEND#g" -e "s#127.0.0.1:18112#127.0.0.1:18142#g" "$NGINX_HOP_B" >"$WORK/nginx-b.conf"
# gRPC: one more server block per hop (nginx carries gRPC only with grpc_pass, HTTP/2 end to end)
python3 - "$WORK" "$GRPC_BACKEND" <<'PY'
import sys
work, backend = sys.argv[1], sys.argv[2]
tls = f"{work}/pki"
blocks = {
    "a": f"""  upstream hopb_grpc {{ server 127.0.0.1:18145; keepalive 64; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:18144 http2;
    location / {{
      grpc_pass grpcs://hopb_grpc;
      grpc_ssl_certificate {tls}/cert.pem; grpc_ssl_certificate_key {tls}/key.pem;
      grpc_ssl_trusted_certificate {tls}/cert.pem; grpc_ssl_verify on; grpc_ssl_name mesh;
      grpc_ssl_protocols TLSv1.3; grpc_ssl_session_reuse on;
    }}
  }}
""",
    "b": f"""  upstream be_grpc {{ server {backend}; keepalive 64; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:18145 ssl http2;
    ssl_certificate {tls}/cert.pem; ssl_certificate_key {tls}/key.pem;
    ssl_client_certificate {tls}/cert.pem; ssl_verify_client on; ssl_protocols TLSv1.3;
    location / {{ grpc_pass grpc://be_grpc; }}
  }}
""",
}
for hop, block in blocks.items():
    path = f"{work}/nginx-{hop}.conf"
    conf = open(path).read().rstrip()
    assert conf.endswith("}"), path
    open(path, "w").write(conf[:-1] + block + "}\n")
PY
grep -q 18141 "$WORK/nginx-a.conf" && grep -q 18142 "$WORK/nginx-b.conf" || { echo "nginx hop configs: unexpected listen addresses" >&2; exit 1; }
start NGINX_B nginx -c "$WORK/nginx-b.conf" -e "$WORK/nginx-b-stderr.log"
start NGINX_A nginx -c "$WORK/nginx-a.conf" -e "$WORK/nginx-a-stderr.log"
for p in $BACKEND 127.0.0.1:18211 127.0.0.1:18212 127.0.0.1:18215 127.0.0.1:18216 127.0.0.1:18217 127.0.0.1:18218 127.0.0.1:18219 127.0.0.1:18225 127.0.0.1:18226 127.0.0.1:18221 127.0.0.1:18222 127.0.0.1:18121 127.0.0.1:18122 127.0.0.1:18111 127.0.0.1:18131 127.0.0.1:18141 127.0.0.1:18142 127.0.0.1:18143 127.0.0.1:18144 127.0.0.1:18145 $GRPC_BACKEND 127.0.0.1:18231 127.0.0.1:18232; do wait_port $p; done
sleep 0.5
NGINX_PIDS="$NGINX $(cat /proc/$NGINX/task/*/children 2>/dev/null)"
NGINX2_A="$NGINX_A $(cat /proc/$NGINX_A/task/*/children 2>/dev/null)"
NGINX2_B="$NGINX_B $(cat /proc/$NGINX_B/task/*/children 2>/dev/null)"

declare -A URL=([direct]=http://$BACKEND/ [weft]=http://127.0.0.1:18215/ [weftm]=http://127.0.0.1:18217/ [weft2p]=http://127.0.0.1:18211/ [nginx]=http://127.0.0.1:18111/ [nginx2p]=http://127.0.0.1:18141/ [rp]=http://127.0.0.1:18121/
  [h2direct]=http://$BACKEND/ [h2weft]=http://127.0.0.1:18225/ [h2weft2p]=http://127.0.0.1:18221/ [h2nginx]=http://127.0.0.1:18131/ [h2nginx2p]=http://127.0.0.1:18143/
  [grpcdirect]=$GRPC_BACKEND [grpcweft2p]=127.0.0.1:18231 [grpcnginx2p]=127.0.0.1:18144)
declare -A PROCS=([direct]="" [weft]="$WEFT_NODE" [weftm]="$WEFTM_NODE" [weft2p]="$WEFT_SRC $WEFT_DST" [nginx]="$NGINX_PIDS" [nginx2p]="$NGINX2_A $NGINX2_B" [rp]="$RP_A $RP_B"
  [h2direct]="" [h2weft]="$WEFT2_NODE" [h2weft2p]="$WEFT2_SRC $WEFT2_DST" [h2nginx]="$NGINX_PIDS" [h2nginx2p]="$NGINX2_A $NGINX2_B"
  [grpcdirect]="" [grpcweft2p]="$WEFTG_SRC $WEFTG_DST" [grpcnginx2p]="$NGINX2_A $NGINX2_B")
# the two-process paths' hops, each measured on its own (vCPU and memory of one node's proxy)
declare -A HOP_A=([weft2p]="$WEFT_SRC" [nginx2p]="$NGINX2_A" [h2weft2p]="$WEFT2_SRC" [h2nginx2p]="$NGINX2_A" [grpcweft2p]="$WEFTG_SRC" [grpcnginx2p]="$NGINX2_A")
declare -A HOP_B=([weft2p]="$WEFT_DST" [nginx2p]="$NGINX2_B" [h2weft2p]="$WEFT2_DST" [h2nginx2p]="$NGINX2_B" [grpcweft2p]="$WEFTG_DST" [grpcnginx2p]="$NGINX2_B")

ticks() { local t=0; for p in $1; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
# busy: the whole machine's busy CPU time (all cores: user, nice, system, irq, softirq), in ticks
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
rss_kb() { local t=0; for p in $1; do t=$((t + $(awk '/^VmRSS/{print $2}' /proc/$p/status))); done; echo $t; }

# sanity: every path answers 200 with 1 KiB (the h2 paths over h2c with prior knowledge)
for k in direct weft weftm weft2p nginx nginx2p rp h2weft h2weft2p h2nginx h2nginx2p; do
  h2=(); case $k in h2*) h2=(--http2-prior-knowledge) ;; esac
  n=$(curl -s "${h2[@]}" -o /dev/null -w '%{http_code} %{size_download}' "${URL[$k]}")
  [ "$n" = "200 1024" ] || { echo "path $k answers '$n'" >&2; for f in "$WORK"/*.log; do tail -5 "$f" >&2; done; exit 1; }
done
# gRPC paths: one ping each
for k in grpcdirect grpcweft2p grpcnginx2p; do
  "$FORTIO" load -quiet -grpc -ping -payload-size 1024 -n 1 "${URL[$k]}" >"$WORK/grpc-sanity.log" 2>&1 \
    || { echo "gRPC path $k fails:" >&2; tail -5 "$WORK/grpc-sanity.log" >&2; for f in "$WORK"/*.log; do tail -5 "$f" >&2; done; exit 1; }
done
for k in weft weftm weft2p nginx nginx2p rp; do echo "idle_rss $k $(rss_kb "${PROCS[$k]}")" >>"$WORK/results"; done
for k in weft2p nginx2p; do echo "idle_rss_hops $k $(rss_kb "${HOP_A[$k]}") $(rss_kb "${HOP_B[$k]}")" >>"$WORK/results"; done

run() { # name qps secs -> json
  local h2=()
  case $1 in h2*) h2=(-h2 -stdclient) ;; grpc*) h2=(-grpc -ping -payload-size 1024) ;; esac
  "$FORTIO" load -quiet "${h2[@]}" -c 16 -qps "$2" -t "${3}s" -p "50,90,99" -json "$WORK/out.json" "${URL[$1]}" >/dev/null 2>&1
}

for r in $(seq "$ROUNDS"); do
  # rotate the order each round (interleaved); weft and weftm, which the metrics check compares,
  # stay side by side and swap places every other round, so neither always follows the other
  order=(direct weft2p nginx2p weft weftm nginx rp); (( r % 2 == 0 )) && order=(direct weft2p nginx2p weftm weft nginx rp)
  rot=$(( (r - 1) % 7 )); order=("${order[@]:rot}" "${order[@]:0:rot}")
  if [ "$H2" = 1 ]; then h2o=(h2direct h2weft2p h2nginx2p h2weft h2nginx); rot=$(( (r - 1) % 5 )); order+=("${h2o[@]:rot}" "${h2o[@]:0:rot}"); fi
  if [ "$GRPC" = 1 ]; then go=(grpcdirect grpcweft2p grpcnginx2p); rot=$(( (r - 1) % 3 )); order+=("${go[@]:rot}" "${go[@]:0:rot}"); fi
  if [ -n "${ONLY:-}" ]; then keep=(); for k in "${order[@]}"; do [[ " $ONLY " == *" $k "* ]] && keep+=("$k"); done; order=("${keep[@]}"); fi
  for k in "${order[@]}"; do
    log "round $r $k"
    run "$k" 0 1 # warm-up
    t0=$(ticks "${PROCS[$k]}"); a0=$(ticks "${HOP_A[$k]:-}"); b0=$(ticks "${HOP_B[$k]:-}")
    run "$k" 1000 "$FIXED_SECS"
    t1=$(ticks "${PROCS[$k]}"); a1=$(ticks "${HOP_A[$k]:-}"); b1=$(ticks "${HOP_B[$k]:-}")
    python3 - "$WORK/out.json" "$k" "$((t1 - t0))" "$(getconf CLK_TCK)" "$((a1 - a0))" "$((b1 - b0))" >>"$WORK/results" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); k = sys.argv[2]; ticks = int(sys.argv[3]); hz = int(sys.argv[4])
n = d["DurationHistogram"]["Count"]; codes = d.get("RetCodes", {}); ok = codes.get("200", 0) + codes.get("SERVING", 0)
p = {int(x["Percentile"]): x["Value"] for x in d["DurationHistogram"]["Percentiles"]}
us = lambda t: t * 1e6 / hz / max(n, 1)
print(f"fixed {k} cpu_us_per_req={us(ticks):.1f} hopa_us_per_req={us(int(sys.argv[5])):.1f} hopb_us_per_req={us(int(sys.argv[6])):.1f}"
      f" p50_ms={p[50] * 1e3:.3f} p90_ms={p[90] * 1e3:.3f} p99_ms={p[99] * 1e3:.3f} qps={d['ActualQPS']:.0f} n={n} ok={ok}")
PY
    t0=$(ticks "${PROCS[$k]}"); a0=$(ticks "${HOP_A[$k]:-}"); b0=$(ticks "${HOP_B[$k]:-}"); m0=$(busy)
    case $k in grpc*) bk=$GRPC_BACKEND_PID ;; *) bk=$BACKEND_PID ;; esac
    k0=$(ticks "$bk")
    run "$k" 0 "$MAX_SECS"
    t1=$(ticks "${PROCS[$k]}"); a1=$(ticks "${HOP_A[$k]:-}"); b1=$(ticks "${HOP_B[$k]:-}"); m1=$(busy); k1=$(ticks "$bk")
    # CPU per request at maximum throughput too: with the cores saturated it is what bounds max rps;
    # machine_us_per_req is every process's (the load generator's and the backend's included),
    # backend_us_per_req the backend's alone
    python3 - "$WORK/out.json" "$k" "$(rss_kb "${PROCS[$k]}")" "$(rss_kb "${HOP_A[$k]:-}")" "$(rss_kb "${HOP_B[$k]:-}")" \
      "$((t1 - t0))" "$((a1 - a0))" "$((b1 - b0))" "$(getconf CLK_TCK)" "$((m1 - m0))" "$((k1 - k0))" >>"$WORK/results" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); k = sys.argv[2]; n = d['DurationHistogram']['Count']; hz = int(sys.argv[9])
codes = d.get("RetCodes", {}); ok = codes.get("200", 0) + codes.get("SERVING", 0)
us = lambda t: int(t) * 1e6 / hz / max(n, 1)
print(f"max {k} rps={d['ActualQPS']:.0f} ok={ok} n={n} rss_kb={sys.argv[3]} hopa_rss_kb={sys.argv[4]} hopb_rss_kb={sys.argv[5]}"
      f" cpu_us_per_req={us(sys.argv[6]):.1f} hopa_us_per_req={us(sys.argv[7]):.1f} hopb_us_per_req={us(sys.argv[8]):.1f}"
      f" machine_us_per_req={us(sys.argv[10]):.1f} backend_us_per_req={us(sys.argv[11]):.1f}")
PY
  done
done

# what the metrics path counted (one series per code: the label set is bounded)
curl -s http://127.0.0.1:18219/metrics | grep '^weft_http_requests_total' >&2 || true

python3 "$(dirname "$0")/summary.py" "$WORK/results"
