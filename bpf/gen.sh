#!/usr/bin/env bash
# Regenerates bpf/redirect_bpfel.{go,o} with the pinned compiler (Debian
# bookworm clang-14). test/deps.sh installs the toolchain from apt when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

bash ../test/deps.sh generate

export GOTOOLCHAIN=auto
# bpf2go compiles with relative paths, so the object does not depend on the checkout.
go generate ./...
