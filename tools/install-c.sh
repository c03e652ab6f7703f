#!/usr/bin/env bash
# Installs Kiln's C library under PREFIX (default /usr/local): lib/libkiln.a, lib/libkiln.so,
# include/kiln.h and lib/pkgconfig/kiln.pc, so that a C program builds with
#   cc app.c $(pkg-config --cflags --libs kiln)                       # against libkiln.so
#   cc app.c $(pkg-config --cflags kiln) PREFIX/lib/libkiln.a $(pkg-config --variable=static_libs kiln)
# (with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig when PREFIX is not where pkg-config looks).
#   tools/install-c.sh [PREFIX]
# It builds crates/kiln-capi in release with cargo (honouring CARGO_TARGET_DIR). This is what cargo-c's
# `cargo cinstall` does, without installing cargo-c.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-/usr/local}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
cd "$repo"
cargo build --release -q -p kiln-capi
target=${CARGO_TARGET_DIR:-$repo/target}/release
version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
for file in "$target/libkiln.a" "$target/libkiln.so" crates/kiln-capi/include/kiln.h; do
  [ -f "$file" ] || { echo "error: $file was not built" >&2; exit 1; }
done
libdir=$prefix/lib includedir=$prefix/include
install -d "$libdir/pkgconfig" "$includedir"
install -m 644 "$target/libkiln.a" "$libdir/libkiln.a"
install -m 755 "$target/libkiln.so" "$libdir/libkiln.so"
install -m 644 crates/kiln-capi/include/kiln.h "$includedir/kiln.h"
# The release profile keeps debug info (for profiling); installed copies do without it.
if command -v strip >/dev/null; then strip --strip-debug "$libdir/libkiln.a" "$libdir/libkiln.so"; fi
# The static library needs what Rust's standard library links against (rustc's `native-static-libs`).
cat >"$libdir/pkgconfig/kiln.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include
static_libs=-lpthread -ldl -lm

Name: kiln
Description: Kiln's embeddable runtime for small image classifiers (.kiln models), C API
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lkiln
Libs.private: -lpthread -ldl -lm
PC
echo "Installed libkiln $version under $prefix (lib/libkiln.a, lib/libkiln.so, include/kiln.h, lib/pkgconfig/kiln.pc)"
