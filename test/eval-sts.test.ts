/**
 * STS evaluation: readers on synthetic SentEval files, the protocol against a scipy/SentEval port (with a
 * model-free encoder), the CLI's error paths, and the acceptance test: the tiny reference checkpoint scored within
 * 0.01 points of `senteval_reference.json` (computed with Hugging Face transformers and SentEval).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { formatStsTable, stsReportJson } from '../eval/report.js';
import { normalizeSentence, readSickRelatedness, readStsBenchmark, readStsSubset, resolveSentevalRoot } from '../eval/senteval.js';
import {
  STS_TASK_NAMES,
  STS_TEST_TASKS,
  evaluateSts,
  loadStsTask,
  parseStsTasks,
  stsbDevSpearman,
  type SentenceEncoder,
  type StsTaskName,
} from '../eval/sts.js';
import { decodeTextBytes, firstInvalidUtf8 } from '../src/data/textCheck.js';
import { UserError } from '../src/errors.js';
import type { BackendName } from '../src/model/backendNames.js';
import { ROOT, SKIP_NO_SHARED, shared } from './helpers.js';

const TMP = mkdtempSync(path.join(os.tmpdir(), 'micse-eval-test-'));
after(() => rmSync(TMP, { recursive: true, force: true }));

function write(file: string, text: string): string {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

// ------------------------------------------------------------------------------------------------------------
// Task names

test('parseStsTasks: comma lists, all, de-duplicated in table order', () => {
  assert.deepEqual(parseStsTasks('stsb, STS12,stsb'), ['sts12', 'stsb']);
  assert.deepEqual(parseStsTasks('all'), [...STS_TEST_TASKS]);
  assert.deepEqual(parseStsTasks(['all', 'stsb-dev']), [...STS_TASK_NAMES]);
});

test('parseStsTasks: an unknown name is a UserError listing the valid ones', () => {
  assert.throws(() => parseStsTasks('sts12,sts17'), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.match(err.message, /unknown STS task 'sts17'/);
    for (const t of STS_TASK_NAMES) assert.ok(err.message.includes(t), `${t} listed`);
    return true;
  });
  assert.throws(() => parseStsTasks(' , '), UserError);
});

// ------------------------------------------------------------------------------------------------------------
// Readers on synthetic files

test('STS12-16 subset: empty gold lines drop their pair; sentences rejoined on single spaces', () => {
  const dir = path.join(TMP, 'sts-subset');
  write(path.join(dir, 'STS.input.x.txt'), 'a  b\tc\n d e \tf\u00a0g\nh\ti\n');
  write(path.join(dir, 'STS.gs.x.txt'), '4.2\n\n1\n');
  const sub = readStsSubset(dir, 'x');
  assert.deepEqual(sub.s1, ['a b', 'h']);
  assert.deepEqual(sub.s2, ['c', 'i']);
  assert.deepEqual(sub.gold, [4.2, 1]);
  assert.equal(normalizeSentence('\tx\u3000 y \r'), 'x y');
});

test('STS12-16 subset: input and gold must pair up; bad scores name the line', () => {
  const dir = path.join(TMP, 'sts-bad');
  write(path.join(dir, 'STS.input.x.txt'), 'a\tb\nc\td\n');
  write(path.join(dir, 'STS.gs.x.txt'), '1\n');
  assert.throws(() => readStsSubset(dir, 'x'), /2 lines but .* has 1/);
  write(path.join(dir, 'STS.gs.x.txt'), '1\nhigh\n');
  assert.throws(() => readStsSubset(dir, 'x'), /STS\.gs\.x\.txt:2: expected a number/);
});

test('STS-B: TAB split without quoting, extra columns allowed; SICK: header skipped', () => {
  const root = path.join(TMP, 'senteval-synthetic');
  write(path.join(root, 'STS', 'STSBenchmark', 'sts-dev.csv'),
    'g\tf\ty\t1\t2.5\t"quoted\tsecond \n' + 'g\tf\ty\t2\t5.000\tx y\tx  y\textra\tcols\n');
  const dev = readStsBenchmark(root, 'dev');
  assert.deepEqual(dev.s1, ['"quoted', 'x y']);
  assert.deepEqual(dev.s2, ['second', 'x y']);
  assert.deepEqual(dev.gold, [2.5, 5]);
  write(path.join(root, 'SICK', 'SICK_test_annotated.txt'),
    'pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n1\tA b\tC d\t3.3\tNEUTRAL\n2\te\tf\t1\tNEUTRAL\n');
  const sick = readSickRelatedness(root, 'test');
  assert.deepEqual([sick.s1, sick.s2, sick.gold], [['A b', 'e'], ['C d', 'f'], [3.3, 1]]);
});

test('the data root may be a parent of the folder holding STS/ (SentEval data/downstream, extracted archives)', () => {
  const top = path.join(TMP, 'nested');
  const inner = path.join(top, 'a', 'downstream');
  write(path.join(inner, 'STS', 'STSBenchmark', 'sts-test.csv'), 'g\tf\ty\t1\t2.5\tx\ty\ng\tf\ty\t2\t1\tz\tw\n');
  assert.equal(resolveSentevalRoot(top), inner);
  assert.equal(resolveSentevalRoot(inner), inner);
  assert.equal(readStsBenchmark(top, 'test').gold[0], 2.5);
  const none = path.join(TMP, 'no-sts');
  mkdirSync(none, { recursive: true });
  assert.equal(resolveSentevalRoot(none), none);
});

test('a missing task file is a UserError naming its path', () => {
  const root = path.join(TMP, 'senteval-partial');
  const dir = path.join(root, 'STS', 'STS13-en-test');
  write(path.join(dir, 'STS.input.FNWN.txt'), 'a\tb\nc\td\n');
  write(path.join(dir, 'STS.gs.FNWN.txt'), '1\n2\n');
  const missing = path.join(dir, 'STS.input.headlines.txt');
  assert.throws(() => loadStsTask(root, 'sts13'), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.ok(err.message.includes(missing), err.message);
    return true;
  });
  assert.throws(() => loadStsTask(root, 'sickr'), (err: unknown) =>
    err instanceof UserError && err.message.includes(path.join(root, 'SICK', 'SICK_test_annotated.txt')));
});

test('a task file of 0 or 1 pairs is a UserError naming it when read (a correlation needs 2), for every reader', () => {
  const root = path.join(TMP, 'senteval-few');
  const dev = write(path.join(root, 'STS', 'STSBenchmark', 'sts-dev.csv'), '');
  assert.throws(() => loadStsTask(root, 'stsb-dev'), (e: unknown) => e instanceof UserError && e.message === `${dev}: 0 pairs (a correlation needs at least 2)`);
  write(dev, 'g\tf\ty\t1\t2.5\tx\ty\n');
  assert.throws(() => loadStsTask(root, 'stsb-dev'), (e: unknown) => e instanceof UserError && e.message === `${dev}: 1 pair (a correlation needs at least 2)`);
  const sick = write(path.join(root, 'SICK', 'SICK_test_annotated.txt'), 'pair_ID\tsentence_A\tsentence_B\trelatedness_score\n');
  assert.throws(() => readSickRelatedness(root, 'test'), (e: unknown) => e instanceof UserError && e.message.startsWith(`${sick}: 0 pairs`));
  const dir = path.join(root, 'sts-year');
  const input = write(path.join(dir, 'STS.input.x.txt'), 'a\tb\nc\td\n');
  write(path.join(dir, 'STS.gs.x.txt'), '1\n\n');
  assert.throws(() => readStsSubset(dir, 'x'), (e: unknown) => e instanceof UserError && e.message.startsWith(`${input}: 1 pair `), 'empty gold lines drop pairs');
});

test('a task file in UTF-16/UTF-32 or with a NUL byte is a UserError naming it (and the line), for every reader', () => {
  const root = path.join(TMP, 'senteval-encodings');
  const u16 = (text: string) => Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
  const stsb = 'g\tf\ty\t1\t2.5\tx\ty\ng\tf\ty\t2\t1\tz\tw\n';
  const dev = write(path.join(root, 'STS', 'STSBenchmark', 'sts-dev.csv'), '');
  const sick = write(path.join(root, 'SICK', 'SICK_test_annotated.txt'), '');
  const dir = path.join(root, 'sts-year');
  const input = write(path.join(dir, 'STS.input.x.txt'), 'a\tb\nc\td\n');
  const gold = write(path.join(dir, 'STS.gs.x.txt'), '1\n2\n');
  const cases: [string, string | Buffer, () => unknown, RegExp][] = [
    [dev, u16(stsb), () => readStsBenchmark(root, 'dev'), /^\S*sts-dev\.csv: UTF-16 text \(byte order mark FF FE, UTF-16 little-endian\); save it as UTF-8$/],
    [dev, Buffer.from(stsb, 'utf16le'), () => readStsBenchmark(root, 'dev'), /^\S*sts-dev\.csv:1: NUL byte, not text \(a binary file, or UTF-16\/UTF-32 without a byte order mark\?\); save it as UTF-8$/],
    [sick, Buffer.concat([Buffer.from([0, 0, 0xfe, 0xff]), Buffer.from('p\ta\n')]), () => readSickRelatedness(root, 'test'), /SICK_test_annotated\.txt: UTF-32 text \(byte order mark 00 00 FE FF/],
    [input, 'a\tb\nc\0\td\n', () => readStsSubset(dir, 'x'), /STS\.input\.x\.txt:2: NUL byte, not text/],
    [gold, u16('1\n2\n'), () => readStsSubset(dir, 'x'), /STS\.gs\.x\.txt: UTF-16 text/],
  ];
  for (const [file, content, read, message] of cases) {
    const before = readFileSync(file);
    writeFileSync(file, content);
    assert.throws(read, (e: unknown) => e instanceof UserError && message.test(e.message) && e.message.startsWith(file), message.source);
    writeFileSync(file, before);
  }
  write(dev, `\ufeff${stsb}`);
  assert.deepEqual(readStsBenchmark(root, 'dev').s1, ['x', 'z'], 'a UTF-8 byte-order mark is read as before');
});

test('a task file that is not valid UTF-8 is a UserError naming it and the line, for every reader (it was decoded with replacement characters; SentEval raises)', () => {
  const root = path.join(TMP, 'senteval-invalid-utf8');
  const stsb = 'g\tf\ty\t1\t2.5\tx\ty\ng\tf\ty\t2\t1\tz\tw\n';
  const dev = write(path.join(root, 'STS', 'STSBenchmark', 'sts-dev.csv'), stsb);
  const sick = write(path.join(root, 'SICK', 'SICK_test_annotated.txt'), '');
  const dir = path.join(root, 'sts-year');
  const input = write(path.join(dir, 'STS.input.x.txt'), 'a\tb\nc\td\n');
  const gold = write(path.join(dir, 'STS.gs.x.txt'), '1\n2\n');
  const latin1 = (text: string) => Buffer.from(text, 'latin1');
  const cases: [string, Buffer, () => unknown, string][] = [
    [dev, latin1('g\tf\ty\t1\t2.5\tx\ty\ng\tf\ty\t2\t1\tcaf\xe9\tw\n'), () => readStsBenchmark(root, 'dev'), `${dev}:2: not valid UTF-8 (byte E9 at offset 29); save it as UTF-8`],
    [sick, latin1('pair_ID\tsentence_A\tsentence_B\trelatedness_score\n1\t\xff\tb\t3\n'), () => readSickRelatedness(root, 'test'), `${sick}:2: not valid UTF-8 (byte FF at offset 50); save it as UTF-8`],
    [input, Buffer.concat([Buffer.from('a\tb\nc\td '), Buffer.from([0xe2, 0x82])]), () => readStsSubset(dir, 'x'), `${input}:2: not valid UTF-8 (byte E2 at offset 8); save it as UTF-8`],
    [gold, Buffer.concat([Buffer.from('1\n'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('2\n')]), () => readStsSubset(dir, 'x'), `${gold}:2: not valid UTF-8 (byte ED at offset 2); save it as UTF-8`],
  ];
  for (const [file, content, read, message] of cases) {
    const before = readFileSync(file);
    writeFileSync(file, content);
    assert.throws(read, (e: unknown) => e instanceof UserError && e.message === message, message);
    writeFileSync(file, before);
  }
  assert.deepEqual(readStsBenchmark(root, 'dev').s1, ['x', 'z']);
  writeFileSync(dev, cases[0]![1]);
  const r = micse('eval', '--model', 'unused', '--data', root, '--tasks', 'stsb-dev');
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim(), `micse: ${cases[0]![3]}`);
});

test('firstInvalidUtf8 finds what Python\'s strict utf-8 codec refuses: overlong forms, surrogates, > U+10FFFF, stray and cut-off bytes', () => {
  const at = (...bytes: number[]) => firstInvalidUtf8(Uint8Array.from(bytes));
  assert.equal(at(), -1);
  assert.equal(firstInvalidUtf8(Buffer.from('\ufeffaé€😀 plain', 'utf8')), -1);
  assert.equal(at(0x61, 0xc0, 0x80), 1, 'overlong NUL');
  assert.equal(at(0xc1, 0xbf), 0, 'overlong');
  assert.equal(at(0xe0, 0x9f, 0xbf), 0, 'overlong 3-byte');
  assert.equal(at(0xed, 0xa0, 0x80), 0, 'surrogate U+D800');
  assert.equal(at(0xed, 0x9f, 0xbf), -1, 'U+D7FF');
  assert.equal(at(0xf0, 0x8f, 0xbf, 0xbf), 0, 'overlong 4-byte');
  assert.equal(at(0xf4, 0x8f, 0xbf, 0xbf), -1, 'U+10FFFF');
  assert.equal(at(0xf4, 0x90, 0x80, 0x80), 0, 'above U+10FFFF');
  assert.equal(at(0xf5, 0x80, 0x80, 0x80), 0);
  assert.equal(at(0x61, 0x80), 1, 'stray continuation byte');
  assert.equal(at(0x61, 0xe2, 0x82), 1, 'cut off by the end');
  assert.equal(at(0xe2, 0x82, 0x61), 0, 'cut off by an ASCII byte');
  // decodeTextBytes decodes with a fatal TextDecoder and asks firstInvalidUtf8 where only when that throws: the two
  // agree on what is valid, and the bytes before the first invalid one decode.
  const decodes = (b: Uint8Array) => {
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(b);
      return true;
    } catch {
      return false;
    }
  };
  let seed = 1;
  const nextByte = () => (seed = (seed * 48271) % 0x7fffffff) >> 23; // Park-Miller: 0..255
  for (let n = 0; n < 5000; n++) {
    const b = Uint8Array.from({ length: 1 + (n % 6) }, () => (nextByte() < 64 ? 0x61 : 0x80 + (nextByte() & 0x7f)));
    const bad = firstInvalidUtf8(b);
    assert.equal(bad === -1, decodes(b), [...b].map((x) => x.toString(16)).join(' '));
    if (bad > 0) assert.ok(decodes(b.subarray(0, bad)), [...b].map((x) => x.toString(16)).join(' '));
  }
});

test('every file of the shared SentEval data is valid UTF-8, so the task readers\' check refuses none of it', { skip: SKIP_NO_SHARED }, () => {
  const root = shared('senteval');
  const files = readdirSync(root, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
  assert.ok(files.length > 0);
  for (const file of files) decodeTextBytes(file, readFileSync(file));
});

test('CLI: eval on an empty STS-B dev file exits 2 with one line naming it', () => {
  const root = path.join(TMP, 'senteval-empty-dev');
  const dev = write(path.join(root, 'STS', 'STSBenchmark', 'sts-dev.csv'), '');
  const r = micse('eval', '--model', 'unused', '--data', root, '--tasks', 'stsb-dev');
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim(), `micse: ${dev}: 0 pairs (a correlation needs at least 2)`);
});

// ------------------------------------------------------------------------------------------------------------
// The protocol, independently of any model

/** A deterministic model-free embedding: counts of the letters a-z (ties and all). */
const letterCounts: SentenceEncoder = async (sentences) =>
  sentences.map((s) => {
    const v = new Array<number>(26).fill(0);
    for (const ch of s) {
      const k = ch.charCodeAt(0) - 'a'.charCodeAt(0);
      if (k >= 0 && k < 26) v[k]! += 1;
    }
    return v;
  });

/**
 * Spearman x 100 of the letter-count embedding, from a Python port of SentEval's sts.py (SimCSE fork) with
 * scipy.stats.spearmanr: same files, same empty-gold drop, same `' '.join(s.split())`.
 */
const LETTER_COUNT_SCIPY: Record<string, number> = {
  STS12: 50.65645945043163,
  STS13: 49.253477799441995,
  STS14: 49.54991972918958,
  STS15: 52.86321351092275,
  STS16: 47.82834250034565,
  STSBenchmark: 52.30549404710166,
  'STSBenchmark-dev': 54.96731340827474,
  SICKRelatedness: 48.44878559775124,
};
const LETTER_COUNT_SCIPY_AVG7 = 50.129384662169215;
/** Same arithmetic in float64 on both sides: only summation order differs. */
const PROTOCOL_TOL = 1e-9;

test('protocol: every task and the average match a scipy port of SentEval (model-free encoder)', { skip: SKIP_NO_SHARED }, async () => {
  const ev = await evaluateSts(letterCounts, { dataDir: shared('senteval'), tasks: STS_TASK_NAMES, silent: true });
  for (const t of ev.tasks) {
    assert.ok(Math.abs(t.spearman - LETTER_COUNT_SCIPY[t.senteval]!) < PROTOCOL_TOL, `${t.senteval}: ${t.spearman}`);
  }
  assert.ok(Math.abs(ev.average! - LETTER_COUNT_SCIPY_AVG7) < PROTOCOL_TOL);
  assert.deepEqual(ev.averageOver, [...STS_TEST_TASKS]);
  const dev = await stsbDevSpearman(letterCounts, shared('senteval'));
  assert.ok(Math.abs(dev - LETTER_COUNT_SCIPY['STSBenchmark-dev']!) < PROTOCOL_TOL);
  const devData = loadStsTask(shared('senteval'), 'stsb-dev');
  assert.equal(await stsbDevSpearman(letterCounts, devData), dev);
  const table = formatStsTable(ev).split('\n');
  assert.match(table[0]!, /^\| STS12 \| STS13 \| STS14 \| STS15 \| STS16 \| STS-B \| SICK-R \|\s+Avg \| STS-B dev \|$/);
  assert.match(table[2]!, /^\| 50\.66 \| 49\.25 \| 49\.55 \| 52\.86 \| 47\.83 \| 52\.31 \|\s+48\.45 \| 50\.13 \|\s+54\.97 \|$/);
});

// ------------------------------------------------------------------------------------------------------------
// CLI error paths (they fail before any model is loaded)

function micse(...args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'micse.js'), ...args], { cwd: TMP, encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

test('CLI: unknown --tasks name exits 2 listing the valid names', () => {
  const r = micse('eval', '--model', 'unused', '--data', TMP, '--tasks', 'sts12,nope');
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /unknown STS task 'nope'; valid tasks: sts12, sts13, sts14, sts15, sts16, stsb, sickr, stsb-dev/);
});

test('CLI: absent data folder says how to get it; a missing task file is named', () => {
  const r = micse('eval', '--model', 'unused');
  assert.equal(r.status, 2, r.stderr);
  assert.ok(r.stderr.includes(path.join(TMP, 'data', 'senteval')), r.stderr);
  assert.match(r.stderr, /npx micse data download senteval/);
  const empty = path.join(TMP, 'empty-data');
  mkdirSync(empty, { recursive: true });
  const r2 = micse('eval', '--model', 'unused', '--data', empty, '--tasks', 'stsb');
  assert.equal(r2.status, 2, r2.stderr);
  assert.ok(r2.stderr.includes(path.join(empty, 'STS', 'STSBenchmark', 'sts-test.csv')), r2.stderr);
});

// ------------------------------------------------------------------------------------------------------------
// Acceptance: the tiny reference checkpoint against SentEval + transformers

/**
 * Backend for the acceptance run. wasm by default: TF.js's pure-JS cpu backend gives the same numbers but embeds
 * about 25x slower (minutes for the ~31k distinct sentences on a 2-core machine). Override with
 * MICSE_EVAL_TEST_BACKEND=cpu.
 */
const ACCEPTANCE_BACKEND = (process.env.MICSE_EVAL_TEST_BACKEND ?? 'wasm') as BackendName;
/** Acceptance tolerance on task scores and the average (Spearman x 100). */
const TASK_TOL = 0.01;
/** Subset Pearson tolerance: embeddings agree to ~1e-6, so Pearson does to ~1e-3 points. */
const SUBSET_PEARSON_TOL = 0.01;
/**
 * Subset Spearman tolerance. The random tiny model's cosines all lie within ~4e-5 of 1 (a few hundred float32
 * ulps), so the ranks of small subsets (FNWN: 189 pairs) depend on float rounding: the reference's own float32
 * cosine gives ~0.1 points different from float64 on identical embeddings. Measured: up to 0.031 (wasm) and
 * 0.050 (cpu, surprise.SMTnews); task scores, pooling more pairs, stay within 0.001.
 */
const SUBSET_SPEARMAN_TOL = 0.1;

interface RefTask {
  all_spearman?: number;
  spearman?: number;
  n: number;
  subsets?: Record<string, { spearman: number; pearson: number; n: number }>;
}

test('acceptance: tiny-h32-l4 scores within 0.01 points of senteval_reference.json', { skip: SKIP_NO_SHARED }, async () => {
  const { selectBackend } = await import('../src/model/backend.js');
  const { loadPretrained } = await import('../src/model/pretrained.js');
  const { embed } = await import('../src/model/embed.js');
  await selectBackend(ACCEPTANCE_BACKEND);
  const dir = shared('hf-reference', 'tiny-h32-l4');
  const ref = JSON.parse(readFileSync(path.join(dir, 'senteval_reference.json'), 'utf8'))['tiny-h32-l4'] as
    Record<string, RefTask> & { avg7: number };
  const { model, tokenizer } = await loadPretrained(dir);
  try {
    const tasks: StsTaskName[] = [...STS_TASK_NAMES];
    const ev = await evaluateSts((s) => embed(model, tokenizer, s, { pooler: 'cls_before_pooler' }), {
      dataDir: shared('senteval'),
      tasks,
      silent: true,
    });
    const json = stsReportJson(ev);
    for (const t of ev.tasks) {
      const r = ref[t.senteval]!;
      const want = r.all_spearman ?? r.spearman!;
      assert.equal(t.n, r.n, `${t.senteval} pairs`);
      assert.ok(Math.abs(t.spearman - want) < TASK_TOL, `${t.senteval}: ${t.spearman} vs ${want}`);
      for (const s of r.subsets === undefined ? [] : t.subsets) {
        const rs = r.subsets![s.name]!;
        assert.equal(s.n, rs.n, `${t.senteval}/${s.name} pairs`);
        assert.ok(Math.abs(s.pearson - rs.pearson) < SUBSET_PEARSON_TOL, `${t.senteval}/${s.name} pearson ${s.pearson} vs ${rs.pearson}`);
        assert.ok(Math.abs(s.spearman - rs.spearman) < SUBSET_SPEARMAN_TOL, `${t.senteval}/${s.name} spearman ${s.spearman} vs ${rs.spearman}`);
      }
    }
    assert.ok(json.avg7 !== null && Math.abs(json.avg7 - ref.avg7) < TASK_TOL, `avg7 ${json.avg7} vs ${ref.avg7}`);
    process.stderr.write(`acceptance (${ACCEPTANCE_BACKEND}): ${ev.sentencesPerSecond.toFixed(0)} sentences/s\n`);
  } finally {
    model.dispose();
  }
});
