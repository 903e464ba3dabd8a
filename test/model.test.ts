/**
 * Foundation acceptance (issue 2): the encoder reproduces Hugging Face transformers on the shared checkpoints,
 * training-mode attention dropout behaves as HF's, memory stays flat, and bad checkpoints fail clearly.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { selectBackend } from '../src/model/backend.js';
import { BertModel } from '../src/model/bert.js';
import { parseBertConfig } from '../src/model/config.js';
import { embed } from '../src/model/embed.js';
import { resolveModelDir } from '../src/model/hub.js';
import { loadPretrained, type Pretrained } from '../src/model/pretrained.js';
import { parseSafetensors, serializeSafetensors } from '../src/model/safetensors.js';
import { tf } from '../src/model/tf.js';
import { ROOT, shared, SKIP_NO_SHARED, testTempDir } from './helpers.js';

const TMP = testTempDir('model');

const run = promisify(execFile);
const CHECKPOINTS = ['tiny-h32-l4', 'tiny-h64-l2-pretraining'];
const TOL = 1e-4;

interface ReferenceOutputs {
  input_ids: number[][];
  attention_mask: number[][];
  last_hidden_state: number[][][];
  attentions: number[][][][][];
}

before(async () => {
  await selectBackend('cpu');
});

describe('BERT encoder against Hugging Face transformers', { skip: SKIP_NO_SHARED }, () => {
  for (const name of CHECKPOINTS) {
    it(`${name}: last_hidden_state, every attention map and [CLS] embeddings within ${TOL}`, async () => {
      const dir = shared('hf-reference', name);
      const { model, tokenizer, report } = await loadPretrained(dir);
      if (name.includes('pretraining')) {
        assert.ok(report.ignored.some((n) => n.startsWith('cls.')), 'the pre-training heads are reported as ignored');
      }
      const ref = JSON.parse(readFileSync(path.join(dir, 'reference_outputs.json'), 'utf8')) as ReferenceOutputs;
      const out = tf.tidy(() => {
        const o = model.forward({
          inputIds: tf.tensor2d(ref.input_ids, undefined, 'int32'),
          attentionMask: tf.tensor2d(ref.attention_mask, undefined, 'int32'),
        }, { outputAttentions: true });
        return [o.lastHiddenState, ...o.attentions!];
      });
      const hidden = (await out[0]!.array()) as number[][][];
      let maxHidden = 0;
      ref.input_ids.forEach((row, b) => row.forEach((_, t) => {
        if (ref.attention_mask[b]![t] === 0) return;
        hidden[b]![t]!.forEach((v, k) => (maxHidden = Math.max(maxHidden, Math.abs(v - ref.last_hidden_state[b]![t]![k]!))));
      }));
      assert.ok(maxHidden < TOL, `last_hidden_state max |diff| ${maxHidden}`);
      assert.equal(out.length - 1, ref.attentions.length);
      for (let l = 0; l < ref.attentions.length; l++) {
        const a = (await out[l + 1]!.array()) as number[][][][];
        let maxAttn = 0;
        a.forEach((heads, b) => heads.forEach((rows, h) => rows.forEach((cols, q) => {
          if (ref.attention_mask[b]![q] === 0) return; // padded query rows need not match
          cols.forEach((v, k) => (maxAttn = Math.max(maxAttn, Math.abs(v - ref.attentions[l]![b]![h]![q]![k]!))));
        })));
        assert.ok(maxAttn < TOL, `layer ${l} attention max |diff| ${maxAttn}`);
      }
      tf.dispose(out);

      const st = JSON.parse(readFileSync(path.join(dir, 'st_embeddings.json'), 'utf8')) as { sentences: string[]; cls_embeddings: number[][] };
      const vectors = await embed(model, tokenizer, st.sentences, { batchSize: 4 });
      let maxEmb = 0;
      vectors.forEach((v, i) => v.forEach((x, j) => (maxEmb = Math.max(maxEmb, Math.abs(x - st.cls_embeddings[i]![j]!)))));
      assert.ok(maxEmb < TOL, `embed vs sentence-transformers max |diff| ${maxEmb}`);
      // The ids transformers used are reproduced by our tokenizer.
      const sentences = st.sentences;
      assert.deepEqual(sentences.map((s) => tokenizer.encode(s)), ref.input_ids.map((r, b) => r.filter((_, t) => ref.attention_mask[b]![t] === 1)));
      model.dispose();
    });
  }
});

describe('training mode', { skip: SKIP_NO_SHARED }, () => {
  let pre: Pretrained;
  const p = 0.1;
  before(async () => {
    pre = await loadPretrained(shared('hf-reference', 'tiny-h32-l4'));
  });

  it('attention probabilities after dropout: padded keys 0, dropped entries 0 at rate p, kept = eval / (1 - p)', async () => {
    const sentences = Array.from({ length: 16 }, (_, i) => 'the quick brown fox jumps over the lazy dog . '.repeat(1 + (i % 4)));
    const batch = pre.tokenizer.encodeBatch(sentences);
    const [train, evalMode] = tf.tidy(() => {
      const inputs = { inputIds: tf.tensor2d(batch.inputIds, undefined, 'int32'), attentionMask: tf.tensor2d(batch.attentionMask, undefined, 'int32') };
      const t = pre.model.forward(inputs, { training: true, outputAttentions: true, dropoutSeed: 7, hiddenDropoutProb: 0, attentionProbsDropoutProb: p });
      const e = pre.model.forward(inputs, { training: false, outputAttentions: true });
      return [t.attentions![0]!, e.attentions![0]!];
    });
    const a = (await train!.data()) as Float32Array;
    const e = (await evalMode!.data()) as Float32Array;
    const [B, H, T] = train!.shape;
    let zeros = 0;
    let total = 0;
    let maxRel = 0;
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let q = 0; q < T; q++) {
      if (batch.attentionMask[b]![q] === 0) continue;
      for (let k = 0; k < T; k++) {
        const i = ((b * H + h) * T + q) * T + k;
        if (batch.attentionMask[b]![k] === 0) {
          assert.equal(a[i], 0, 'padded key must be exactly 0');
          continue;
        }
        total++;
        if (a[i] === 0) zeros++;
        else maxRel = Math.max(maxRel, Math.abs(a[i]! - e[i]! / (1 - p)) / (e[i]! / (1 - p)));
      }
    }
    const frac = zeros / total;
    const sigma = Math.sqrt((p * (1 - p)) / total);
    assert.ok(Math.abs(frac - p) < 4 * sigma, `dropped fraction ${frac} over ${total} entries, expected ${p} +- ${4 * sigma}`);
    assert.ok(maxRel < 1e-5, `kept entries vs eval/(1-p): max relative diff ${maxRel}`);
    tf.dispose([train!, evalMode!]);
  });

  it('the same dropoutSeed gives the same pass; another seed another one', () => {
    const batch = pre.tokenizer.encodeBatch(['a man is playing a guitar .', 'hello']);
    const [x, y, z] = tf.tidy(() => {
      const inputs = { inputIds: tf.tensor2d(batch.inputIds, undefined, 'int32'), attentionMask: tf.tensor2d(batch.attentionMask, undefined, 'int32') };
      return [1, 1, 2].map((s) => pre.model.forward(inputs, { training: true, dropoutSeed: s }).lastHiddenState);
    });
    assert.deepEqual(x!.dataSync(), y!.dataSync());
    assert.notDeepEqual(x!.dataSync(), z!.dataSync());
    tf.dispose([x!, y!, z!]);
  });

  it('firstTokenOnly: the [CLS] rows, every attention map and every gradient equal the full pass, dropout on', () => {
    const batch = pre.tokenizer.encodeBatch(['a man is playing a guitar .', 'two dogs run', 'hello', 'the quick brown fox jumps over the lazy dog']);
    const model = pre.model;
    const L = model.config.numHiddenLayers;
    const inputs = { inputIds: tf.tensor2d(batch.inputIds, undefined, 'int32'), attentionMask: tf.tensor2d(batch.attentionMask, undefined, 'int32') };
    const [B, T] = inputs.inputIds.shape;
    const H = model.config.hiddenSize;
    const heads = model.config.numAttentionHeads;
    // A loss reading the [CLS] rows and the last two layers' attention maps (as miCSE's InfoNCE and AMI do).
    const rCls = tf.randomNormal([B, 1, H], 0, 1, 'float32', 11);
    const rAttn = tf.randomNormal([B, heads, T, T], 0, 1, 'float32', 12);
    const run = (firstTokenOnly: boolean) => {
      let kept: tf.Tensor[] = [];
      const { value, grads } = tf.variableGrads(() => {
        const o = model.forward(inputs, { training: true, outputAttentions: true, dropoutSeed: 5, hiddenDropoutProb: 0.1, attentionProbsDropoutProb: 0.1, firstTokenOnly });
        const cls = o.lastHiddenState.slice([0, 0, 0], [B, 1, H]);
        kept = [tf.keep(cls), ...o.attentions!.map((a) => tf.keep(a))];
        return tf.addN([tf.sum(tf.mul(cls, rCls)), tf.sum(tf.mul(o.attentions![L - 1]!, rAttn)), tf.sum(tf.mul(o.attentions![L - 2]!, rAttn))]) as tf.Scalar;
      }, model.trainableVariables());
      return { value, grads, kept };
    };
    const full = run(false);
    const first = run(true);
    const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
    const scaleOf = (a: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(a)).dataSync()[0]!);
    assert.ok(maxDiff(full.value, first.value) <= 1e-5 * Math.max(1, Math.abs(full.value.dataSync()[0]!)), 'loss');
    full.kept.forEach((t, i) => assert.ok(maxDiff(t, first.kept[i]!) <= 1e-6 * Math.max(1, scaleOf(t)), i === 0 ? '[CLS] rows' : `attention map ${i - 1}`));
    assert.deepEqual(Object.keys(first.grads).sort(), Object.keys(full.grads).sort());
    for (const name of Object.keys(full.grads)) {
      const g = full.grads[name]!;
      assert.ok(maxDiff(g, first.grads[name]!) <= 1e-5 * Math.max(1e-3, scaleOf(g)), `gradient of ${name}: max |diff| ${maxDiff(g, first.grads[name]!)} at scale ${scaleOf(g)}`);
    }
    // A wrong dropout index in the [CLS]-only layer would move the [CLS] rows: the check above sees it, since the masks differ per seed.
    tf.dispose([full.value, first.value, ...full.kept, ...first.kept, ...Object.values(full.grads), ...Object.values(first.grads), rCls, rAttn, inputs.inputIds, inputs.attentionMask]);
  });

  it('tf.memory().numTensors is unchanged across 20 forward passes after the first', () => {
    const batch = pre.tokenizer.encodeBatch(['a man is playing a guitar .', 'two dogs run']);
    const step = () => tf.tidy(() => {
      const inputs = { inputIds: tf.tensor2d(batch.inputIds, undefined, 'int32'), attentionMask: tf.tensor2d(batch.attentionMask, undefined, 'int32') };
      pre.model.forward(inputs, { training: true, outputAttentions: true, dropoutSeed: 3 });
    });
    step();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 20; i++) step();
    assert.equal(tf.memory().numTensors, before);
  });

  it('the embedding gradient (scatter-add kernel) equals a one-hot product', () => {
    const table = tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]]);
    const ids = tf.tensor1d([3, 1, 3, 0], 'int32');
    const up = tf.tensor2d([[1, 1], [2, 2], [3, 3], [4, 4]]);
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, ids), up)))(table);
    assert.deepEqual(g.arraySync(), [[4, 4], [2, 2], [0, 0], [4, 4]]);
    tf.dispose([table, ids, up, g]);
  });
});

describe('checkpoint files', () => {
  it('safetensors round trip, and F16/BF16 decode to float32', () => {
    const tensors = new Map([
      ['a', { shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 0, 1e-3, -7]) }],
      ['b', { shape: [1], data: Int32Array.from([42]) }],
    ]);
    const back = parseSafetensors(serializeSafetensors(tensors), 'mem');
    assert.deepEqual([...back.tensors.get('a')!.data], [...tensors.get('a')!.data]);
    assert.deepEqual(back.tensors.get('a')!.shape, [2, 3]);
    assert.equal(back.tensors.get('b')!.data[0], 42);
    // Hand-built F16 (1.0 = 0x3c00, -2.5 = 0xc100) and BF16 (1.0 = 0x3f80, -2.5 = 0xc020) tensors.
    const header = JSON.stringify({ h: { dtype: 'F16', shape: [2], data_offsets: [0, 4] }, g: { dtype: 'BF16', shape: [2], data_offsets: [4, 8] } });
    const buf = Buffer.alloc(8 + header.length + 8);
    buf.writeBigUInt64LE(BigInt(header.length));
    buf.write(header, 8);
    [0x3c00, 0xc100, 0x3f80, 0xc020].forEach((v, i) => buf.writeUInt16LE(v, 8 + header.length + 2 * i));
    const parsed = parseSafetensors(buf, 'mem').tensors;
    assert.deepEqual([...parsed.get('h')!.data], [1, -2.5]);
    assert.deepEqual([...parsed.get('g')!.data], [1, -2.5]);
  });

  it('a random model and its exported tensors load back identically', async () => {
    const config = parseBertConfig({ hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, vocab_size: 50 }, 'test');
    const m = BertModel.random(config, 5);
    const exported = await m.exportTensors();
    assert.equal(exported.get('encoder.layer.0.intermediate.dense.weight')!.shape.join(), '32,16'); // PyTorch [out, in]
    const wordRow0 = exported.get('embeddings.word_embeddings.weight')!.data.slice(0, 16);
    assert.ok(wordRow0.every((v) => v === 0), 'the padding row starts at zero, as in transformers');
    m.dispose();
  });
});

describe('bad checkpoints fail with one line naming the file, and write nothing', { skip: SKIP_NO_SHARED }, () => {
  const src = () => shared('hf-reference', 'tiny-h32-l4');
  async function brokenCopy(mutate: (dir: string) => Promise<void>): Promise<string> {
    const dir = await fs.mkdtemp(path.join(TMP, 'bad-'));
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']) {
      await fs.copyFile(path.join(src(), f), path.join(dir, f));
    }
    await mutate(dir);
    return dir;
  }
  async function embedFails(dir: string, pattern: RegExp): Promise<void> {
    const input = path.join(dir, 'in.txt');
    const output = path.join(dir, 'out.jsonl');
    await fs.writeFile(input, 'hello\n');
    const err = await run(process.execPath, [path.join(ROOT, 'bin', 'micse.js'), 'embed', '--model', dir, '--input', input,
      '--output', output, '--backend', 'cpu'], { cwd: ROOT }).then(() => null, (e: { code: number; stderr: string }) => e);
    assert.ok(err !== null, 'the command must fail');
    assert.notEqual(err.code, 0);
    const lines = err.stderr.trim().split('\n').filter((l) => l.startsWith('micse:'));
    assert.equal(lines.length, 1, err.stderr);
    assert.match(lines[0]!, pattern);
    assert.equal(await fs.access(output).then(() => true, () => false), false, 'nothing written');
  }

  it('missing model.safetensors', async () => {
    const dir = await brokenCopy((d) => fs.rm(path.join(d, 'model.safetensors')));
    await embedFails(dir, /model\.safetensors/);
  });
  it('truncated safetensors', async () => {
    const dir = await brokenCopy(async (d) => {
      const f = path.join(d, 'model.safetensors');
      const buf = await fs.readFile(f);
      await fs.writeFile(f, buf.subarray(0, buf.length - 1000));
    });
    await embedFails(dir, /model\.safetensors.*(truncated|outside)/);
  });
  it('corrupt header', async () => {
    const dir = await brokenCopy(async (d) => {
      const f = path.join(d, 'model.safetensors');
      const buf = await fs.readFile(f);
      buf.write('#', 8);
      await fs.writeFile(f, buf);
    });
    await embedFails(dir, /model\.safetensors: corrupt/);
  });
  it('a tensor with the wrong shape', async () => {
    const dir = await brokenCopy(async (d) => {
      const f = path.join(d, 'config.json');
      const cfg = JSON.parse(await fs.readFile(f, 'utf8')) as Record<string, unknown>;
      cfg['intermediate_size'] = 48;
      await fs.writeFile(f, JSON.stringify(cfg));
    });
    await embedFails(dir, /model\.safetensors: tensor 'encoder\.layer\.0\.intermediate\.dense\.(weight|bias)' has shape \[64(, 32)?\], config\.json implies/);
  });
  it('model_type not BERT', async () => {
    const dir = await brokenCopy(async (d) => {
      const f = path.join(d, 'config.json');
      const cfg = JSON.parse(await fs.readFile(f, 'utf8')) as Record<string, unknown>;
      cfg['model_type'] = 'roberta';
      await fs.writeFile(f, JSON.stringify(cfg));
    });
    await embedFails(dir, /config\.json: model_type is 'roberta'/);
  });
});

describe('model names and the Hugging Face cache', { skip: SKIP_NO_SHARED }, () => {
  it('a name resolves to its cached snapshot (refs/main -> snapshots/<commit>)', async () => {
    const cache = await fs.mkdtemp(path.join(TMP, 'hub-'));
    const snap = path.join(cache, 'models--org--tiny-bert', 'snapshots', 'abc123');
    await fs.mkdir(snap, { recursive: true });
    await fs.mkdir(path.join(cache, 'models--org--tiny-bert', 'refs'));
    await fs.writeFile(path.join(cache, 'models--org--tiny-bert', 'refs', 'main'), 'abc123');
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) {
      await fs.copyFile(shared('hf-reference', 'tiny-h32-l4', f), path.join(snap, f));
    }
    assert.equal(await resolveModelDir('org/tiny-bert', { cacheDir: cache }), snap);
    const { model } = await loadPretrained('org/tiny-bert', { cacheDir: cache });
    assert.equal(model.config.hiddenSize, 32);
    model.dispose();
  });

  it('offline, a name that is not cached fails saying where to put the files', async () => {
    const cache = await fs.mkdtemp(path.join(TMP, 'hub-'));
    await assert.rejects(resolveModelDir('bert-base-uncased', { cacheDir: cache, offline: true }),
      (err: Error) => err.message.includes(path.join(cache, 'models--bert-base-uncased', 'snapshots', 'main')) && /config\.json/.test(err.message));
  });
});

describe('inference memory', () => {
  it('a forward pass outside a gradient tape holds one layer\'s tensors at a time: its peak is the same at 1 and 4 layers', async () => {
    const [B, T] = [8, 48];
    const peak = async (layers: number): Promise<number> => {
      const model = BertModel.random(parseBertConfig({ vocab_size: 50, hidden_size: 32, num_hidden_layers: layers, num_attention_heads: 2,
        intermediate_size: 128, max_position_embeddings: 64 }, 'inference memory'), 1);
      const inputIds = tf.tensor2d(Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => 1 + ((b * 7 + t * 3) % 49))), undefined, 'int32');
      const attentionMask = tf.onesLike(inputIds);
      const start = tf.memory().numBytes;
      const info = await tf.profile(() => tf.tidy(() => model.forward({ inputIds, attentionMask }, { training: false }).lastHiddenState));
      (info.result as tf.Tensor).dispose();
      tf.dispose([inputIds, attentionMask]);
      model.dispose();
      return info.peakBytes - start;
    };
    const one = await peak(1);
    const four = await peak(4);
    // All four layers' tensors kept to the end would be ~3.5x one layer's.
    assert.ok(four < 1.2 * one, `peak bytes above the weights: ${four} at 4 layers, ${one} at 1`);
  });
});
