// Package bpf holds Weft's redirect programs (redirect.c) and their bpf2go
// output. The generated redirect_bpfel.go and redirect_bpfel.o are committed
// so `go build` needs no clang; `make generate` (bash bpf/gen.sh) reproduces
// them byte for byte with Debian's clang-14.
//
// The programs, maps and configuration variables are described in redirect.c;
// agent/datapath loads, configures, attaches and pins them.
package bpf

//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -target bpfel -type vip_key -type orig_dst -type tuple -type strict_pod Redirect redirect.c -- -I. -Wall -Werror
