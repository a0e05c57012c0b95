#!/usr/bin/env bash
# Build poolscope's collector from manifest.yaml with the OpenTelemetry
# Collector Builder, and print the binary's path.
#
# Cached outside the work tree, keyed by the manifest's content: a second run,
# or a fresh clone on the same machine, returns at once. The Go module cache
# (go env GOMODCACHE) keeps the downloads between builds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${POOLSCOPE_CACHE:-$HOME/.cache/poolscope}"
builder_version="0.161.0"

key="$(cat "$here/manifest.yaml" <(echo "$builder_version") | sha256sum | cut -c1-16)"
out="$cache/collector/$key"
binary="$out/poolscope-otelcol"
if [ -x "$binary" ]; then
    echo "$binary"
    exit 0
fi

command -v go >/dev/null || { echo "collector/build.sh: Go is not installed" >&2; exit 1; }
export GOBIN="$cache/bin"
mkdir -p "$GOBIN" "$out"
builder="$GOBIN/builder-$builder_version"
if [ ! -x "$builder" ]; then
    echo "==> installing the collector builder $builder_version" >&2
    go install "go.opentelemetry.io/collector/cmd/builder@v$builder_version" >&2
    mv "$GOBIN/builder" "$builder"
fi
echo "==> building the collector into $out (first time: a few minutes)" >&2
sed "s|^\(\s*output_path:\).*|\1 $out|" "$here/manifest.yaml" > "$out/manifest.yaml"
"$builder" --config "$out/manifest.yaml" >&2
echo "$binary"
