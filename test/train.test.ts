/**
 * Trainer acceptance (issue 6): config errors, an AdamW step checked by hand, exact resume after SIGKILL,
 * flat tensor count, and the tiny config end to end through the CLI.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { selectBackend } from '../src/model/backend.js';
import { qkvPart, unpackQkv } from '../src/model/bert.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { readSafetensors, writeSafetensors } from '../src/model/safetensors.js';
import { tf } from '../src/model/tf.js';
import { infoNCE } from '../src/losses/infoNCE.js';
import { embed } from '../src/model/embed.js';
import { defaultConfig, loadConfig } from '../src/train/config.js';
import { decays } from '../src/train/adamw.js';
import { selectBackendAndModel, train, type MetricsLine } from '../src/train/trainer.js';
import { explainAbort, stepWhat, WASM_HEAP_BYTES, wasmStepBytes } from '../src/train/step.js';
import { UserError } from '../src/errors.js';
import { assertExactResume, microConfig, ROOT, shared, SKIP_NO_SHARED, testTempDir } from './helpers.js';

const run = promisify(execFile);
const CLI = path.join(ROOT, 'bin', 'micse.js');

const TMP = testTempDir('train');

async function tmp(prefix: string): Promise<string> {
  return fs.mkdtemp(path.join(TMP, `${prefix}-`));
}


async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [CLI, ...args], { cwd: ROOT, maxBuffer: 1 << 24 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

before(async () => {
  await selectBackend('cpu');
});

describe('config validation', () => {
  it('unknown key, wrong type, out of range, bad extends: errors name the key', async () => {
    const dir = await tmp('cfg');
    const write = async (name: string, text: string) => {
      const f = path.join(dir, name);
      await fs.writeFile(f, text);
      return f;
    };
    await assert.rejects(loadConfig(await write('a.yaml', 'train:\n  batchSzie: 8\n')), /unknown key 'train\.batchSzie' \(did you mean 'train\.batchSize'\?\)/);
    await assert.rejects(loadConfig(await write('b.yaml', 'train:\n  batchSize: eight\n')), /train\.batchSize must be an integer/);
    await assert.rejects(loadConfig(await write('c.yaml', 'optim:\n  learningRate: -1\n')), /optim\.learningRate must be > 0/);
    await assert.rejects(loadConfig(await write('d.yaml', 'objective:\n  style: mice\n')), /did you mean 'micse'/);
    await assert.rejects(loadConfig(await write('e.yaml', 'objective:\n  minLayer: 7\n  maxLayer: 10\n')), /must be even/);
    // simcse reads no attention layers, so the AMI span is not its concern (as in micseLoss).
    assert.equal((await loadConfig(await write('e2.yaml', 'objective:\n  style: simcse\n  minLayer: 7\n  maxLayer: 10\n'))).config.objective.maxLayer, 10);
    await assert.rejects(loadConfig(await write('f.yaml', 'trian:\n  seed: 1\n')), /unknown section 'trian' \(did you mean 'train'\?\)/);
    await assert.rejects(loadConfig(path.join(dir, 'missing.yaml')), /missing\.yaml: cannot read config/);
    const child = await write('g.yaml', 'extends: b2.yaml\ntrain:\n  seed: 3\n');
    await write('b2.yaml', 'train:\n  seed: 1\n  batchSize: 4\n');
    const { config } = await loadConfig(child, ['optim.learningRate=2e-5']);
    assert.equal(config.train.seed, 3);
    assert.equal(config.train.batchSize, 4);
    assert.equal(config.optim.learningRate, 2e-5);
    await assert.rejects(loadConfig(child, ['train.nope=1']), /unknown key 'train\.nope'/);
  });

  it('the shipped configs load', async () => {
    for (const f of ['configs/micse-bert-base.yaml', 'configs/simcse-bert-base.yaml', 'configs/tiny.yaml']) {
      const { config } = await loadConfig(path.join(ROOT, f));
      assert.equal(config.objective.temperature, 0.05, f);
    }
  });

  it('configs/tiny.yaml sets only keys whose values differ from the schema defaults', async () => {
    const raw = YAML.parse(await fs.readFile(path.join(ROOT, 'configs', 'tiny.yaml'), 'utf8')) as Record<string, Record<string, unknown>>;
    const defaults = defaultConfig() as unknown as Record<string, Record<string, unknown>>;
    for (const [sec, keys] of Object.entries(raw)) {
      for (const [k, v] of Object.entries(keys)) assert.notDeepEqual(v, defaults[sec]![k], `${sec}.${k} repeats its default`);
    }
  });

  it('CLI: unknown key, wrong type, missing data file exit 2, name it, and create nothing', { skip: SKIP_NO_SHARED }, async () => {
    const dir = await tmp('cli');
    const out = path.join(dir, 'run');
    const tiny = path.join(ROOT, 'configs', 'tiny.yaml');
    const cases: [string[], RegExp][] = [
      [['--set', 'train.bachSize=4'], /unknown key 'train\.bachSize' \(did you mean 'train\.batchSize'\?\)/],
      [['--set', 'train.batchSize=many'], /train\.batchSize must be an integer/],
      [['--set', `data.train=${path.join(dir, 'nope.txt')}`], /nope\.txt/],
    ];
    for (const [extra, pattern] of cases) {
      const r = await cli(['train', '--config', tiny, '--set', `train.output=${out}`, ...extra]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, pattern);
      assert.equal(await fs.access(out).then(() => true, () => false), false, 'no run directory created');
    }
  });
});

describe('a wasm heap abort or a webgpu allocation failure in a step', () => {
  it('becomes a UserError naming the heap and what to change on wasm; other errors and backends pass through', async () => {
    const rows = { inputIds: [[1, 2, 3], [1, 2, 3]], attentionMask: [[1, 1, 1], [1, 1, 1]] };
    const abort = new WebAssembly.RuntimeError('Aborted(). Build with -sASSERTIONS for more info.');
    const other = new Error('something else');
    await selectBackend('wasm');
    const e = explainAbort(abort, stepWhat(rows));
    assert.ok(e instanceof UserError);
    assert.match(e.message, /4 GB heap in a training step of 2 rows x 3 tokens.*train\.batchSize or data\.maxSeqLen.*--backend cpu \(no heap limit.*webgpu/);
    assert.equal(explainAbort(other, stepWhat(rows)), other);
    await selectBackend('cpu');
    assert.equal(explainAbort(abort, stepWhat(rows)), abort, 'only the wasm module aborts this way');
  });

  it('an upload the webgpu device cannot allocate (a RangeError from createBuffer) becomes the out-of-memory UserError', () => {
    const rows = { inputIds: [[1, 2, 3], [1, 2, 3]], attentionMask: [[1, 1, 1], [1, 1, 1]] };
    const e = explainAbort(new RangeError('createBuffer failed to allocate a buffer mapped at creation.'), stepWhat(rows));
    assert.ok(e instanceof UserError);
    assert.equal(e.message, 'the webgpu device ran out of memory in a training step of 2 rows x 3 tokens (createBuffer failed to ' +
      'allocate a buffer mapped at creation.): lower train.batchSize or data.maxSeqLen, or choose another backend (--backend)');
    const other = new RangeError('Invalid array length');
    assert.equal(explainAbort(other, stepWhat(rows)), other);
  });
});

describe('backend auto and the wasm heap', { skip: SKIP_NO_SHARED }, () => {
  it('auto passes over wasm when a step would not fit its 4 GB heap and says why; an explicit wasm is kept', async () => {
    // The tiny test model at 2^20 sentences a batch x 2 views x 16 tokens: far past 4 GB by the estimate.
    const big = microConfig(await tmp('autoheap'), { train: { backend: 'auto', batchSize: 2 ** 20 } });
    try {
      const auto = await selectBackendAndModel(big, null, 2 ** 20);
      auto.model.dispose();
      assert.notEqual(auto.selection.name, 'wasm');
      const wasm = auto.selection.attempts.find((a) => a.name === 'wasm');
      if (auto.selection.name === 'cpu') {
        // tensorflow and webgpu were skipped (not installed, no adapter), so auto reached wasm and passed over it.
        assert.equal(wasm?.ok, false);
        assert.match(wasm!.reason, /^a training step of this model at batch 1048576 x 2 views x data\.maxSeqLen 16 needs ~\d+\.\d GB \(estimated\), past wasm's 4 GB heap$/);
      }
      const small = await selectBackendAndModel(microConfig(await tmp('autoheap'), { train: { backend: 'auto' } }), null, 48);
      small.model.dispose();
      assert.equal(small.wasmShortfall, null);
      const explicit = await selectBackendAndModel({ ...big, train: { ...big.train, backend: 'wasm' } }, null, 2 ** 20);
      explicit.model.dispose();
      assert.equal(explicit.selection.name, 'wasm');
      assert.match(explicit.wasmShortfall ?? '', /past wasm's 4 GB heap/);
    } finally {
      await selectBackend('cpu');
    }
  });

  it('the heap estimate: BERT-base at batch 64 is past 4 GB, at batch 16 (measured 3.5 GB) within it', () => {
    const base = { params: 109_482_240, vocabSize: 30522, hiddenSize: 768, intermediateSize: 3072, heads: 12, layers: 12, seqLen: 32 };
    assert.ok(wasmStepBytes({ ...base, tokens: 2 * 64 * 32 }) > 2 * WASM_HEAP_BYTES);
    const b16 = wasmStepBytes({ ...base, tokens: 2 * 16 * 32 });
    assert.ok(b16 > 3.5e9 && b16 < WASM_HEAP_BYTES, `${b16}`);
  });
});

describe('optimisation', { skip: SKIP_NO_SHARED }, () => {
  it('one step with dropout 0 and lambda 0 equals an AdamW step computed here', async () => {
    const out = path.join(await tmp('adamw'), 'run');
    const ckpt = shared('hf-reference', 'tiny-h32-l4');
    const lr = 1e-3;
    const wd = 0.01;
    const maxGradNorm = 0.5;
    const config = microConfig(out, {
      model: { init: ckpt, tokenizer: null, config: null, hiddenDropout: 0, attentionDropout: 0 },
      data: { count: 6 },
      objective: { style: 'simcse', lambda: 0, pooler: 'cls_before_pooler', minLayer: 0, maxLayer: 2 },
      optim: { learningRate: lr, weightDecay: wd, maxGradNorm },
      train: { batchSize: 6, maxSteps: 1, evalSteps: 1 },
    });
    await train(config, { quiet: true, log: () => undefined });

    // Independently: the same 6 sentences (one batch: the loss is invariant to their order without dropout).
    const { model, tokenizer } = await loadPretrained(ckpt);
    const text = await fs.readFile(shared('wiki1m-head.txt'), 'utf8');
    const manifest = JSON.parse(await fs.readFile(path.join(out, 'subset-manifest.json'), 'utf8')) as { subset: { sha256: string } };
    assert.ok(manifest.subset.sha256.length > 0);
    const { loadTrainingSentences } = await import('../src/data/subset.js');
    const { sentences } = await loadTrainingSentences({ path: shared('wiki1m-head.txt'), count: 6, subsetSeed: config.data.subsetSeed });
    assert.ok(sentences.every((s) => text.includes(s)));
    const rows = sentences.flatMap((s) => [tokenizer.encode(s, { maxLength: config.data.maxSeqLen }), tokenizer.encode(s, { maxLength: config.data.maxSeqLen })]);
    const batch = tokenizer.pad(rows);
    const names = [...model.weights.keys()].filter((n) => !n.startsWith('pooler.'));
    const vars = names.map((n) => model.weights.get(n)!);
    const { grads } = tf.variableGrads(() => {
      const ids = tf.tensor2d(batch.inputIds, undefined, 'int32');
      const mask = tf.tensor2d(batch.attentionMask, undefined, 'int32');
      const h = model.forward({ inputIds: ids, attentionMask: mask }).lastHiddenState; // [2B, T, H]
      const cls = h.slice([0, 0, 0], [h.shape[0], 1, h.shape[2]]).reshape([h.shape[0], h.shape[2]]) as tf.Tensor2D;
      const z = cls.reshape([sentences.length, 2, h.shape[2]]);
      const z1 = z.slice([0, 0, 0], [sentences.length, 1, h.shape[2]]).reshape([sentences.length, h.shape[2]]) as tf.Tensor2D;
      const z2 = z.slice([0, 1, 0], [sentences.length, 1, h.shape[2]]).reshape([sentences.length, h.shape[2]]) as tf.Tensor2D;
      return infoNCE(z1, z2, 0.05);
    }, vars);
    const g = new Map<string, Float32Array>();
    names.forEach((n, i) => g.set(n, grads[vars[i]!.name]!.dataSync() as Float32Array));
    let sq = 0;
    for (const a of g.values()) for (const x of a) sq += x * x;
    const coef = Math.min(1, maxGradNorm / (Math.sqrt(sq) + 1e-6));
    const after = (await readSafetensors(path.join(out, 'last', 'model.safetensors'))).tensors;
    const before = await model.exportTensors();
    const b1 = 0.9;
    const b2 = 0.999;
    const eps = 1e-8;
    // The checkpoint has Hugging Face names; the model packs each layer's q, k and v into one variable [H, 3H].
    const gradientOf = (n: string): Float32Array => {
      const q = qkvPart(n);
      if (q === null) return g.get(n)!;
      const packed = grads[vars[names.indexOf(q.packed)]!.name]!;
      return tf.tidy(() => unpackQkv(packed, q).dataSync() as Float32Array);
    };
    // Adam's first step moves a weight by lr * g / (|g| + eps). Where |g| is near eps (1e-8) that step depends on the
    // gradient's last float bits as much as on its value (d step / dg ~ lr / eps = 1e5), and the trainer's gradients
    // differ from these in rounding (other kernels and summation orders: the native GEMM, the q/k/v split). Those
    // weights are only checked to move by at most lr; every other weight must equal the hand-computed step.
    const ROUNDING_SENSITIVE_BELOW = 1e-6;
    let maxErr = 0;
    let checked = 0;
    let maxSensitiveStep = 0;
    let sensitive = 0;
    for (const n of [...before.keys()].filter((k) => !k.startsWith('pooler.'))) {
      const spec = before.get(n)!;
      // our gradients are in our layout: Linear weights [in, out]; the checkpoint is [out, in]
      const gv = gradientOf(n);
      const [rows0, cols0] = spec.shape.length === 2 ? spec.shape : [1, spec.shape[0]!];
      const isLinear = n.includes('.dense.weight') || /self\.(query|key|value)\.weight$/.test(n);
      for (let i = 0; i < spec.data.length; i++) {
        const r = Math.floor(i / cols0!);
        const cIdx = i % cols0!;
        const gi = (isLinear ? gv[cIdx * rows0! + r]! : gv[i]!) * coef;
        const m = (1 - b1) * gi;
        const v = (1 - b2) * gi * gi;
        const mhat = m / (1 - b1);
        const vhat = v / (1 - b2);
        let w = spec.data[i]!;
        if (decays(n)) w *= 1 - lr * wd;
        const expected = w - (lr * mhat) / (Math.sqrt(vhat) + eps);
        const got = after.get(n)!.data[i]!;
        if (gi === 0 || Math.abs(gi) >= ROUNDING_SENSITIVE_BELOW) { // a zero gradient (unused rows) is exact in both
          maxErr = Math.max(maxErr, Math.abs(got - expected));
          checked++;
        } else {
          maxSensitiveStep = Math.max(maxSensitiveStep, Math.abs(got - w));
          sensitive++;
        }
      }
    }
    assert.ok(checked > 10000 && checked > 20 * sensitive, `${checked} elements checked, ${sensitive} rounding-sensitive`);
    assert.ok(maxErr < 2e-6, `max |weight - hand AdamW| = ${maxErr}`);
    assert.ok(maxSensitiveStep <= lr * (1 + 1e-5), `a rounding-sensitive weight moved ${maxSensitiveStep}, more than lr`);
    tf.dispose(Object.values(grads));
    model.dispose();
  });

  it('non-finite losses skip the step and are counted; N in a row stop the run with a clear message', async () => {
    const out = path.join(await tmp('nan'), 'run');
    // A temperature this small turns every logit into +-Infinity, so the loss is NaN from the first step.
    const config = microConfig(out, { objective: { temperature: 1e-45 }, train: { maxBadSteps: 3, maxSteps: 10 } });
    await assert.rejects(train(config, { quiet: true, log: () => undefined }), /3 steps in a row had a non-finite loss/);
    const lines = (await fs.readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n')
      .map((l) => JSON.parse(l) as { skipped?: boolean; stsbDev?: number }).filter((l) => l.stsbDev === undefined);
    assert.equal(lines.length, 3);
    assert.ok(lines.every((l) => l.skipped === true));
  });

  it('tf.memory().numTensors is flat across 100 steps', async () => {
    const out = path.join(await tmp('mem'), 'run');
    const counts: number[] = [];
    await train(microConfig(out, { train: { maxSteps: 100, evalSteps: 1000, batchSize: 4 }, data: { count: 16 } }),
      { quiet: true, log: () => undefined, onStep: (l: MetricsLine) => void counts.push(l.step > 0 ? tf.memory().numTensors : 0) });
    assert.equal(counts.length, 100);
    const steady = counts.slice(2);
    assert.ok(steady.every((c) => c === steady[0]), `tensor counts vary: ${[...new Set(steady)].join(', ')}`);
  });
});

describe('resume', { skip: SKIP_NO_SHARED }, () => {
  it('a run killed with SIGKILL and resumed ends with bitwise the weights of an uninterrupted run', async () => {
    const dir = await tmp('resume');
    const cfgFile = async (name: string, output: string) => {
      const c = microConfig(output, { train: { maxSteps: 24, evalSteps: 4 } });
      const f = path.join(dir, `${name}.json`);
      await fs.writeFile(f, JSON.stringify(c));
      return f;
    };
    const full = path.join(dir, 'full');
    const killed = path.join(dir, 'killed');
    const r1 = await cli(['train', '--config', await cfgFile('full', full), '--quiet']);
    assert.equal(r1.code, 0, r1.stderr);

    const child = spawn(process.execPath, [CLI, 'train', '--config', await cfgFile('killed', killed), '--quiet'], { cwd: ROOT, stdio: 'ignore' });
    // Kill it once a checkpoint past step 4 exists, mid-way through later steps.
    const deadline = Date.now() + 120_000;
    for (;;) {
      const target = await fs.readlink(path.join(killed, 'last')).catch(() => null);
      if (target !== null && !target.endsWith('000004')) break;
      if (Date.now() > deadline) throw new Error('no checkpoint appeared');
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 150));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const stoppedAt = await fs.readlink(path.join(killed, 'last'));
    assert.ok(!stoppedAt.endsWith('000024'), `the run was killed before its end (at ${stoppedAt})`);
    const r2 = await cli(['train', '--resume', killed, '--quiet']);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stderr, /resuming .* at step \d+\/24/);
    for (const f of ['model.safetensors', 'mlp_head.safetensors', 'optimizer.safetensors']) {
      const a = await fs.readFile(path.join(full, 'last', f));
      const b = await fs.readFile(path.join(killed, 'last', f));
      assert.ok(a.equals(b), `${f} differs between the uninterrupted and the resumed run`);
    }
    const metricsA = (await fs.readFile(path.join(full, 'metrics.jsonl'), 'utf8')).split('\n').map((l) => l.replace(/"sentencesPerSecond":[^,}]*/, ''));
    const metricsB = (await fs.readFile(path.join(killed, 'metrics.jsonl'), 'utf8')).split('\n').map((l) => l.replace(/"sentencesPerSecond":[^,}]*/, ''));
    assert.deepEqual(metricsB, metricsA, 'the resumed metrics.jsonl equals the uninterrupted one');
  });
});

describe('STS-B dev at step 0', { skip: SKIP_NO_SHARED }, () => {
  it('is scored before any update, never selected, and a resumed run neither repeats nor drops it', async () => {
    const dir = await tmp('step0');
    // A learning rate that drives this micro model's STS-B dev below its starting value, so that selecting step 0
    // would change best/.
    const config = (output: string) => microConfig(output, { train: { maxSteps: 8, evalSteps: 4 }, optim: { learningRate: 1e-2 } });
    const full = path.join(dir, 'full');
    const result = await train(config(full), { quiet: true, log: () => undefined });
    const read = async (run: string) => (await fs.readFile(path.join(run, 'metrics.jsonl'), 'utf8')).trim().split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const lines = await read(full);
    const dev = lines.filter((l) => l['stsbDev'] !== undefined);
    assert.deepEqual(dev.map((l) => l['step']), [0, 4, 8]);
    assert.deepEqual(lines[0], { step: 0, epoch: 0, stsbDev: dev[0]!['stsbDev'], best: false }, 'the first line, before step 1');
    const [start, ...trained] = dev.map((l) => l['stsbDev'] as number);
    assert.ok(start! > Math.max(...trained), `precondition: step 0 (${start}) scores above every trained step (${trained.join(', ')})`);
    assert.equal(result.bestScore, Math.max(...trained));
    assert.notEqual(result.bestStep, 0);
    assert.match(await fs.readlink(path.join(full, 'best')), new RegExp(`step-0*${result.bestStep}$`));

    const resumed = path.join(dir, 'resumed');
    await train(config(resumed), { quiet: true, log: () => undefined, stopAfter: 4 });
    await train(config(resumed), { resume: true, quiet: true, log: () => undefined });
    const strip = (ls: Record<string, unknown>[]) => ls.map(({ sentencesPerSecond: _, ...rest }) => rest);
    assert.deepEqual(strip(await read(resumed)), strip(lines), 'one step-0 line; the resumed metrics equal the uninterrupted ones');
  });
});

describe('resume on wasm', { skip: SKIP_NO_SHARED }, () => {
  it('a run stopped after a checkpoint and resumed ends with bitwise the weights, moments and metrics of the uninterrupted run', async () => {
    try {
      await assertExactResume((output) => microConfig(output, { train: { backend: 'wasm', maxSteps: 8, evalSteps: 4 } }), await tmp('resume-wasm'), 4);
    } finally {
      await selectBackend('cpu');
    }
  });
});

describe('resume from a checkpoint of an earlier layout', { skip: SKIP_NO_SHARED }, () => {
  it('moments saved with query, key and value apart (before they were packed) resume to the uninterrupted run bitwise', async () => {
    const dir = await tmp('qkv-compat');
    const config = (output: string) => microConfig(output, { train: { maxSteps: 4, evalSteps: 2 } });
    await train(config(path.join(dir, 'full')), { quiet: true, log: () => undefined });
    const split = path.join(dir, 'split');
    await train(config(split), { quiet: true, log: () => undefined, stopAfter: 2 });
    // Rewrite the step-2 moments as the earlier layout had them: one tensor per projection, in our [in, out] layout.
    const file = path.join(split, 'last', 'optimizer.safetensors');
    const { tensors, metadata } = await readSafetensors(file);
    const earlier = new Map<string, { shape: number[]; data: Float32Array }>();
    let packed = 0;
    for (const [key, t] of tensors) {
      const m = /^(m|v)\/(encoder\.layer\.\d+\.attention\.self)\.qkv\.(weight|bias)$/.exec(key);
      if (m === null) {
        earlier.set(key, { shape: t.shape, data: t.data as Float32Array });
        continue;
      }
      packed++;
      ['query', 'key', 'value'].forEach((part, p) => {
        const name = `${m[1]}/${m[2]}.${part}.${m[3]}`;
        if (m[3] === 'bias') {
          const H = t.shape[0]! / 3;
          earlier.set(name, { shape: [H], data: (t.data as Float32Array).slice(p * H, (p + 1) * H) });
        } else {
          const [H, H3] = t.shape as [number, number];
          const w = H3 / 3;
          earlier.set(name, { shape: [H, w], data: Float32Array.from({ length: H * w }, (_, i) => (t.data as Float32Array)[Math.floor(i / w) * H3 + p * w + (i % w)]!) });
        }
      });
    }
    assert.equal(packed, 2 * 2 * 2, 'm and v of 2 layers x (weight, bias) were packed');
    await writeSafetensors(file, earlier, metadata);
    await train(config(split), { resume: true, quiet: true, log: () => undefined });
    for (const f of ['model.safetensors', 'mlp_head.safetensors', 'optimizer.safetensors']) {
      const a = await fs.readFile(path.join(dir, 'full', 'last', f));
      const b = await fs.readFile(path.join(split, 'last', f));
      assert.ok(a.equals(b), `${f} differs from the uninterrupted run's`);
    }
  });
});

describe('resume input errors', { skip: SKIP_NO_SHARED }, () => {
  it('a corrupt trainer_state.json is a one-line error naming the file; resuming nothing is too', async () => {
    const out = path.join(await tmp('corrupt'), 'run');
    const config = microConfig(out, { train: { maxSteps: 2, evalSteps: 2 } });
    await train(config, { quiet: true, log: () => undefined });
    await assert.rejects(train(microConfig(path.join(out, 'nope')), { resume: true, quiet: true, log: () => undefined }), /no checkpoint to resume from/);
    await fs.writeFile(path.join(out, 'last', 'trainer_state.json'), '{"step": 2,');
    const r = await cli(['train', '--resume', out, '--quiet']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /trainer_state\.json: invalid JSON/);
  });
});

describe('tiny config end to end', { skip: SKIP_NO_SHARED }, () => {
  it('npx micse train --config configs/tiny.yaml: InfoNCE ends well below ln(batch) (no collapse), STS-B dev from step 0, best checkpoint usable', async () => {
    const out = path.join(await tmp('tiny'), 'run');
    const r = await cli(['train', '--config', 'configs/tiny.yaml', '--set', `train.output=${out}`, '--set', 'train.finalEval=false', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    const lines = (await fs.readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const infoNCE = lines.filter((l) => l['infoNCE'] !== undefined).map((l) => l['infoNCE']!);
    const k = 8;
    const tail = infoNCE.slice(-k).reduce((a, b) => a + b) / k;
    // A collapsed encoder (every sentence the same vector) sits at ln(32) = 3.47; this config ends near 1.9.
    assert.ok(tail < Math.log(32) - 0.7, `InfoNCE of the last ${k} steps ${tail.toFixed(3)} is not clearly below ln(32) = ${Math.log(32).toFixed(3)}: collapsed`);
    const dev = lines.filter((l) => l['stsbDev'] !== undefined);
    assert.deepEqual(dev.map((l) => l['step']), [0, 16, 32, 48, 64], 'STS-B dev at step 0 and every 16 steps');
    const summary = JSON.parse(await fs.readFile(path.join(out, 'summary.json'), 'utf8')) as { bestStep: number };
    assert.notEqual(summary.bestStep, 0, 'step 0 is not a selection candidate');
    for (const f of ['loss.svg', 'stsb-dev.svg', 'config.yaml', 'summary.json']) await fs.access(path.join(out, f));
    assert.match(await fs.readFile(path.join(out, 'loss.svg'), 'utf8'), /chance: ln\(32\) = 3\.47/);
    // The best checkpoint works with loadPretrained and with `micse embed` (run directory resolves to best/).
    const best = await loadPretrained(path.join(out, 'best'));
    const vec = await embed(best.model, best.tokenizer, ['a man is playing a guitar .']);
    assert.equal(vec[0]!.length, 64);
    const input = path.join(out, 'in.txt');
    await fs.writeFile(input, 'a man is playing a guitar .\n');
    const e = await cli(['embed', '--model', out, '--input', input, '--output', path.join(out, 'e.jsonl'), '--backend', 'cpu']);
    assert.equal(e.code, 0, e.stderr);
    const row = JSON.parse((await fs.readFile(path.join(out, 'e.jsonl'), 'utf8')).trim()) as { embedding: number[] };
    row.embedding.forEach((x, i) => assert.ok(Math.abs(x - vec[0]![i]!) < 1e-4));
    best.model.dispose();
  });
});
