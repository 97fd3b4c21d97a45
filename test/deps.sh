#!/usr/bin/env bash
# Installs the Debian packages a make target needs on a fresh machine, and nothing
# when they are there already. The one install step of the project: the Makefile's
# targets and .ci/run call it, so what CI installs is what `make demo` installs.
#
#   test/deps.sh lab        the lab: kube-proxy needs iptables or nftables and conntrack
#   test/deps.sh test       the lab plus what the tests use (tcpdump for the e2e capture,
#                           chromium for the weftctl dashboard test)
#   test/deps.sh bench      nginx, the benchmark's peer (no system nginx is started)
#   test/deps.sh generate   protoc, clang-14, llvm, libbpf headers, bpftool
#
# Several sets may be named at once. Packages only: Go and its tools come through the
# module proxy (GOTOOLCHAIN=auto, go install), Kubernetes from test/lab/k8s/build.sh.
set -euo pipefail

declare -A sets=(
	[lab]="iproute2 iptables nftables conntrack procps"
	[test]="iproute2 iptables nftables conntrack procps tcpdump git chromium"
	[bench]="nginx"
	[generate]="protobuf-compiler libprotobuf-dev clang-14 llvm libbpf-dev bpftool"
)

want=()
for s in "$@"; do
	[[ -n "${sets[$s]:-}" ]] || { echo "deps.sh: unknown set $s (lab, test, bench, generate)" >&2; exit 2; }
	# shellcheck disable=SC2206 # word splitting of the package list is intended
	want+=(${sets[$s]})
done
[[ ${#want[@]} -gt 0 ]] || { echo "usage: deps.sh SET..." >&2; exit 2; }

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
	echo "deps.sh: missing packages ${missing[*]}; run as root or install them" >&2
	exit 1
fi
echo "installing ${missing[*]} (apt)"
export DEBIAN_FRONTEND=noninteractive
# A package that would start a system service (nginx on :80) must not: the policy
# below tells its maintainer scripts not to start anything while we install.
made_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	made_policy=1
fi
trap '[[ $made_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq -o DPkg::Lock::Timeout=600
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
