#!/usr/bin/env bash
# Regenerates bpf/redirect_bpfel.{go,o} with the pinned compiler (Debian
# bookworm clang-14). Installs the toolchain from apt when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v clang-14 >/dev/null || need+=(clang-14)
command -v llvm-strip-14 >/dev/null || need+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v bpftool >/dev/null || need+=(bpftool)
if [ ${#need[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${need[@]}"
fi

export GOTOOLCHAIN=auto
# bpf2go compiles with relative paths, so the object does not depend on the checkout.
go generate ./...
