/**
 * The command line's answers to bad flags and to a hostile environment: one line naming the flag or the path and
 * the cause, exit code 2, and no temporary file left behind.
 *   - numeric flags out of range (`--batch-size 0 | -5 | abc`) and misspelt flags (with a did-you-mean), on every
 *     command, in process; likewise an existing output file without --force, an eval --json path that cannot be
 *     written, a subset without a size, a command without its subcommand or argument, the data layer's errors
 *     naming the flag typed, and a corpus line longer than the readers take;
 *   - environment faults, through real commands in child processes (test/cli-driver.ts): a read-only output
 *     directory (a read-only bind mount in a private mount namespace when run as root, where chmod stops nothing;
 *     chmod 0555 otherwise), an output path that is a file or a directory, and a full disk simulated by a file
 *     size limit (`ulimit -f`: writes past it fail with EFBIG, as they fail with ENOSPC on a full disk).
 * About 35 s on 2 busy cores (12 s of CPU), nearly all in the two child processes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildCli, commands, describeFailure } from '../src/cli/main.js';
import { MAX_LINE_BYTES } from '../src/data/readers.js';
import { loadTrainingSentences, writeSubset } from '../src/data/subset.js';
import { environmentError, UserError } from '../src/errors.js';
import { ensureDir, writeFileAtomic } from '../src/fsutil.js';
import { ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const TMP = mkdtempSync(path.join(os.tmpdir(), 'micse-cli-errors-'));
after(() => {
  for (const d of readdirSync(TMP)) chmodSync(path.join(TMP, d), 0o755);
  rmSync(TMP, { recursive: true, force: true });
});

/** The message and exit code bin/micse.js would print and return for `argv` (parse failures only: no handler runs). */
async function parseFailure(argv: string[]): Promise<{ message: string; exitCode: number }> {
  try {
    await buildCli(argv).parseAsync();
  } catch (err) {
    return describeFailure(err);
  }
  throw new Error(`${argv.join(' ')}: parsed without error`);
}

/** Every file under `dir` whose name marks a temporary (`.tmp-`), as paths relative to `dir`. */
function temporaries(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).filter((f) => /\.tmp-/.test(f));
}

describe('flags', () => {
  it('a numeric flag out of range or not a number names the flag and its range, exit 2', async () => {
    const embed = ['embed', '--model', 'm', '--input', 'in.txt', '--output', 'o.jsonl'];
    const cases: [string[], string][] = [
      [[...embed, '--batch-size', '0'], "--batch-size must be an integer >= 1, got 0"],
      [[...embed, '--batch-size', '-5'], "--batch-size must be an integer >= 1, got -5"],
      [[...embed, '--batch-size', 'abc'], "--batch-size must be an integer >= 1, got 'abc'"],
      [[...embed, '--batch-size', '2.5'], "--batch-size must be an integer >= 1, got 2.5"],
      [[...embed, '--max-length', '1'], "--max-length must be an integer >= 2, got 1"],
      [['index', 'build', '--model', 'm', '--corpus', 'c.txt', '--out', 'o', '--batch-size', '0'], "--batch-size must be an integer >= 1, got 0"],
      [['index', 'build', '--model', 'm', '--corpus', 'c.txt', '--out', 'o', '--threads', '-1'], "--threads must be an integer >= 0, got -1"],
      [['search', '--index', 'i', '--query', 'q', '--top-k', 'ten'], "--top-k must be an integer >= 1, got 'ten'"],
      [['search', '--index', 'i', '--query', 'q', '--top-k', '1', '--top-k', '2'], '--top-k given 2 times; give it once'],
      [['cluster', '--model', 'm', '--input', 'i.txt', '--threshold', '1.5'], '--threshold must be a number >= -1 and <= 1, got 1.5'],
      // A one-letter flag is written -k (as help shows it); --k parses the same.
      [['cluster', '--model', 'm', '--input', 'i.txt', '-k', '0'], '-k must be an integer >= 1, got 0'],
      [['cluster', '--model', 'm', '--input', 'i.txt', '--k', '0'], '-k must be an integer >= 1, got 0'],
      [['cluster', '--model', 'm', '--input', 'i.txt', '-k', '2', '--k', '3'], '-k given 2 times; give it once'],
      [['data', 'subset', '--input', 'i', '--output', 'o', '--fraction', '0'], '--fraction must be a number > 0 and <= 1, got 0'],
      [['sweep', '--config', 'x.yaml', '--parallel', '0'], '--parallel must be an integer >= 1, got 0'],
      [['worker', '--queue', 'redis://127.0.0.1:1', '--max-stalled', '0'], '--max-stalled must be an integer >= 1, got 0'],
    ];
    for (const [argv, message] of cases) {
      assert.deepEqual(await parseFailure(argv), { message: `micse: ${message}`, exitCode: 2 }, argv.join(' '));
    }
  });

  it('a flag of one value given twice or without a value, a switch given a value, a value outside the choices: one line, exit 2', async () => {
    const embed = ['embed', '--model', 'm', '--input', 'in.txt', '--output', 'o.jsonl'];
    const cases: [string[], string][] = [
      [['train', '--resume', 'a', '--resume', 'b'], '--resume given 2 times; give it once'],
      [[...embed, '--model', 'n'], '--model given 2 times; give it once'],
      [[...embed, '--backend', 'cpu', '--backend', 'wasm'], '--backend given 2 times; give it once'],
      [['train', '--config'], '--config needs a value'],
      [['train', '--config='], '--config needs a value'],
      [['train', '--config', 'x.yaml', '--set'], '--set needs a value each time it is given'],
      [['train', '--config', 'x.yaml', '--dry-run=yes'], '--dry-run is a switch: give it alone (or =true, =false), not =yes'],
      [['export', '--checkpoint', 'c', '--output', 'o', '--force=maybe'], '--force is a switch: give it alone (or =true, =false), not =maybe'],
      [[...embed, '--backend', 'gpu'], '--backend "gpu": choose one of auto, tensorflow-gpu, tensorflow, webgpu, wasm, cpu'],
      [['data', 'download', 'bogus'], '<datasets> "bogus": choose one of wiki1m, senteval, fewshot-subsets'],
      [['demo', '--port', '70000'], '--port must be an integer >= 0 and <= 65535, got 70000'],
      [['train', '--config', 'x.yaml', '--resume', 'r'], '--config and --resume: a resumed run reads its own config.yaml; give one of them (--set changes a resumed run)'],
      [['data', 'subset', '--input', 'i', '--output', 'o', '--count', '2', '--seed', '4294967296'], '--seed must be an integer >= 0 and <= 4294967295, got 4294967296'],
      [['train', '--config', 'configs/tiny.yaml', '--set', 'train.seed=4294967296', '--dry-run'], '--set train.seed=4294967296: train.seed must be <= 4294967295, got 4294967296'],
    ];
    for (const [argv, message] of cases) {
      assert.deepEqual(await parseFailure(argv), { message: `micse: ${message}`, exitCode: 2 }, argv.join(' '));
    }
    const run = path.join(TMP, 'resumable');
    mkdirSync(run);
    writeFileSync(path.join(run, 'config.yaml'), readFileSync(path.join(ROOT, 'configs', 'tiny.yaml')));
    assert.deepEqual(await parseFailure(['train', '--resume', run, '--set', 'train.output=elsewhere']),
      { message: `micse: --set train.output: a resumed run stays in its directory (${run}); copy the run elsewhere to continue it there`, exitCode: 2 });
  });

  it('an output that is the input (by another name too) is refused before anything is read or written, exit 2', async () => {
    const dir = path.join(TMP, 'over-input');
    mkdirSync(dir);
    const corpus = path.join(dir, 'c.tsv');
    writeFileSync(corpus, 'a b\nc d\n');
    writeFileSync(path.join(dir, 'c.manifest.json'), 'a b\nc d\n');
    symlinkSync(corpus, path.join(dir, 'link.jsonl'));
    const cases: [string[], string][] = [
      [['cluster', '--model', 'm', '--input', corpus, '--column', '0', '--k', '1', '--output', corpus], `--output ${corpus} would overwrite the input ${corpus}`],
      [['embed', '--model', 'm', '--input', corpus, '--column', '0', '--output', path.join(dir, 'link.jsonl')],
        `--output ${path.join(dir, 'link.jsonl')} would overwrite the input ${corpus}`],
      [['data', 'subset', '--input', corpus, '--output', corpus, '--count', '1'], `--output ${corpus} would overwrite the input ${corpus}`],
      [['data', 'subset', '--input', path.join(dir, 'c.manifest.json'), '--output', path.join(dir, 'c.txt'), '--count', '1'],
        `its manifest ${path.join(dir, 'c.manifest.json')} would overwrite the input ${path.join(dir, 'c.manifest.json')}`],
    ];
    for (const [argv, message] of cases) {
      assert.deepEqual(await parseFailure(argv), { message: `micse: ${message}`, exitCode: 2 }, argv.join(' '));
    }
    assert.equal(readFileSync(corpus, 'utf8'), 'a b\nc d\n');
    assert.deepEqual(readdirSync(dir).sort(), ['c.manifest.json', 'c.tsv', 'link.jsonl']);
  });

  it('an existing output file is refused before any work unless --force; an --json path it cannot write is refused before evaluating, exit 2', async () => {
    const dir = path.join(TMP, 'outputs-exist');
    mkdirSync(path.join(dir, 'a-dir.json'), { recursive: true });
    const corpus = path.join(dir, 'c.txt');
    writeFileSync(corpus, 'a b\nc d\n');
    const old = ['o.jsonl', 'k.tsv', 's.txt', 't.manifest.json', 'r.json', 'a-file'].map((f) => path.join(dir, f));
    for (const f of old) writeFileSync(f, 'old\n');
    const [embedOut, clusterOut, subsetOut, manifestOut, report, file] = old as [string, string, string, string, string, string];
    // --model m and --data (default data/senteval) do not exist: a refusal naming the output shows it comes first.
    const evalArgs = ['eval', '--model', 'm', '--tasks', 'stsb-dev', '--json'];
    const cases: [string[], string][] = [
      [['embed', '--model', 'm', '--input', corpus, '--output', embedOut], `${embedOut} exists; pass --force to replace it, or choose another --output`],
      [['cluster', '--model', 'm', '--input', corpus, '--k', '1', '--output', clusterOut], `${clusterOut} exists; pass --force to replace it, or choose another --output`],
      [['data', 'subset', '--input', corpus, '--output', subsetOut, '--count', '1'], `${subsetOut} exists; pass --force to replace it, or choose another --output`],
      [['data', 'subset', '--input', corpus, '--output', path.join(dir, 't.txt'), '--count', '1'], `${manifestOut} exists; pass --force to replace it, or choose another --output`],
      [[...evalArgs, report], `${report} exists; pass --force to replace it, or choose another --json`],
      [[...evalArgs, path.join(dir, 'r.txt')], `${path.join(dir, 'r.txt')}: --json must end in .json`],
      [[...evalArgs, path.join(dir, 'a-dir.json')], `cannot write ${path.join(dir, 'a-dir.json')}: it is a directory (EISDIR)`],
      [[...evalArgs, path.join(file, 'r.json')], `cannot create directory ${file}: a file is in the way (EEXIST)`],
      [[...evalArgs, path.join(file, 'sub', 'r.json')], `cannot create directory ${path.join(file, 'sub')}: a component of the path is a file, not a directory (ENOTDIR)`],
      // With --force the command goes on to its next check.
      [['embed', '--model', 'm', '--input', path.join(dir, 'none.txt'), '--output', embedOut, '--force'], `cannot read corpus ${path.join(dir, 'none.txt')}: ENOENT`],
      [[...evalArgs, report, '--force'], `SentEval data not found at ${path.resolve('data', 'senteval')}: run \`npx micse data download senteval\` ` +
        '(needs internet access) or pass --data DIR (the folder holding STS/ and SICK/)'],
    ];
    for (const [argv, message] of cases) {
      assert.deepEqual(await parseFailure(argv), { message: `micse: ${message}`, exitCode: 2 }, argv.join(' '));
    }
    for (const f of old) assert.equal(readFileSync(f, 'utf8'), 'old\n', f);
    assert.deepEqual(readdirSync(dir).sort(), ['a-dir.json', 'a-file', 'c.txt', 'k.tsv', 'o.jsonl', 'r.json', 's.txt', 't.manifest.json']);
    await buildCli(['data', 'subset', '--input', corpus, '--output', subsetOut, '--count', '1', '--force']).parseAsync();
    assert.equal(readFileSync(subsetOut, 'utf8').split('\n').length, 2, 'replaced by the one-sentence subset');
  });

  it('data subset without --count or --fraction is refused (it would copy the whole corpus), nothing written, exit 2', async () => {
    const dir = path.join(TMP, 'subset-size');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'c.txt'), 'a b\nc d\n');
    assert.deepEqual(await parseFailure(['data', 'subset', '--input', path.join(dir, 'c.txt'), '--output', path.join(dir, 's.txt')]),
      { message: 'micse: give --count N or --fraction F (how many sentences to draw)', exitCode: 2 });
    assert.deepEqual(readdirSync(dir), ['c.txt']);
  });

  it('a command named without its subcommand or its argument says what to name, one line, exit 2', async () => {
    const cases: [string[], string][] = [
      [['data'], 'name a data command: subset or download'],
      [['index'], 'name an index command: build'],
      [['sweep', 'report'], 'sweep report: name <dir> (sweep output directory)'],
      [['data', 'download'], 'data download: name <datasets..> (what to fetch: wiki1m, senteval, fewshot-subsets)'],
    ];
    for (const [argv, message] of cases) {
      assert.deepEqual(await parseFailure(argv), { message: `micse: ${message}`, exitCode: 2 }, argv.join(' '));
    }
  });

  it('a missing required flag is named as typed, with its description, on every command, one line, exit 2', async () => {
    assert.deepEqual(await parseFailure(['embed', '--model', 'm']), {
      message: 'micse: embed: missing --input (.txt (one sentence per line), .csv or .tsv), --output (.jsonl ({"text","embedding"} per line) or .npy)',
      exitCode: 2,
    });
    assert.deepEqual(await parseFailure(['search']), { message: 'micse: search: missing --index (index directory written by `micse index build`)', exitCode: 2 });
    // Every command and subcommand that demands a flag (yargs said "Missing required arguments: input, output").
    const demanding = [['embed'], ['export'], ['cluster'], ['index', 'build'], ['search'], ['data', 'subset'], ['worker']];
    for (const p of demanding) {
      const { message, exitCode } = await parseFailure(p);
      assert.equal(exitCode, 2, p.join(' '));
      assert.match(message, new RegExp(`^micse: ${p.join(' ')}: missing --[a-z-]+ \\([^\\n]+\\)$`), p.join(' '));
      assert.doesNotMatch(message, /Missing required/, p.join(' '));
    }
  });

  it('an unknown command or subcommand lists the valid ones, with the nearest; a word left over is named, one line, exit 2', async () => {
    const top = commands.map((c) => String(c.command).split(' ')[0]).join(', ');
    const cases: [string[], string][] = [
      [['bogus'], `unknown command 'bogus'; commands: ${top}`],
      [['embd', '--model', 'm'], `unknown command 'embd' (did you mean 'embed'?); commands: ${top}`],
      // Before its flags are checked: they depend on the command meant.
      [['bogus', '--qiet'], `unknown command 'bogus'; commands: ${top}`],
      [['data', 'bogus'], "unknown data command 'bogus'; data commands: subset, download"],
      [['data', 'subst'], "unknown data command 'subst' (did you mean 'subset'?); data commands: subset, download"],
      [['index', 'biuld'], "unknown index command 'biuld' (did you mean 'build'?); index commands: build"],
      [['sweep', 'stats'], "unknown sweep command 'stats' (did you mean 'status'?); sweep commands: status, report"],
      [['embed', 'extra', '--model', 'm'], "embed: unexpected argument 'extra'"],
      [['sweep', 'report', 'dir', 'x', 'y'], "sweep report: unexpected arguments 'x', 'y'"],
      [[], `name a command: ${top}`],
    ];
    for (const [argv, message] of cases) {
      assert.deepEqual(await parseFailure(argv), { message: `micse: ${message}`, exitCode: 2 }, argv.join(' '));
    }
  });

  it('the data layer\'s errors name the flag the value came from (data subset, embed), a config\'s the config key, exit 2', async () => {
    const dir = path.join(TMP, 'flag-names');
    mkdirSync(dir);
    const corpus = path.join(dir, 'c.txt');
    writeFileSync(corpus, 'a b\nc d\n');
    const subset = ['data', 'subset', '--input', corpus, '--output', path.join(dir, 's.txt')];
    const txt = `${corpus}: --column is set (x) but the file is read as one sentence per line; use a .csv/.tsv file`;
    const cases: [string[], string][] = [
      [[...subset, '--count', '3'], `--count 3 is larger than ${corpus} (2 sentences)`],
      [[...subset, '--count', '1', '--column', 'x'], `${txt} or --format csv/tsv`],
      [[...subset, '--count', '1', '--format', 'csv', '--blank-lines', 'keep'],
        `${corpus}: --blank-lines keep applies to .txt corpora (one sentence per line); blank CSV/TSV records are always skipped`],
      // embed has no --format: the message suggests none.
      [['embed', '--model', 'm', '--input', corpus, '--output', path.join(dir, 'e.jsonl'), '--column', 'x'], txt],
    ];
    for (const [argv, message] of cases) {
      assert.deepEqual(await parseFailure(argv), { message: `micse: ${message}`, exitCode: 2 }, argv.join(' '));
    }
    assert.deepEqual(readdirSync(dir), ['c.txt']);
    // --seed's range is checked as the flag is parsed; a value it let through that the draw refuses would name it too.
    await assert.rejects(loadTrainingSentences({ path: corpus, count: 1, subsetSeed: 0.5, names: { subsetSeed: '--seed' } }),
      { name: 'UserError', message: '--seed must be a non-negative integer, got 0.5' });
    // Without names (a training config), the config keys.
    await assert.rejects(loadTrainingSentences({ path: corpus, count: 3 }), { name: 'UserError', message: `data.count 3 is larger than ${corpus} (2 sentences)` });
    await assert.rejects(loadTrainingSentences({ path: corpus, column: 'x' }),
      { name: 'UserError', message: `${corpus}: data.column is set (x) but the file is read as one sentence per line; use a .csv/.tsv file or data.format csv/tsv` });
  });

  it('a corpus line longer than MAX_LINE_BYTES: data subset, embed and index build say FILE:LINE before any work, nothing written, exit 2', async () => {
    const dir = path.join(TMP, 'long-line');
    mkdirSync(dir);
    const corpus = path.join(dir, 'c.txt');
    writeFileSync(corpus, `one\n${'x'.repeat(MAX_LINE_BYTES + 1)}\nthree\n`);
    const message = `micse: ${corpus}:2: line longer than ${MAX_LINE_BYTES} bytes: a corpus holds one sentence or record per line ` +
      '(is this a JSON dump, or a compressed or binary file?)';
    for (const argv of [
      ['data', 'subset', '--input', corpus, '--output', path.join(dir, 's.txt'), '--count', '1'],
      ['data', 'subset', '--input', corpus, '--output', path.join(dir, 's.txt'), '--count', '1', '--on-invalid', 'fail'],
      ['embed', '--model', path.join(dir, 'm'), '--input', corpus, '--output', path.join(dir, 'e.jsonl')],
      ['index', 'build', '--model', path.join(dir, 'm'), '--corpus', corpus, '--out', path.join(dir, 'out'), '--backend', 'cpu'],
    ]) {
      assert.deepEqual(await parseFailure(argv), { message, exitCode: 2 }, argv.join(' '));
    }
    assert.deepEqual(readdirSync(dir), ['c.txt']);
  });

  it('index build reads its corpus and checks --out before the backend and the model: their faults are said first, nothing written, exit 2', async () => {
    const dir = path.join(TMP, 'index-corpus');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'c.txt'), 'a b\nc d\n');
    writeFileSync(path.join(dir, 'empty.txt'), '\n\n');
    writeFileSync(path.join(dir, 'c.tsv'), 'id\ttext\n1\ta b\n');
    mkdirSync(path.join(dir, 'other'));
    writeFileSync(path.join(dir, 'other', 'notes.txt'), 'mine\n');
    // --model m does not exist: a corpus message shows the corpus came first.
    const build = (corpus: string, ...extra: string[]) =>
      ['index', 'build', '--model', path.join(dir, 'm'), '--corpus', path.join(dir, corpus), '--out', path.join(dir, 'out'), '--backend', 'cpu', ...extra];
    const cases: [string[], string][] = [
      [build('none.txt'), `cannot read corpus ${path.join(dir, 'none.txt')}: ENOENT`],
      [build('c.txt', '--column', 'x'), `${path.join(dir, 'c.txt')}: --column is set (x) but the file is read as one sentence per line; use a .csv/.tsv file`],
      [build('empty.txt'), `${path.join(dir, 'empty.txt')}: no sentences to index (the file is empty or every line is blank)`],
      [build('c.tsv', '--column', 'txt'), `${path.join(dir, 'c.tsv')}:1: --column "txt" is not in the header [id, text]`],
      // A good corpus: then --out, a folder of something else than an index.
      [[...build('c.txt').slice(0, -3), path.join(dir, 'other'), '--backend', 'cpu'],
        `${path.join(dir, 'other')}: not empty (1 entry) and not an index (no meta.json or progress.json); pass --force to replace it, or choose another --out. Nothing was written`],
      // Then the model.
      [build('c.txt'), `${path.join(dir, 'm')}: no such directory`],
    ];
    for (const [argv, message] of cases) {
      assert.deepEqual(await parseFailure(argv), { message: `micse: ${message}`, exitCode: 2 }, argv.join(' '));
    }
    assert.deepEqual(readdirSync(dir).sort(), ['c.tsv', 'c.txt', 'empty.txt', 'other']);
    assert.deepEqual(readdirSync(path.join(dir, 'other')), ['notes.txt']);
  });

  it('a misspelt flag is named, with the flag meant, on every command, exit 2', async () => {
    assert.deepEqual(await parseFailure(['train', '--confg', 'x.yaml']), { message: 'micse: unknown option --confg (did you mean --config?)', exitCode: 2 });
    assert.deepEqual(await parseFailure(['embed', '--batch-sise', '8']), { message: 'micse: unknown option --batch-sise (did you mean --batch-size?)', exitCode: 2 });
    assert.deepEqual(await parseFailure(['train', '--config', 'x.yaml', '--no-quite', '-z']),
      { message: 'micse: unknown option --quite (did you mean --quiet?); unknown option -z', exitCode: 2 });
    // Every command and subcommand (the names as `micse --help` lists them).
    const paths = [
      ...commands.map((c) => [String(c.command).split(' ')[0]!]),
      ['index', 'build'], ['sweep', 'status'], ['sweep', 'report', 'dir'], ['data', 'subset'], ['data', 'download', 'senteval'],
    ];
    assert.ok(paths.length >= 12, `${paths.length} command paths`);
    for (const p of paths) {
      const { message, exitCode } = await parseFailure([...p, '--qiet']);
      assert.equal(exitCode, 2, p.join(' '));
      assert.match(message, /^micse: unknown option --qiet( \(did you mean --[a-z-]+\?\))?$/, p.join(' '));
    }
  });
});

describe('file-system faults as one line', () => {
  it('maps Node error codes to "cannot VERB PATH: cause (CODE)"', () => {
    const fault = (code: string, syscall: string, extra: Record<string, string> = {}) =>
      Object.assign(new Error(`${code}: ${syscall}`), { code, syscall, ...extra });
    assert.equal(environmentError(fault('ENOSPC', 'write'), 'run/model.safetensors', 'write')?.message,
      'cannot write run/model.safetensors: no space left on device (ENOSPC)');
    assert.equal(environmentError(fault('EROFS', 'mkdir', { path: 'out/a' }))?.message, 'cannot create directory out/a: read-only file system (EROFS)');
    assert.equal(environmentError(fault('EDQUOT', 'write'))?.message, 'cannot write: disk quota exceeded (EDQUOT)');
    assert.equal(environmentError(fault('EACCES', 'rename', { path: 'a.tmp', dest: 'a' }))?.message, 'cannot rename a.tmp to a: permission denied (EACCES)');
    assert.equal(environmentError(fault('ENOENT', 'spawn redis-server', { path: 'redis-server' }))?.message,
      'cannot run redis-server: no such file or directory (ENOENT)');
    assert.equal(environmentError(fault('EPERM', 'kill')), null);
    assert.equal(environmentError(new Error('a bug')), null);
    assert.equal(environmentError(fault('ECONNREFUSED', 'connect')), null);
    const user = new UserError('bad input');
    assert.equal(environmentError(user), user);
  });

  it('writeFileAtomic and ensureDir name the path in the way and leave no temporary file', async () => {
    const dir = path.join(TMP, 'in-the-way');
    mkdirSync(path.join(dir, 'a-dir.json'), { recursive: true });
    writeFileSync(path.join(dir, 'a-file'), 'x');
    await assert.rejects(writeFileAtomic(path.join(dir, 'a-dir.json'), '{}'),
      { name: 'UserError', message: `cannot write ${path.join(dir, 'a-dir.json')}: it is a directory (EISDIR)` });
    await assert.rejects(writeFileAtomic(path.join(dir, 'a-file', 'x.json'), '{}'),
      { name: 'UserError', message: `cannot create directory ${path.join(dir, 'a-file')}: a file is in the way (EEXIST)` });
    await assert.rejects(ensureDir(path.join(dir, 'a-file', 'sub', 'deeper')),
      { name: 'UserError', message: `cannot create directory ${path.join(dir, 'a-file', 'sub', 'deeper')}: a component of the path is a file, not a directory (ENOTDIR)` });
    // data subset writes its lines through a temporary file too.
    const input = path.join(dir, 'in.txt');
    writeFileSync(input, 'a\nb\nc\n');
    await assert.rejects(writeSubset({ path: input, count: 2, subsetSeed: 48, output: path.join(dir, 'a-dir.json') }),
      { name: 'UserError', message: `cannot write ${path.join(dir, 'a-dir.json')}: it is a directory (EISDIR)` });
    assert.deepEqual(temporaries(dir), []);
  });
});

const MODEL = shared('hf-reference', 'tiny-h32-l4');

type DriverResult = { argv: string[]; exitCode: number; message: string };

/**
 * Runs test/cli-driver.ts over `runs` from the repository root, inside `bash -c "<setup>; exec driver"` and
 * after `wrapper` (e.g. unshare): one process for all of them.
 */
function drive(runs: string[][], setup: string, wrapper: string[] = []): DriverResult[] {
  const cmd = [...wrapper, 'bash', '-c', `${setup}\nexec "$@"`, 'micse-driver', process.execPath, '--import', 'tsx', path.join(ROOT, 'test', 'cli-driver.ts'), JSON.stringify(runs)];
  const r = spawnSync(cmd[0]!, cmd.slice(1), { cwd: ROOT, encoding: 'utf8' });
  const results = r.stdout.split('\n').filter((l) => l.startsWith('RESULT ')).map((l) => JSON.parse(l.slice(7)) as DriverResult);
  assert.equal(results.length, runs.length, `driver exited with ${r.status}: ${r.stderr.slice(-2000)}`);
  return results;
}

/** How this machine can make a directory read-only for the driver: chmod unless root; as root a read-only bind mount. */
function readOnlyMethod(dir: string): { setup: string; wrapper: string[] } | string {
  if (process.getuid?.() !== 0) return { setup: `chmod 0555 '${dir}'`, wrapper: [] };
  const mount = `mount --bind '${dir}' '${dir}' && mount -o remount,bind,ro '${dir}' '${dir}'`;
  const probe = spawnSync('unshare', ['--mount', 'bash', '-c', `${mount} && ! touch '${dir}/probe' 2>/dev/null`], { encoding: 'utf8' });
  rmSync(path.join(dir, 'probe'), { force: true });
  return probe.status === 0 ? { setup: mount, wrapper: ['unshare', '--mount'] }
    : 'running as root, where chmod does not stop writes, and no private read-only mount can be made here (unshare --mount needs CAP_SYS_ADMIN)';
}

describe('environment faults in real commands', { skip: SKIP_NO_SHARED }, () => {
  const work = path.join(TMP, 'work');
  const small = path.join(work, 'small.txt');
  const corpus = path.join(work, 'corpus.txt');
  // STS-B dev cut to 16 pairs: the run's evaluation before its first checkpoint takes no time.
  const senteval = path.join(work, 'senteval');
  before(() => {
    mkdirSync(path.join(senteval, 'STS', 'STSBenchmark'), { recursive: true });
    writeFileSync(small, ['a man is playing a guitar .', 'a woman is slicing an onion .', 'the cat sleeps .', 'stocks fell today .'].join('\n') + '\n');
    const sentences = readFileSync(shared('wiki1m-head.txt'), 'utf8').split('\n').filter((l) => l.trim() !== '');
    writeFileSync(corpus, sentences.slice(0, 300).join('\n') + '\n');
    writeFileSync(path.join(senteval, 'STS', 'STSBenchmark', 'sts-dev.csv'),
      readFileSync(shared('senteval', 'STS', 'STSBenchmark', 'sts-dev.csv'), 'utf8').split('\n').slice(0, 16).join('\n') + '\n');
  });
  const embed = (input: string, output: string) => ['embed', '--model', MODEL, '--input', input, '--output', output, '--backend', 'wasm'];
  const train = (output: string) => ['train', '--config', 'configs/tiny.yaml', '--set', `train.output=${output}`, '--set', 'data.count=64',
    '--set', `data.senteval=${senteval}`, '--set', 'train.maxSteps=1', '--set', 'train.evalSteps=1', '--set', 'train.finalEval=false',
    '--set', 'train.backend=wasm', '--quiet'];
  const indexBuild = (out: string, input = small) => ['index', 'build', '--model', MODEL, '--corpus', input, '--out', out, '--backend', 'wasm'];

  it('a read-only output directory: train, export, embed, index build, sweep, cluster', (t) => {
    const ro = path.join(TMP, 'read-only');
    mkdirSync(ro);
    const how = readOnlyMethod(ro);
    if (typeof how === 'string') return t.skip(how);
    const results = drive([
      train(path.join(ro, 'run')),
      ['export', '--checkpoint', MODEL, '--output', path.join(ro, 'exported'), '--format', 'hf', '--backend', 'cpu'],
      embed(small, path.join(ro, 'out.jsonl')),
      embed(small, path.join(ro, 'sub', 'out.npy')),
      indexBuild(path.join(ro, 'index')),
      ['sweep', '--config', 'configs/sweeps/tiny.yaml', '--out', path.join(ro, 'sweep'), '--quiet'],
      ['cluster', '--model', MODEL, '--input', small, '--k', '2', '--output', path.join(ro, 'clusters.tsv'), '--backend', 'cpu'],
    ], how.setup, how.wrapper);
    const cause = '(read-only file system \\(EROFS\\)|permission denied \\(EACCES\\))';
    const expected = [
      `cannot create directory ${ro}/run: ${cause}`,
      `cannot write ${ro}/exported: ${cause}`,
      `cannot write ${ro}/out\\.jsonl: ${cause}`,
      `cannot create directory ${ro}/sub: ${cause}`,
      `cannot create directory ${ro}/index: ${cause}`,
      `cannot create directory ${ro}/sweep: ${cause}`,
      `cannot write ${ro}/clusters\\.tsv: ${cause}`,
    ];
    results.forEach((r, i) => {
      assert.equal(r.exitCode, 2, `${r.argv.join(' ')}: ${r.message}`);
      assert.match(r.message, new RegExp(`^micse: ${expected[i]}$`), r.argv.join(' '));
    });
    assert.deepEqual(readdirSync(ro), []);
  });

  it('a full disk (a file size limit: embed, index build, train, export) and output paths that are files or directories: the path, the cause, no temporary file', () => {
    const out = path.join(TMP, 'full');
    mkdirSync(path.join(out, 'a-dir.jsonl'), { recursive: true });
    const file = path.join(out, 'a-file');
    writeFileSync(file, 'x');
    const results = drive([
      embed(corpus, path.join(out, 'big.jsonl')),
      indexBuild(path.join(out, 'index'), corpus),
      train(path.join(out, 'run')),
      ['export', '--checkpoint', MODEL, '--output', path.join(out, 'exported'), '--format', 'hf', '--backend', 'wasm'],
      embed(small, path.join(out, 'a-dir.jsonl')),
      embed(small, path.join(file, 'out.jsonl')),
      indexBuild(file),
      train(path.join(file, 'run')),
    ], 'ulimit -f 64'); // KiB: the corpus' vectors (38 KiB) and texts fit; its index, embeddings and the model do not
    const expected = [
      `cannot write ${out}/big\\.jsonl: file too large \\(EFBIG\\)`,
      `cannot write ${out}/index/index\\.usearch: usearch could not save the index \\(Failed to serialize into stream\\); [\\d.]+ MiB free on its file system`,
      `cannot write ${out}/run/checkpoints/step-000001\\.tmp-\\d+/model\\.safetensors: file too large \\(EFBIG\\)`,
      `cannot write ${out}/exported\\.tmp-export-\\d+/model\\.safetensors: file too large \\(EFBIG\\)`,
      `cannot write ${out}/a-dir\\.jsonl: it is a directory \\(EISDIR\\)`,
      `cannot create directory ${file}: a file is in the way \\(EEXIST\\)`,
      `cannot create directory ${file}: a file is in the way \\(EEXIST\\)`,
      `cannot create directory ${file}/run: a component of the path is a file, not a directory \\(ENOTDIR\\)`,
    ];
    results.forEach((r, i) => {
      assert.equal(r.exitCode, 2, `${r.argv.join(' ')}: ${r.message}`);
      assert.match(r.message, new RegExp(`^micse: ${expected[i]}$`), r.argv.join(' '));
    });
    assert.deepEqual(temporaries(out), []);
    assert.equal(readFileSync(file, 'utf8'), 'x');
  });
});
