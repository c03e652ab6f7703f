#!/usr/bin/env bash
# Builds the example for thumbv7em-none-eabihf and reports the flash and RAM it needs, from the ELF's
# section headers. Run from anywhere; CI runs it.
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed | grep -qx thumbv7em-none-eabihf || rustup target add thumbv7em-none-eabihf
cargo build --release --quiet
target_dir=${CARGO_TARGET_DIR:-target}
elf="$target_dir/thumbv7em-none-eabihf/release/kiln-embedded-example"
readelf -S --wide "$elf" | python3 -c '
import re, sys
size = {}
for line in sys.stdin:
    m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)", line)
    if m:
        size[m.group(1)] = int(m.group(2), 16)
flash = sum(size.get(s, 0) for s in (".vector_table", ".text", ".rodata", ".data"))
ram = sum(size.get(s, 0) for s in (".data", ".bss", ".uninit"))
text, rodata = size.get(".text", 0), size.get(".rodata", 0)
print(f"flash: {flash:,} bytes (code {text:,}, read-only data incl. the model {rodata:,})")
print(f"RAM:   {ram:,} bytes static (the arena) + the stack (the integer kernels keep a 64 KiB packed-weight panel and a 16 KiB staging panel on it)")
'
