/**
 * Streaming memory check (a script, not a test): generates a 1,000,000-line corpus of about 120 bytes per line
 * (the size of wiki1m_for_simcse.txt) in a temporary directory, then measures the peak resident set size of
 * separate child processes that
 *   - baseline: load the modules only,
 *   - stream:   iterate the corpus with openCorpus (counting lines, keeping nothing),
 *   - subset:   loadTrainingSentences with fraction 0.001 (two passes, keeps 1,000 sentences),
 *   - all:      loadTrainingSentences without a subset (keeps all 1,000,000 sentences once).
 * Run: node --import tsx bench/stream-rss.ts [--lines N]. The bound it checks is in data/README.md.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCorpus } from '../src/data/readers.js';
import { Rng } from '../src/data/rng.js';
import { loadTrainingSentences } from '../src/data/subset.js';

/** Lines in the generated corpus. */
const DEFAULT_LINES = 1_000_000;
/**
 * Bounds stated in data/README.md. Peak RSS includes garbage V8 has not collected yet, so streaming is bounded by
 * a constant (it does not grow with the file), and "not held twice" is checked on the memory retained after a
 * full GC: all sentences held once as V8 strings (about 1.2x the file for ASCII text).
 */
const STREAM_BOUND_MIB = 128;
const RETAINED_BOUND_FILE_MULTIPLE = 1.5;
const WORDS = ['the', 'of', 'and', 'in', 'was', 'Australia', 'province', 'colonies', 'state', 'founded', 'history', 'philosophical', 'radicalism', 'evangelical', 'religion', 'independent', 'thinking', 'Adelaide', '1836', 'unique'];

const MiB = 1024 * 1024;

async function generate(file: string, lines: number): Promise<void> {
  const rng = Rng.fromSeed(1);
  const fh = await open(file, 'w');
  try {
    let block: string[] = [];
    for (let i = 0; i < lines; i++) {
      const words: string[] = [];
      let len = 0;
      const target = 60 + rng.nextInt(120); // mean about 120 bytes
      while (len < target) {
        const w = WORDS[rng.nextInt(WORDS.length)]!;
        words.push(w);
        len += w.length + 1;
      }
      block.push(`${words.join(' ')}.`);
      if (block.length === 10_000) {
        await fh.write(`${block.join('\n')}\n`);
        block = [];
      }
    }
    if (block.length > 0) await fh.write(`${block.join('\n')}\n`);
  } finally {
    await fh.close();
  }
}

/** Child mode: run one phase and print {phase, maxRssMiB, result}. */
async function child(phase: string, file: string): Promise<void> {
  let result: unknown = null;
  let keep: unknown = null; // holds the loaded sentences until the measurement
  if (phase === 'stream') {
    let n = 0;
    let bytes = 0;
    const reader = openCorpus(file);
    for await (const rec of reader) {
      n++;
      bytes += rec.text.length;
    }
    result = { records: n, chars: bytes, sha256: reader.stats.sha256 };
  } else if (phase === 'subset') {
    const r = await loadTrainingSentences({ path: file, fraction: 0.001, subsetSeed: 48 });
    result = { sentences: r.sentences.length };
  } else if (phase === 'all') {
    const r = await loadTrainingSentences({ path: file });
    keep = r.sentences;
    result = { sentences: r.sentences.length };
  }
  const maxRssMiB = process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB
  (globalThis as { gc?: () => void }).gc?.();
  const retainedMiB = process.memoryUsage().heapUsed / MiB; // the result is still referenced here
  process.stdout.write(`${JSON.stringify({ phase, maxRssMiB: Math.round(maxRssMiB), retainedMiB: Math.round(retainedMiB), result })}\n`);
  if (keep === undefined) process.stdout.write(''); // keeps `keep` alive past the measurement
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child') return child(args[1]!, args[2]!);
  const li = args.indexOf('--lines');
  const lines = li >= 0 ? Number(args[li + 1]) : DEFAULT_LINES;
  const dir = mkdtempSync(path.join(tmpdir(), 'micse-stream-rss-'));
  const file = path.join(dir, 'corpus.txt');
  try {
    const t0 = Date.now();
    await generate(file, lines);
    const size = statSync(file).size;
    process.stdout.write(`generated ${lines.toLocaleString('en')} lines, ${(size / MiB).toFixed(1)} MiB in ${Date.now() - t0} ms (${file})\n`);
    const self = fileURLToPath(import.meta.url);
    const peaks: Record<string, number> = {};
    const retained: Record<string, number> = {};
    for (const phase of ['baseline', 'stream', 'subset', 'all']) {
      const t = Date.now();
      const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', self, '--child', phase, file], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${phase} failed: ${r.stderr}`);
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { maxRssMiB: number; retainedMiB: number; result: unknown };
      peaks[phase] = out.maxRssMiB;
      retained[phase] = out.retainedMiB;
      process.stdout.write(
        `${phase.padEnd(8)} peak RSS ${String(out.maxRssMiB).padStart(5)} MiB  heap after GC ${String(out.retainedMiB).padStart(4)} MiB  ${Date.now() - t} ms  ${JSON.stringify(out.result)}\n`,
      );
    }
    const fileMiB = size / MiB;
    const over = peaks['stream']! - peaks['baseline']!;
    const held = retained['all']! - retained['baseline']!;
    const okStream = over <= STREAM_BOUND_MIB;
    const okHeld = held <= RETAINED_BOUND_FILE_MULTIPLE * fileMiB;
    process.stdout.write(
      `streaming: peak RSS ${over} MiB above the baseline process (bound ${STREAM_BOUND_MIB} MiB; file ${fileMiB.toFixed(0)} MiB): ${okStream ? 'OK' : 'OVER BOUND'}\n` +
        `all sentences in memory: ${held} MiB retained after GC (bound ${RETAINED_BOUND_FILE_MULTIPLE} x file = ${(RETAINED_BOUND_FILE_MULTIPLE * fileMiB).toFixed(0)} MiB), ` +
        `peak RSS ${peaks['all']! - peaks['baseline']!} MiB above baseline: ${okHeld ? 'OK' : 'OVER BOUND'}\n`,
    );
    if (!okStream || !okHeld) process.exitCode = 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
