#!/usr/bin/env bash
# The whole test suite: unit, gradient-check, parity and end-to-end CLI tests, plus kiln-core's
# no_std cross builds. Installs the Rust targets it needs. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

for target in wasm32-unknown-unknown thumbv7em-none-eabihf; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
done

# The checkpoint interop test reads files with Python's safetensors package.
# (Debian's own python3 refuses plain pip installs; the second form is for it.)
python3 -c 'import safetensors, numpy' 2>/dev/null ||
  python3 -m pip install --quiet safetensors numpy ||
  python3 -m pip install --quiet --break-system-packages safetensors numpy

# The C API test runs its C program under valgrind and builds it through pkg-config; the wasm test runs
# the runtime in Node; the GPU tests run on Mesa's CPU Vulkan driver (lavapipe) when the machine has no GPU;
# the browser tests drive Chromium.
for pair in valgrind:valgrind pkg-config:pkgconf node:nodejs npm:npm chromium:chromium \
  /usr/share/vulkan/icd.d/lvp_icd.x86_64.json:mesa-vulkan-drivers /usr/lib/x86_64-linux-gnu/libvulkan.so.1:libvulkan1; do
  tool=${pair%%:*} package=${pair##*:}
  if [[ $tool == /* ]]; then [ -e "$tool" ] && continue; else command -v "$tool" >/dev/null && continue; fi
  if [ "$(id -u)" = 0 ]; then
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" ||
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package")) >/dev/null
  else
    echo "note: $tool is missing (sudo apt-get install $package); the tests that need it will say so" >&2
  fi
done

echo "== kiln-core builds for wasm32 and bare-metal Arm (no_std, no alloc)"
cargo build -p kiln-core --target wasm32-unknown-unknown --release
# The browser's CPU path: the same kernels vectorized for wasm simd128.
RUSTFLAGS="-C target-feature=+simd128" cargo build -p kiln-core --target wasm32-unknown-unknown --release
cargo build -p kiln-core --target thumbv7em-none-eabihf --release
cargo build -p kiln-core --target thumbv7em-none-eabihf --release --features serde

echo "== tests"
cargo test --workspace --release

# The browser demo: build the page (wasm-bindgen-cli is installed by web/build.sh) with models packed from a
# quickly trained ConvNet4, then the Playwright suite in Chromium on both paths (WebGPU and wasm).
echo "== browser tests"
target=${CARGO_TARGET_DIR:-target}
# The page is built in a temporary directory: web/dist is the user's demo, and the suite must leave it as it was.
ckpt=$(mktemp -d /tmp/kiln-web-ckpt.XXXXXX)
page=$(mktemp -d /tmp/kiln-web-page.XXXXXX)
demo_before=$( (find web/dist -type f -printf '%P %s %T@\n' 2>/dev/null || true) | sort | sha256sum)
cargo run --release -q -p kiln -- train --model convnet4 --steps 200 --device cpu --ckpt-dir "$ckpt" --show-mistakes 0 >/dev/null
KILN_DIST="$page" web/build.sh "$ckpt"
rm -rf "$ckpt"
# onnxruntime-web (139 MB, for bench.html only) is optional: the tests do not need it.
[ -d web/tests/node_modules/playwright-core ] || npm ci --prefix web/tests --omit=optional --no-audit --no-fund
KILN_DIST="$page" npm test --prefix web/tests
rm -rf "$page"
demo_after=$( (find web/dist -type f -printf '%P %s %T@\n' 2>/dev/null || true) | sort | sha256sum)
if [ "$demo_before" != "$demo_after" ]; then
  echo "error: the test suite changed web/dist (the user's demo page)" >&2
  exit 1
fi
