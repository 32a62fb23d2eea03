#!/bin/bash
# Builds Benthos v4.27.0 (http_server input, kafka_franz output: the peer of
# `make bench-ingress`) into DIR/benthos; put DIR on your PATH. Needs the Go toolchain and
# the Go module proxy. Redpanda Connect, Benthos's successor, is refused by the module proxy
# here; v4.27.0 is the same engine and output before the rename.
#     bench/benthos/build.sh ~/bin
set -euo pipefail
out="$(realpath "${1:?usage: build.sh DIR}")"
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp "$(dirname "$0")"/{go.mod,go.sum,main.go} "$src"/
cd "$src"
go build -o "$out/benthos" .
echo "built $out/benthos"
