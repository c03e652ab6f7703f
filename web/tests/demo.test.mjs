// Browser tests of the demo page (built by web/build.sh; tools/test.sh builds it in a temporary KILN_DIST), served by `kiln serve`, in Debian's
// Chromium driven by playwright-core. Both paths: with --enable-unsafe-webgpu (Chromium offers a SwiftShader
// WebGPU adapter) and without (no adapter). Digits are drawn as mouse strokes traced from real test digits,
// and must be classified as their labels; for them and ≥ 20 real test digits shown on the pad, the pad is
// exported as a PNG and the page's class and probabilities must equal native `kiln predict` on that file
// (the preprocessing included, not only the network).
//
// Environment: KILN_BIN (the kiln binary; default target/release/kiln), KILN_DIST (default web/dist),
// KILN_ARTIFACTS (where the screenshots go; default web/tests/artifacts), CHROMIUM (default /usr/bin/chromium).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const kilnBin = process.env.KILN_BIN ?? resolve(root, process.env.CARGO_TARGET_DIR ?? 'target', 'release/kiln');
const dist = resolve(root, process.env.KILN_DIST ?? 'web/dist');
const artifacts = resolve(root, process.env.KILN_ARTIFACTS ?? 'web/tests/artifacts');
const browserPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const BASE_ARGS = [
  '--headless=new', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

let server;
let base;
const scratch = mkdtempSync(join(tmpdir(), 'kiln-web-test-'));

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  server = spawn(kilnBin, ['serve', '--dir', dist, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  base = await new Promise((ok, fail) => {
    let text = '';
    server.stdout.on('data', (chunk) => {
      text += chunk;
      const match = text.match(/at (http:\/\/127\.0\.0\.1:\d+\/)/);
      if (match) ok(match[1]);
    });
    server.on('exit', (code) => fail(new Error(`kiln serve exited with ${code}: ${text}`)));
  });
});

after(() => {
  server?.kill();
  rmSync(scratch, { recursive: true, force: true });
});

async function launch(webgpu) {
  const profile = mkdtempSync(join(scratch, 'profile-'));
  return chromium.launchPersistentContext(profile, {
    executablePath: browserPath,
    headless: true,
    ignoreDefaultArgs: ['--headless'],
    args: webgpu ? [...BASE_ARGS, '--enable-unsafe-webgpu'] : BASE_ARGS,
    viewport: { width: 1000, height: 900 },
  });
}

async function open(context, query = '') {
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(base + query);
  await page.waitForFunction(() => window.kiln?.ready === true, null, { timeout: 120_000 });
  return { page, errors };
}

// The pad as a PNG file, exactly as the page classified it: what a user would save and give `kiln predict`.
async function savePad(page, file) {
  const url = await page.evaluate(() => document.getElementById('pad').toDataURL('image/png'));
  writeFileSync(file, Buffer.from(url.slice(url.indexOf(',') + 1), 'base64'));
  return file;
}

// Native predictions on image files: `kiln predict` with its own preprocessing.
function nativePredictions(model, files) {
  const text = execFileSync(kilnBin, ['predict', join(dist, 'models', model), ...files], { encoding: 'utf8' });
  return text.trim().split('\n').map((line) => {
    const [, rest] = line.split(': ');
    const probabilities = rest.trim().split(/\s+/).slice(3).map((kv) => Number(kv.split(':')[1]));
    return { class: Number(rest.trim().split(' ')[0]), probabilities };
  });
}

// Traces a 28x28 digit (ink bright) as mouse strokes over the 280x280 pad: one stroke per run of ink in each row.
async function drawDigit(page, pixels) {
  const box = await page.locator('#pad').boundingBox();
  const scale = box.width / 28;
  for (let y = 0; y < 28; y++) {
    let x = 0;
    while (x < 28) {
      if (pixels[y * 28 + x] < 128) {
        x++;
        continue;
      }
      const start = x;
      while (x < 28 && pixels[y * 28 + x] >= 128) x++;
      const py = box.y + (y + 0.5) * scale;
      await page.mouse.move(box.x + (start + 0.5) * scale, py);
      await page.mouse.down();
      await page.mouse.move(box.x + (x - 0.5) * scale, py, { steps: 2 });
      await page.mouse.up();
    }
  }
  await page.waitForTimeout(50);
}

function decode(base64) {
  return Uint8Array.from(Buffer.from(base64, 'base64'));
}

for (const webgpu of [false, true]) {
  const path = webgpu ? 'with the WebGPU flag' : 'forced wasm (no WebGPU adapter)';
  test(`${path}: drawn digits and ≥ 20 real test digits match native kiln predict`, async () => {
    const context = await launch(webgpu);
    try {
      const { page, errors } = await open(context, webgpu ? '' : '?backend=wasm');
      const backend = await page.locator('#backend').textContent();
      assert.match(backend, webgpu ? /^WebGPU: / : /^wasm CPU/);
      const adapter = await page.evaluate(async () => !!(navigator.gpu && (await navigator.gpu.requestAdapter())));
      assert.equal(adapter, webgpu, 'Chromium offers a WebGPU adapter exactly when the flag is on');
      const model = await page.evaluate(() => window.kiln.model);

      // An empty pad: no prediction, no error.
      assert.equal(await page.evaluate(() => window.kiln.last), null);
      assert.equal(await page.locator('#error').isHidden(), true);

      // Real digits drawn as strokes (ones the model classifies right as test images): each must come out as
      // its label.
      const digits = JSON.parse(readFileSync(join(dist, 'digits.json'), 'utf8'));
      const seen = [];
      const files = [];
      const tag = webgpu ? 'webgpu' : 'wasm';
      for (const d of digits.filter((d) => d.predicted === d.label).slice(0, 4)) {
        await page.evaluate(() => window.kiln.clear());
        await drawDigit(page, decode(d.pixels));
        await page.evaluate(() => window.kiln.settled());
        const last = await page.evaluate(() => window.kiln.last);
        assert.ok(last, 'a prediction after drawing');
        assert.equal(last.class, d.label, `drawn test digit #${d.index} (label ${d.label}): the page says ${last.class}`);
        seen.push(last);
        files.push(await savePad(page, join(scratch, `${tag}-drawn-${seen.length}.png`)));
      }
      await page.screenshot({ path: join(artifacts, webgpu ? 'demo-webgpu-flag.png' : 'demo-wasm.png') });

      // The row of real test digits: click each, record what the network saw and said.
      const buttons = page.locator('#digits button');
      const count = await buttons.count();
      assert.ok(count >= 20, `${count} digits on the page`);
      for (let i = 0; i < count; i++) {
        await buttons.nth(i).click();
        await page.evaluate(() => window.kiln.settled());
        seen.push(await page.evaluate(() => window.kiln.last));
        files.push(await savePad(page, join(scratch, `${tag}-shown-${i}.png`)));
      }
      const wrongShown = await page.locator('#digits button.wrong').count();
      assert.ok(wrongShown >= 1, 'the row includes digits the network gets wrong');

      // The same pads as PNG files through `kiln predict`: the page's preprocessing and network agree with
      // the native ones.
      const native = nativePredictions(model, files);
      assert.equal(native.length, seen.length);
      // The wasm path runs the same integer kernels as native (bit-identical logits); WebGPU runs the int8
      // weights in f32 (no 8-bit activations), so its probabilities differ by the activations' rounding.
      const tolerance = webgpu ? 3e-2 : 2e-3;
      seen.forEach((s, i) => {
        assert.equal(s.class, native[i].class, `digit ${i}: page says ${s.class}, kiln predict says ${native[i].class}`);
        s.probabilities.forEach((p, c) => assert.ok(Math.abs(p - native[i].probabilities[c]) < tolerance, `digit ${i} class ${c}: ${p} vs ${native[i].probabilities[c]}`));
      });
      const latency = await page.locator('#latency').textContent();
      assert.match(latency, /ms$/);
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  });
}

test('a missing or truncated model shows a clear message and the other models still work', async () => {
  const context = await launch(false);
  try {
    const models = JSON.parse(readFileSync(join(dist, 'models.json'), 'utf8'));
    assert.ok(models.length >= 3, 'at least three models to pick from');
    const [first, missing, truncated] = models;
    const bytes = readFileSync(join(dist, 'models', truncated.file));
    await context.route(`**/models/${missing.file}`, (route) => route.fulfill({ status: 404, body: 'not found' }));
    await context.route(`**/models/${truncated.file}`, (route) =>
      route.fulfill({ status: 200, body: bytes.subarray(0, bytes.length >> 1), contentType: 'application/octet-stream' }));
    const { page } = await open(context, '?backend=wasm');

    await page.selectOption('#model', missing.file);
    await page.waitForFunction(() => window.kiln.error !== null);
    let message = await page.locator('#error').textContent();
    assert.match(message, /404/);
    assert.ok(message.includes(missing.quantization), message);
    assert.equal(await page.locator('#error').isVisible(), true);

    await page.selectOption('#model', truncated.file);
    await page.waitForFunction((m) => window.kiln.error !== null && window.kiln.error !== m, message);
    message = await page.locator('#error').textContent();
    assert.match(message, /not a usable Kiln model/);
    await page.screenshot({ path: join(artifacts, 'demo-error.png') });

    // Still usable: the first model answers, and picking it again clears the message.
    await page.selectOption('#model', first.file);
    await page.waitForFunction(() => window.kiln.error === null);
    await page.locator('#digits button').first().click();
    await page.evaluate(() => window.kiln.settled());
    assert.ok(await page.evaluate(() => window.kiln.last?.class >= 0));
  } finally {
    await context.close();
  }
});

test('the page keeps working offline once loaded', async () => {
  const context = await launch(false);
  try {
    const { page } = await open(context, '?backend=wasm');
    await page.evaluate(() => navigator.serviceWorker.ready);
    await page.reload();
    await page.waitForFunction(() => window.kiln?.ready === true);
    await context.setOffline(true);
    await page.reload();
    await page.waitForFunction(() => window.kiln?.ready === true, null, { timeout: 60_000 });
    await page.locator('#digits button').first().click();
    await page.evaluate(() => window.kiln.settled());
    assert.ok(await page.evaluate(() => window.kiln.last?.class >= 0), 'a prediction offline');
    assert.equal(await page.evaluate(() => window.kiln.error), null);
  } finally {
    await context.close();
  }
});

test('a WebGPU device that fails falls back to wasm and says so', async () => {
  const context = await launch(true);
  try {
    // The adapter exists, but opening a device on it fails (as a driver fault or a lost device would).
    await context.addInitScript(() => {
      GPUAdapter.prototype.requestDevice = () => Promise.reject(new Error('simulated device failure'));
    });
    const { page, errors } = await open(context);
    const backend = await page.locator('#backend').textContent();
    assert.match(backend, /^wasm CPU.*WebGPU failed: .*simulated device failure/);
    await page.locator('#digits button').first().click();
    await page.evaluate(() => window.kiln.settled());
    assert.ok(await page.evaluate(() => window.kiln.last?.class >= 0), 'predictions continue on the CPU');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
