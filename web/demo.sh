#!/usr/bin/env bash
# The main job, end to end: train ConvNet4 on the bundled digits (or reuse the latest checkpoint in
# runs/convnet4), pack it four ways with the accuracy of each measured, build the browser demo, and serve it.
#   web/demo.sh [PORT]     (default 8080; open the URL it prints)
set -euo pipefail
cd "$(dirname "$0")/.."
web/build.sh runs/convnet4
exec "${CARGO_TARGET_DIR:-target}/release/kiln" serve --dir web/dist --port "${1:-8080}"
