#!/usr/bin/env bash
# Build the Jaeger v2 binary (the trace store of the tests) from its Go module,
# and print the binary's path.
#
# Jaeger's go.mod has replace directives, so `go install module@version` is
# refused; the module is downloaded from the Go module proxy and built as the
# main module instead. Cached outside the work tree by version: a second run,
# or a fresh clone on the same machine, returns at once.
set -euo pipefail
# Go module v1.76.0 is Jaeger v2.13.0, the image compose.yaml pins.
version="v1.76.0"
cache="${POOLSCOPE_CACHE:-$HOME/.cache/poolscope}"
out="$cache/jaeger/$version"
binary="$out/jaeger"
if [ -x "$binary" ]; then
    echo "$binary"
    exit 0
fi

command -v go >/dev/null || { echo "jaeger/build.sh: Go is not installed" >&2; exit 1; }
echo "==> building Jaeger $version into $out (first time: a few minutes)" >&2
source_dir="$(go mod download -json "github.com/jaegertracing/jaeger@$version" \
    | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
[ -d "$source_dir" ] || { echo "jaeger/build.sh: download of Jaeger $version failed" >&2; exit 1; }
work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$source_dir/." "$work"
chmod -R u+w "$work"
mkdir -p "$out"
(cd "$work" && go build -trimpath -o "$binary.tmp" ./cmd/jaeger) >&2
mv "$binary.tmp" "$binary"
echo "$binary"
