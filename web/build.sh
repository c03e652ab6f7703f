#!/usr/bin/env bash
# Builds the browser demo into web/dist: the wasm runtime (kiln-web, with simd128) through wasm-bindgen, the
# page's files, and the models packed from a checkpoint, with their sizes.
#   web/build.sh [CHECKPOINT]
#   KILN_DIST=/tmp/page web/build.sh CKPT     # build into another directory (the test suite does), leaving web/dist alone
# CHECKPOINT defaults to runs/convnet4 (the latest checkpoint there); if there is none, convnet4 is trained
# into it first (a couple of minutes). Installs the wasm target and wasm-bindgen-cli (the version Cargo.lock
# pins, under $KILN_TOOLS, default /var/tmp/cargo-tools) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:-runs/convnet4}
out=${KILN_DIST:-web/dist}
tools=${KILN_TOOLS:-/var/tmp/cargo-tools}
target=${CARGO_TARGET_DIR:-target}

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if ! "$tools/bin/wasm-bindgen" --version 2>/dev/null | grep -q " $version\$"; then
  echo "== installing wasm-bindgen-cli $version into $tools (once per machine, a few minutes)"
  cargo install wasm-bindgen-cli --version "$version" --root "$tools"
fi

echo "== the wasm runtime (kiln-web, simd128)"
# Its own target directory, so the wasm flags never invalidate the native build.
RUSTFLAGS="-C target-feature=+simd128" cargo build --release -q -p kiln-web --target wasm32-unknown-unknown \
  --target-dir "$target/wasm-web"
rm -rf "$out"
mkdir -p "$out"
"$tools/bin/wasm-bindgen" --target web --no-typescript --out-dir "$out" \
  "$target/wasm-web/wasm32-unknown-unknown/release/kiln_web.wasm"
cp web/static/* "$out/"

cargo build --release -q -p kiln
kiln="$target/release/kiln"
if [ ! -e "$ckpt" ]; then
  echo "== no checkpoint at $ckpt: training convnet4 into it"
  "$kiln" train --model convnet4 --ckpt-dir "$ckpt" --show-mistakes 0
fi
echo "== models from $ckpt"
"$kiln" web-assets "$ckpt" --out "$out"

# bench.html also runs onnxruntime-web on the same weights exported to ONNX: both are optional extras.
ort=web/tests/node_modules/onnxruntime-web/dist
if [ -d "$ort" ]; then
  mkdir -p "$out/ort"
  cp "$ort/ort.wasm.min.mjs" "$ort/ort-wasm-simd-threaded.mjs" "$ort/ort-wasm-simd-threaded.wasm" "$out/ort/"
else
  echo "note: no onnxruntime-web (npm ci --prefix web/tests): bench.html will measure Kiln alone"
fi
source_file=$ckpt
[ -d "$ckpt" ] && source_file=$(ls -t "$ckpt"/*.safetensors | head -1)
"$kiln" export "$source_file" -o "$out/models/convnet4.onnx" >/dev/null

echo "== download sizes (gzip -9)"
total=0
for f in index.html style.css app.js kiln_web.js kiln_web_bg.wasm models.json models/model-int8.kiln; do
  raw=$(stat -c%s "$out/$f")
  gz=$(gzip -9c "$out/$f" | wc -c)
  total=$((total + gz))
  printf '  %-26s %10d bytes %10d gzipped\n' "$f" "$raw" "$gz"
done
printf '  %-26s %10s       %10d gzipped (the page with its default model)\n' "total" "" "$total"
echo "Built $out. Serve it with: $kiln serve --dir $out"
