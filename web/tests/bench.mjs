// Runs bench.html (web/dist, or KILN_DIST, served by `kiln serve`) in headless Chromium and prints the table.
//   node web/tests/bench.mjs [QUERY]      e.g. '?runs=100&gpu_runs=10&model=model-f32.kiln'
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const kilnBin = process.env.KILN_BIN ?? resolve(root, process.env.CARGO_TARGET_DIR ?? 'target', 'release/kiln');
const query = process.argv[2] ?? '?runs=100&gpu_runs=10';
const server = spawn(kilnBin, ['serve', '--dir', resolve(root, process.env.KILN_DIST ?? 'web/dist'), '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
const base = await new Promise((ok) => {
  let text = '';
  server.stdout.on('data', (c) => {
    text += c;
    const m = text.match(/at (http:\/\/127\.0\.0\.1:\d+\/)/);
    if (m) ok(m[1]);
  });
});
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'kiln-bench-')), {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  ignoreDefaultArgs: ['--headless'],
  args: ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${base}bench.html${query}`);
  await page.waitForFunction(() => window.benchResults !== null, null, { timeout: 900_000 });
  const results = await page.evaluate(() => window.benchResults);
  if (results.error) throw new Error(results.error);
  for (const r of results.rows) console.log(`${r.name}: median ${r.median.toFixed(3)} ms, p90 ${r.p90.toFixed(3)} ms over ${r.runs} runs, class ${r.class}`);
  console.log('status:', await page.locator('#status').textContent());
  if (results.ratio != null) console.log(`Kiln wasm ÷ onnxruntime-web wasm: ${results.ratio.toFixed(3)}`);
  console.log(`(${await page.evaluate(() => navigator.userAgent)})`);
} finally {
  await context.close();
  server.kill();
}
