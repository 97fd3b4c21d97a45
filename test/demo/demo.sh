#!/usr/bin/env bash
# The demo: on a running lab with weft installed (make lab-up lab-install),
# deploy the faces example, apply the 50/50 HTTPRoute from the Gateway API
# v1.1 announcement, send real traffic from a pod and show the split, then a
# header canary and a sticky session.
set -euo pipefail
cd "$(dirname "$0")/../.."
export KUBECONFIG="$PWD/.cache/lab/kubeconfig"
td=test/e2e/testdata

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
client() { kubectl -n faces exec client -- weft-echo client "$@"; }
# table RESULT_JSON: pods and versions as a small table.
table() {
	python3 -c '
import json, sys
r = json.loads(sys.argv[1])
tot = max(r["requests"], 1)
v = {"v1 (color)": 0, "v2 (color2)": 0}
for pod, n in sorted(r["pods"].items()):
    key = "v2 (color2)" if pod.startswith("color2-") else "v1 (color)"
    v[key] += n
    print(f"  {pod:<34} {n:>5}")
for k, n in v.items():
    print(f"  {k:<34} {n:>5}  {100*n/tot:5.1f}%")
print("  errors: %d  status: %s" % (r["errors"], r["status"]))
' "$1"
}

say "deploying the faces example (namespace faces, enrolled with weft.dev/mesh=enabled)"
kubectl apply --server-side -f "$td/faces.yaml"
kubectl -n faces rollout status deployment/color --timeout=180s
kubectl -n faces rollout status deployment/color2 --timeout=180s
kubectl -n faces wait --for=condition=Ready pod/client --timeout=120s
kubectl -n faces wait --for=condition=weft.dev/Enrolled pod/client --timeout=120s
kubectl -n faces get pods -o wide

say "the HTTPRoute: 50/50 between color and color2 on Service color, port 80"
cat "$td/canary.yaml"
kubectl apply --server-side -f "$td/canary.yaml"
for _ in $(seq 1 50); do
	r=$(client --url http://color.faces.svc.cluster.local/ --count 20)
	case "$r" in *color2-*color-*|*color-*color2-*) break ;; esac
	sleep 0.5
done
kubectl -n faces get httproute color-canary -o jsonpath='{range .status.parents[*].conditions[*]}{.type}={.status} ({.reason}){"\n"}{end}'

say "1000 requests from faces/client on lab-node-1"
table "$(client --url http://color.faces.svc.cluster.local/ --count 1000)"

say "header canary: 'traffic: test' goes to v2, the rest stays on v1"
kubectl apply --server-side -f "$td/header-canary.yaml"
sleep 2
echo "with the header:"
table "$(client --url http://color.faces.svc.cluster.local/ --count 200 --header traffic:test)"
echo "without:"
table "$(client --url http://color.faces.svc.cluster.local/ --count 200)"

say "sticky sessions (GEP-1619): one cookie, one pod, for 200 requests"
kubectl apply --server-side -f "$td/sticky.yaml"
kubectl -n faces rollout status deployment/sticky --timeout=180s
sleep 2
echo "without the cookie:"
kubectl -n faces exec client -- weft-echo client --url http://sticky.faces.svc.cluster.local/ --count 60
echo "with the cookie:"
kubectl -n faces exec client -- weft-echo client --url http://sticky.faces.svc.cluster.local/ --count 200 --cookies

say "from outside the cluster: a Gateway of class weft in front of the same canary"
cat "$td/edge-demo.yaml"
kubectl apply --server-side -f "$td/edge-demo.yaml"
kubectl -n faces wait --for=condition=Programmed gateway/edge --timeout=180s
addr=$(kubectl -n faces get gateway edge -o jsonpath='{.status.addresses[0].value}')
kubectl -n faces get gateway edge
# edge N [curl args]: N requests from the host, tallied by version.
edge() {
	n=$1; shift
	for _ in $(seq 1 "$n"); do
		curl -s -m 5 -H 'Host: faces.example.com' "$@" "http://$addr/" | grep -o '"pod":"[^"]*"' || echo error
	done | sed -E 's/^"pod":"(color2?)-.*/\1/' | sort | uniq -c
}
for _ in $(seq 1 60); do
	curl -s -m 2 -o /dev/null -w '%{http_code}' -H 'Host: faces.example.com' "http://$addr/" | grep -q 200 && break
	sleep 1
done
echo "200 requests with curl from the host to http://$addr/ (Host: faces.example.com):"
edge 200
echo "with 'traffic: test':"
edge 50 -H 'traffic: test'

say "route status as weft wrote it"
.cache/bin/weftctl status --kubeconfig "$KUBECONFIG" -n faces

cat <<MSG

The lab keeps running. Use it with:
  export KUBECONFIG=$KUBECONFIG
  kubectl get nodes; kubectl -n faces get gateway,httproute,pods -o wide
  curl -H 'Host: faces.example.com' http://$addr/
  .cache/bin/weftctl status
Tear it down with: make lab-down
MSG
