// Runs Kiln's C API compiled to wasm32 (kiln-capi) in Node on raw 28x28 digits and prints, as JSON, each
// digit's class and probabilities.
//   node classify.mjs KILN.wasm MODEL.kiln DIGITS.bin COUNT
// DIGITS.bin holds COUNT × 784 bytes. Memory for the model, arena and buffers is taken by growing the wasm
// memory directly: those pages are never handed to Rust's allocator, which only grows memory further.
import { readFileSync } from 'node:fs';

const [wasmPath, modelPath, digitsPath, countArg] = process.argv.slice(2);
const count = Number(countArg);
const { instance } = await WebAssembly.instantiate(readFileSync(wasmPath), {});
const k = instance.exports;
const memory = k.memory;

function reserve(bytes) {
  const base = memory.grow(Math.ceil(bytes / 65536)) * 65536;
  return base; // page-aligned, so 4-aligned for the arena
}
function check(status, what) {
  if (status !== 0) {
    const ptr = k.kiln_last_error();
    const bytes = new Uint8Array(memory.buffer, ptr);
    const message = new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(0)));
    throw new Error(`${what} failed with status ${status}: ${message}`);
  }
}

const model = readFileSync(modelPath);
const modelAt = reserve(model.length);
new Uint8Array(memory.buffer, modelAt, model.length).set(model);
const handleAt = reserve(8);
check(k.kiln_model_open(modelAt, model.length, handleAt), 'kiln_model_open');
const modelHandle = new Uint32Array(memory.buffer, handleAt, 1)[0];
const inputLen = k.kiln_input_len(modelHandle);
const classes = k.kiln_classes(modelHandle);
const arenaLen = k.kiln_arena_size(modelHandle, 1);
const arenaAt = reserve(arenaLen);
check(k.kiln_session_new(modelHandle, arenaAt, arenaLen, 1, handleAt), 'kiln_session_new');
const session = new Uint32Array(memory.buffer, handleAt, 1)[0];

const digits = readFileSync(digitsPath);
if (digits.length < count * inputLen) throw new Error(`${digitsPath} holds fewer than ${count} digits`);
const pixelsAt = reserve(inputLen);
const probsAt = reserve(4 * classes);
const results = [];
const started = performance.now();
for (let i = 0; i < count; i++) {
  new Uint8Array(memory.buffer, pixelsAt, inputLen).set(digits.subarray(i * inputLen, (i + 1) * inputLen));
  check(k.kiln_run_pixels(session, pixelsAt, inputLen, 1, probsAt, classes), `digit ${i}`);
  const probs = Array.from(new Float32Array(memory.buffer, probsAt, classes));
  results.push({ class: probs.indexOf(Math.max(...probs)), probabilities: probs });
}
const ms = (performance.now() - started) / count;
console.log(JSON.stringify({ ms_per_digit: ms, results }));
