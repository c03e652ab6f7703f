// In-browser benchmark: Kiln's wasm path, Kiln's WebGPU path and onnxruntime-web (wasm, 1 thread) on the same
// digit, same page, one after the other. Results land in the table and in `window.benchResults`.
import init, { Classifier, GpuClassifier, simd } from './kiln_web.js';

const params = new URLSearchParams(location.search);
const runs = Number(params.get('runs') ?? 100);
const gpuRuns = Number(params.get('gpu_runs') ?? runs);
const modelFile = params.get('model') ?? 'model-f32.kiln';
// The same weights exported to ONNX (`kiln export`), under models/.
const onnxFile = params.get('onnx') ?? 'convnet4.onnx';
const rows = [];
window.benchResults = null;

function stats(times) {
  const sorted = [...times].sort((a, b) => a - b);
  const at = (q) => sorted[Math.round((sorted.length - 1) * q)];
  return { median: at(0.5), p90: at(0.9), runs: times.length };
}

function show(name, result, cls) {
  rows.push({ name, ...result, class: cls });
  const tr = document.createElement('tr');
  tr.innerHTML = `<td>${name}</td><td>${result.median.toFixed(3)} ms</td><td>${result.p90.toFixed(3)} ms</td><td>${result.runs}</td><td>${cls}</td>`;
  document.querySelector('#results tbody').append(tr);
}

async function time(count, run) {
  for (let i = 0; i < Math.min(10, count); i++) await run(); // warm-up
  const times = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  return stats(times);
}

const argmax = (p) => Array.from(p).indexOf(Math.max(...p));

async function main() {
  await init();
  const digits = await (await fetch('digits.json')).json();
  const digit = Uint8Array.from(atob(digits[0].pixels), (c) => c.charCodeAt(0));
  const bytes = new Uint8Array(await (await fetch(`models/${modelFile}`)).arrayBuffer());
  const cpu = new Classifier(bytes);
  let probs;
  let ort = null;
  let session = null;
  let feeds = null;
  try {
    ort = await import('./ort/ort.wasm.min.mjs');
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
    session = await ort.InferenceSession.create(`models/${onnxFile}`, { executionProviders: ['wasm'] });
    const input = new ort.Tensor('float32', Float32Array.from(digit, (p) => p / 255), [1, 28, 28, 1]);
    feeds = { [session.inputNames[0]]: input };
  } catch (e) {
    document.getElementById('status').textContent = `onnxruntime-web unavailable: ${e.message ?? e}`;
  }
  // Kiln's wasm path and onnxruntime-web alternate run by run, so both see the same machine state.
  let out;
  const kilnTimes = [];
  const ortTimes = [];
  for (let i = 0; i < runs + 10; i++) {
    let t0 = performance.now();
    probs = cpu.classify(digit);
    if (i >= 10) kilnTimes.push(performance.now() - t0);
    if (session) {
      t0 = performance.now();
      out = await session.run(feeds);
      if (i >= 10) ortTimes.push(performance.now() - t0);
    }
  }
  show(`Kiln wasm CPU${simd() ? ' (simd128)' : ''}, ${modelFile}`, stats(kilnTimes), argmax(probs));
  if (session) {
    show(`onnxruntime-web ${ort.env.versions?.common ?? ''} wasm (1 thread), ${onnxFile}`, stats(ortTimes), argmax(out[session.outputNames[0]].data));
  }

  const adapter = 'gpu' in navigator ? await navigator.gpu.requestAdapter() : null;
  if (adapter && gpuRuns > 0) {
    try {
      const gpu = await GpuClassifier.create(bytes);
      const kilnGpu = await time(gpuRuns, async () => { probs = await gpu.classify(digit); });
      const info = adapter.info ?? {};
      show(`Kiln WebGPU (${[info.vendor, info.architecture].filter(Boolean).join(' ') || 'adapter'}), ${modelFile}`, kilnGpu, argmax(probs));
    } catch (e) {
      document.getElementById('status').textContent = `WebGPU failed: ${e.message ?? e}`;
    }
  }
  const kiln = rows[0].median;
  const ortRow = rows.find((r) => r.name.startsWith('onnxruntime'));
  window.benchResults = { rows, ratio: ortRow ? kiln / ortRow.median : null };
  if (ortRow) document.getElementById('status').textContent = `Kiln wasm ÷ onnxruntime-web wasm: ${(kiln / ortRow.median).toFixed(2)}`;
}

main().catch((e) => {
  document.getElementById('status').textContent = `failed: ${e.message ?? e}`;
  window.benchResults = { error: String(e) };
});
