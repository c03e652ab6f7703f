#!/usr/bin/env bash
# Kiln's CPU runtime against its peers on the same weights, interleaved, in one go on one machine:
# ONNX Runtime (f32, dynamic int8, static QDQ int8), LiteRT with XNNPACK (f32, dynamic-range int8, full int8) and
# tract (f32, one thread), the ONNX file coming from `kiln export`.
#   tools/bench_infer_peers.sh WEIGHTS_OR_CHECKPOINT [ROUNDS]
#   KILN=/path/to/kiln tools/bench_infer_peers.sh runs/vgg 3     # use that binary, build nothing
# WEIGHTS_OR_CHECKPOINT is anything `kiln convert` takes (a weights file, a checkpoint, a checkpoint directory).
# Without KILN it builds ${CARGO_TARGET_DIR:-target}/release/kiln with cargo. RUNS (default 200) sets the
# batch-1 runs per measurement. Packs f32, int8, int4 and mixed, makes the peer models once
# (tools/peers.py make, which also checks them against ORT f32), then for each of ROUNDS rounds (default 2)
# and 1 and 2 threads runs `tools/peers.py bench --threads T` and `kiln bench infer --threads T` on each
# packed model (with 2, kiln times batch 1 on 1 and on 2 threads, interleaved), and ends with a table of
# medians over the rounds.
# Needs: pip install onnxruntime onnx safetensors numpy tensorflow-cpu ai-edge-litert.
set -euo pipefail
src=$(realpath "${1:?usage: tools/bench_infer_peers.sh WEIGHTS_OR_CHECKPOINT [ROUNDS]}")
rounds=${2:-2}
runs=${RUNS:-200}
if [ -n "${KILN:-}" ]; then kiln=$(realpath "$KILN"); fi
cd "$(dirname "$0")/.."
if [ -z "${KILN:-}" ]; then
  cargo build --release -q -p kiln
  kiln=${CARGO_TARGET_DIR:-target}/release/kiln
fi
out=$(mktemp -d /tmp/kiln-peers.XXXXXX)
trap 'rm -rf "$out"' EXIT

lscpu | grep -E "Model name|^CPU\(s\)" || true
echo "kiln: $kiln; $(python3 -c 'import onnxruntime as o, ai_edge_litert as l; print(f"onnxruntime {o.__version__}, ai-edge-litert {l.__version__}")' 2>/dev/null || echo 'peers not importable')"
for q in f32 int8 int4 mixed; do
  "$kiln" convert "$src" -o "$out/model-$q.kiln" --quant "$q" --no-eval >/dev/null
done
# int8 with static activation scales (calibrated on the bundled training images).
"$kiln" convert "$src" -o "$out/model-int8s.kiln" --quant int8 --activations static --no-eval >/dev/null
file=$("$kiln" convert "$src" -o "$out/probe.kiln" --quant f32 --no-eval | sed -n 's/^Packed .* from \(.*\) in .*/\1/p')
echo "weights: $file"
if ! KILN="$kiln" python3 tools/peers.py make "$file" "$out/peers" >"$out/make.log" 2>&1; then
  cat "$out/make.log"
  exit 1
fi
grep -E "MFLOP per image|^check|^  .* max abs diff" "$out/make.log"

for r in $(seq "$rounds"); do
  for t in 1 2; do
    echo "== round $r, threads $t (load average $(cut -d" " -f1-3 /proc/loadavg))"
    python3 tools/peers.py bench "$out/peers" --threads "$t" --runs "$runs" 2>/dev/null
    # tract (pure Rust, one thread) on the same ONNX file ORT runs.
    [ "$t" = 1 ] && "$kiln" bench infer "$out/peers/model.onnx" --runs "$runs"
    for q in f32 int8 int8s int4 mixed; do
      "$kiln" bench infer "$out/model-$q.kiln" --threads "$t" --runs "$runs"
    done
  done
done | tee "$out/log"

python3 - "$out/log" <<'EOF'
import re, statistics, sys
rows, name = {}, None
row = lambda t: rows.setdefault((name, t), {"lat": [], "p90": [], "ips": []})
for line in open(sys.argv[1]):
    if m := re.match(r"\S+ \(([^)]+)\), [\d,]+ bytes", line):
        name = m[1].split(":")[0]
    elif m := re.match(r"batch 1, (\d+) threads?: .*median ([\d.]+) ms, p90 ([\d.]+) ms", line):
        row(int(m[1]))["lat"].append(float(m[2])); row(int(m[1]))["p90"].append(float(m[3]))
    elif m := re.match(r"batch \d+, (\d+) threads?: ([\d.]+) images/s", line):
        row(int(m[1]))["ips"].append(float(m[2]))
med = {k: {s: statistics.median(v) for s, v in r.items() if v} for k, r in rows.items()}
rounds = max(len(r["lat"]) for r in rows.values())
peer_int8 = ["ort-int8-dynamic", "ort-int8-qdq", "litert-int8-dynamic", "litert-int8-full"]
is_peer = lambda n: n.startswith(("ort", "litert", "tract"))
print(f"\n== summary: medians of {rounds} round(s); kiln's batch 1 on T threads is one session cutting each integer"
      " layer into T parts, its batch 64 with T threads is T sessions; a peer runs one session with T intra-op threads")
print(f"{'model':<22}{'threads':>8}{'b1 median ms':>14}{'b1 p90 ms':>11}{'b64 img/s':>11}")
for (name, t), r in sorted(med.items(), key=lambda kv: (kv[0][1], not is_peer(kv[0][0]), kv[0][0])):
    ips = f"{r['ips']:>11.1f}" if "ips" in r else f"{'-':>11}"
    print(f"{('kiln-' if not is_peer(name) else '') + name:<22}{t:>8}{r['lat']:>14.3f}{r['p90']:>11.3f}{ips}")
print("\nratios kiln / peer: latency below 1 and throughput above 1 mean Kiln is faster")
for t in sorted({t for _, t in med}):
    got = {n: r for (n, tt), r in med.items() if tt == t}
    peers = [n for n in peer_int8 if n in got]
    for kiln_int8 in ["int8", "int8, static activations"]:
        if kiln_int8 in got and peers:
            bl = min(peers, key=lambda n: got[n]["lat"]); bt = max(peers, key=lambda n: got[n]["ips"])
            print(f"{t} thread(s): kiln {kiln_int8} b1 latency {got[kiln_int8]['lat'] / got[bl]['lat']:.2f}x best peer "
                  f"int8 ({bl}), b64 throughput {got[kiln_int8]['ips'] / got[bt]['ips']:.2f}x best peer int8 ({bt})")
    if "f32" in got and "ort-f32" in got:
        print(f"{t} thread(s): kiln f32 b1 latency {got['f32']['lat'] / got['ort-f32']['lat']:.2f}x ORT f32, "
              f"b64 throughput {got['f32']['ips'] / got['ort-f32']['ips']:.2f}x ORT f32")
    if "f32" in got and "tract-f32" in got:
        print(f"{t} thread(s): kiln f32 b1 latency {got['f32']['lat'] / got['tract-f32']['lat']:.2f}x tract f32, "
              f"b64 throughput {got['f32']['ips'] / got['tract-f32']['ips']:.2f}x tract f32; kiln int8 b1 latency "
              f"{got['int8']['lat'] / got['tract-f32']['lat']:.2f}x tract f32")
EOF
