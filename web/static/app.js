// The demo page: draw a digit, see the probabilities. The model runs on WebGPU where the browser has an
// adapter (kiln-gpu's shaders), else in wasm on the CPU (kiln-core, simd128); preprocessing is the same Rust
// function `kiln predict` uses. `window.kiln` exposes the last prediction for the browser tests.
import init, { Classifier, GpuClassifier, preprocess, simd } from './kiln_web.js';

const $ = (id) => document.getElementById(id);
const SIDE = 280;
const state = { classifier: null, gpu: null, entry: null, pending: false, running: null, again: false, wantGpu: false };
const kiln = (window.kiln = { ready: false, last: null, backend: null, model: null, error: null });
// Resolves once no prediction is running (GPU predictions finish asynchronously).
kiln.settled = async () => {
  while (state.running || state.pending) await (state.running ?? new Promise((r) => requestAnimationFrame(r)));
};

function setBackend(text) {
  kiln.backend = text;
  $('backend').textContent = text;
}

function cpuBackend() {
  return simd() ? 'wasm CPU (simd128)' : 'wasm CPU';
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
  kiln.error = message;
}

function clearError() {
  $('error').hidden = true;
  kiln.error = null;
}

function formatBytes(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : `${(n / 1e3).toFixed(0)} KB`;
}

function describe(entry) {
  const accuracy = entry.accuracy == null ? 'accuracy not measured' : `test accuracy ${(100 * entry.accuracy).toFixed(2)} %`;
  return `${entry.name} ${entry.quantization} — ${formatBytes(entry.bytes)}, ${accuracy}`;
}

// Downloads with a progress bar; fails with a message naming the file and the HTTP status.
async function download(url, onProgress) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`.trim());
  const total = Number(response.headers.get('content-length')) || 0;
  if (!response.body) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    onProgress(received, total);
  }
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}

async function selectModel(entry) {
  const bar = $('download');
  bar.hidden = false;
  bar.value = 0;
  $('status').textContent = `Downloading ${entry.file}…`;
  try {
    const bytes = await download(`models/${entry.file}`, (got, total) => {
      bar.value = total ? got / total : 0;
    });
    const classifier = new Classifier(bytes);
    let gpu = null;
    let backend = cpuBackend();
    if (state.wantGpu) {
      try {
        gpu = await GpuClassifier.create(bytes);
        backend = `WebGPU: ${state.adapterName || gpu.adapter() || 'adapter'}`;
      } catch (e) {
        backend = `${cpuBackend()} (WebGPU failed: ${e.message ?? e})`;
      }
    }
    await kiln.settled();
    state.classifier?.free();
    state.gpu?.free();
    state.classifier = classifier;
    state.gpu = gpu;
    state.entry = entry;
    setBackend(backend);
    kiln.model = entry.file;
    clearError();
    $('model-info').textContent = `${classifier.name()} (${classifier.quantization()}), ${formatBytes(classifier.size())}, ` +
      `${classifier.accuracy() == null ? 'no accuracy recorded' : `${(100 * classifier.accuracy()).toFixed(2)} % on the MNIST test set when packed`}, ` +
      `${formatBytes(classifier.arena_bytes())} of working memory`;
    $('status').textContent = 'Ready: draw a digit.';
    predict();
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    showError(`Could not load the model “${describe(entry)}”: ${message}. The other models can still be picked.`);
    $('status').textContent = state.classifier ? `Still using ${state.entry.file}.` : 'No model loaded.';
    if (state.entry) $('model').value = state.entry.file;
  } finally {
    bar.hidden = true;
    kiln.ready = true;
  }
}

// Drawing: mouse, pen and touch through pointer events.
const pad = $('pad');
const ctx = pad.getContext('2d', { willReadFrequently: true });
function clearPad() {
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, SIDE, SIDE);
  predict();
}
ctx.lineCap = 'round';
ctx.lineJoin = 'round';
let drawing = false;
function at(event) {
  const r = pad.getBoundingClientRect();
  return [((event.clientX - r.left) * SIDE) / r.width, ((event.clientY - r.top) * SIDE) / r.height];
}
pad.addEventListener('pointerdown', (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = at(event);
  ctx.strokeStyle = '#000';
  ctx.lineWidth = 18;
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x + 0.1, y + 0.1);
  ctx.stroke();
  schedule();
});
pad.addEventListener('pointermove', (event) => {
  if (!drawing) return;
  const [x, y] = at(event);
  ctx.lineTo(x, y);
  ctx.stroke();
  schedule();
});
for (const name of ['pointerup', 'pointercancel']) {
  pad.addEventListener(name, () => {
    drawing = false;
    schedule();
  });
}
$('clear').addEventListener('click', clearPad);

function schedule() {
  if (state.pending) return;
  state.pending = true;
  requestAnimationFrame(() => {
    state.pending = false;
    predict();
  });
}

// Bars, one per class.
const bars = [];
for (let c = 0; c < 10; c++) {
  const li = document.createElement('li');
  li.innerHTML = `<span>${c}</span><span class="bar"><span class="fill"></span></span><span class="pct">–</span>`;
  $('bars').append(li);
  bars.push(li);
}

function render(digit, probabilities, ms) {
  const preview = $('preview').getContext('2d');
  const image = preview.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = digit ? digit[i] : 0;
    image.data.set([v, v, v, 255], 4 * i);
  }
  preview.putImageData(image, 0, 0);
  let best = -1;
  if (probabilities) best = probabilities.indexOf(Math.max(...probabilities));
  bars.forEach((li, c) => {
    const p = probabilities ? probabilities[c] : 0;
    li.querySelector('.fill').style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector('.pct').textContent = probabilities ? `${(100 * p).toFixed(1)}%` : '–';
    li.classList.toggle('top', c === best);
  });
  $('answer').textContent = best >= 0 ? String(best) : '–';
  $('confidence').textContent = best >= 0 ? `${(100 * probabilities[best]).toFixed(1)} %` : '';
  $('latency').textContent = ms == null ? '–' : `${ms.toFixed(2)} ms`;
}

function predict() {
  if (!state.classifier) return;
  if (state.running) {
    state.again = true;
    return;
  }
  const rgba = ctx.getImageData(0, 0, SIDE, SIDE).data;
  const gray = new Uint8Array(SIDE * SIDE);
  for (let i = 0; i < gray.length; i++) gray[i] = rgba[4 * i];
  const started = performance.now();
  const digit = preprocess(gray, SIDE, SIDE);
  if (!digit) {
    // An empty canvas: no prediction, and no error.
    render(null, null, null);
    kiln.last = null;
    return;
  }
  const finish = (probabilities) => {
    const ms = performance.now() - started;
    render(digit, probabilities, ms);
    const best = probabilities.indexOf(Math.max(...probabilities));
    kiln.last = { input: Array.from(digit), probabilities, class: best, ms, model: state.entry.file, backend: kiln.backend };
  };
  if (!state.gpu) {
    finish(Array.from(state.classifier.classify(digit)));
    return;
  }
  state.running = state.gpu
    .classify(digit)
    .then((p) => finish(Array.from(p)))
    .catch((e) => {
      // Device lost or a shader failure: carry on in wasm, and say so.
      state.gpu = null;
      setBackend(`${cpuBackend()} (WebGPU stopped: ${e.message ?? e})`);
      finish(Array.from(state.classifier.classify(digit)));
    })
    .finally(() => {
      state.running = null;
      if (state.again) {
        state.again = false;
        predict();
      }
    });
}

// Shows a 28x28 test digit on the pad (scaled up, anti-aliased) and predicts from the pad, as if drawn.
function showDigit(pixels) {
  const small = document.createElement('canvas');
  small.width = small.height = 28;
  const image = small.getContext('2d').createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = 255 - pixels[i];
    image.data.set([v, v, v, 255], 4 * i);
  }
  small.getContext('2d').putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(small, 0, 0, SIDE, SIDE);
  predict();
}
kiln.showDigit = showDigit;
kiln.clear = clearPad;

function decode(base64) {
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

async function main() {
  await init();
  setBackend(cpuBackend());
  const forced = new URLSearchParams(location.search).get('backend') === 'wasm';
  try {
    const adapter = !forced && 'gpu' in navigator ? await navigator.gpu.requestAdapter() : null;
    state.wantGpu = adapter !== null;
    // Browsers hide the adapter's name; its vendor and architecture are what they tell.
    const info = adapter?.info ?? {};
    state.adapterName = info.description || [info.vendor, info.architecture].filter(Boolean).join(' ');
  } catch {
    state.wantGpu = false;
  }
  clearPad();
  let models = [];
  try {
    const response = await fetch('models.json');
    if (!response.ok) throw new Error(`models.json: HTTP ${response.status}`);
    models = await response.json();
  } catch (e) {
    showError(`Could not read the model list: ${e.message}`);
    kiln.ready = true;
    return;
  }
  for (const entry of models) {
    const option = document.createElement('option');
    option.value = entry.file;
    option.textContent = describe(entry);
    $('model').append(option);
  }
  $('model').addEventListener('change', () => selectModel(models.find((m) => m.file === $('model').value)));
  const wanted = new URLSearchParams(location.search).get('model');
  const first = models.find((m) => m.file === wanted) ?? models.find((m) => m.default) ?? models[0];
  $('model').value = first.file;
  fetch('digits.json')
    .then((r) => (r.ok ? r.json() : []))
    .then((digits) => {
      for (const d of digits) {
        const button = document.createElement('button');
        button.type = 'button';
        button.title = `test digit #${d.index}: label ${d.label}, ${first.name} ${first.quantization} says ${d.predicted}`;
        if (d.predicted !== d.label) button.classList.add('wrong');
        const canvas = document.createElement('canvas');
        canvas.width = canvas.height = 28;
        const image = canvas.getContext('2d').createImageData(28, 28);
        const pixels = decode(d.pixels);
        for (let i = 0; i < 784; i++) image.data.set([pixels[i], pixels[i], pixels[i], 255], 4 * i);
        canvas.getContext('2d').putImageData(image, 0, 0);
        button.append(canvas);
        button.addEventListener('click', () => showDigit(pixels));
        $('digits').append(button);
      }
    })
    .catch(() => {});
  await selectModel(first);
  if ('serviceWorker' in navigator && location.protocol.startsWith('http')) {
    navigator.serviceWorker.register('sw.js').catch(() => {});
  }
}

main().catch((e) => {
  showError(`The page could not start: ${e.message ?? e}`);
  kiln.ready = true;
});
