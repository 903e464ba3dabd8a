/**
 * The library's argument checks, as a JavaScript caller meets them (no type checker between the caller and the
 * call): a bad sentence list, batch size, max length, pooler, pair, cluster option, dropout override or backend
 * name is a UserError whose one line names the argument, thrown before any work and leaving no tensor behind; a
 * disposed model says so. Before these checks, such calls ran and returned vectors of the wrong thing (a number
 * embedded as its digits, an unknown pooler read as `mean`) or failed inside TF.js ("tensor2d() requires shape").
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UserError } from '../src/errors.js';
import { selectBackend } from '../src/model/backend.js';
import { embed, type EmbedOptions } from '../src/model/embed.js';
import { pool } from '../src/model/pooling.js';
import { loadPretrained, type Pretrained } from '../src/model/pretrained.js';
import { tf } from '../src/model/tf.js';
import type { PartialTrainConfig } from '../src/train/config.js';
import { trainInMemory } from '../src/train/memory.js';
import { buildIndex } from '../src/use/build.js';
import { cluster, clusterVectors, type ClusterOptions } from '../src/use/cluster.js';
import { openIndex, type OpenIndexOptions, type SearchOptions } from '../src/use/search.js';
import { similarity } from '../src/use/similarity.js';
import type { SentencePair } from '../src/use/pairs.js';
import type { Matrix } from '../src/use/vectors.js';
import { shared, SKIP_NO_SHARED, testTempDir } from './helpers.js';

const MODEL = shared('hf-reference', 'tiny-h32-l4');
const SENTENCES = ['a man is playing a guitar .', 'hello', 'the cat sat on the mat'];
const TMP = testTempDir('library-args');

/** Asserts that `call` rejects with a UserError whose message matches `message`, leaving the tensor count as it was. */
async function refuses(call: () => Promise<unknown>, message: RegExp): Promise<void> {
  const before = tf.memory().numTensors;
  await assert.rejects(call, (err: unknown) => {
    assert.ok(err instanceof UserError, `expected a UserError, got ${String(err)}`);
    assert.match(err.message, message);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  });
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
}

describe('library arguments', { skip: SKIP_NO_SHARED }, () => {
  let p: Pretrained;
  before(async () => {
    await selectBackend('cpu');
    p = await loadPretrained(MODEL);
  });
  after(() => p?.model.dispose());

  // The values a JavaScript caller can pass where the types say otherwise.
  const loose = <T>(v: unknown): T => v as T;

  it('embed: a sentence that is not a string is refused by its index (a number was embedded as its digits)', async () => {
    await refuses(() => embed(p.model, p.tokenizer, loose(['a', 5])), /^sentences\[1\] must be a string, got number$/);
    await refuses(() => embed(p.model, p.tokenizer, loose(['a', 'b', null])), /^sentences\[2\] must be a string, got null$/);
    await refuses(() => embed(p.model, p.tokenizer, loose('hello')), /^sentences must be an array of strings, got string$/);
    assert.deepEqual(await embed(p.model, p.tokenizer, []), []);
  });

  it('embed: batchSize must be a positive integer (0, NaN and -1 failed inside TF.js, 1.5 and "2" ran)', async () => {
    for (const batchSize of [0, NaN, -1, 1.5, '2']) {
      await refuses(() => embed(p.model, p.tokenizer, SENTENCES, { batchSize: loose<number>(batchSize) }),
        new RegExp(`^batchSize must be a positive integer, got ${typeof batchSize === 'string' ? `"${batchSize}"` : String(batchSize)}$`));
    }
    // Checked before any work: an empty list with a bad batch size is refused too.
    await refuses(() => embed(p.model, p.tokenizer, [], { batchSize: 0 }), /^batchSize must be a positive integer/);
    await refuses(() => embed(p.model, p.tokenizer, [], { maxLength: 1 }), /^maxLength must be an integer >= 2, got 1$/);
  });

  it('embed and pool: an unknown pooler is refused, with a did-you-mean (it was read as mean pooling)', async () => {
    await refuses(() => embed(p.model, p.tokenizer, SENTENCES, { pooler: loose('bogus') }), /^pooler must be one of cls_before_pooler, mean, got "bogus"$/);
    await refuses(() => embed(p.model, p.tokenizer, SENTENCES, { pooler: loose('means') }), /got "means" \(did you mean 'mean'\?\)$/);
    await refuses(() => embed(p.model, p.tokenizer, SENTENCES, { pooler: loose('cls') }), /^pooler must be one of/);
    const hidden = tf.zeros([1, 2, 4]) as tf.Tensor3D;
    const mask = tf.ones([1, 2], 'int32') as tf.Tensor2D;
    await refuses(async () => pool(hidden, mask, loose('max')), /^pooler must be one of/);
    tf.dispose([hidden, mask]);
  });

  it('similarity: a pair that is not two strings is refused by its index (a number was scored)', async () => {
    await refuses(() => similarity(p.model, p.tokenizer, loose<SentencePair[]>([['a', 'b'], ['a', 3]])), /^pairs\[1\]\[1\] must be a string, got number$/);
    await refuses(() => similarity(p.model, p.tokenizer, loose<SentencePair[]>([['a']])), /^pairs\[0\] must be a \[string, string\] pair, got array of length 1$/);
    await refuses(() => similarity(p.model, p.tokenizer, [['a', 'b']], { batchSize: 0 }), /^batchSize must be a positive integer/);
  });

  it('cluster: seed, maxIterations, tolerance and nearest are checked (nearest -1 listed one member, NaN none)', async () => {
    const cases: [Partial<ClusterOptions>, RegExp][] = [
      [{ seed: NaN }, /^seed must be an integer, got NaN$/],
      [{ maxIterations: 0 }, /^maxIterations must be a positive integer, got 0$/],
      [{ tolerance: -1 }, /^tolerance must be a finite number >= 0, got -1$/],
      [{ nearest: -1 }, /^nearest must be an integer >= 0, got -1$/],
      [{ nearest: NaN }, /^nearest must be an integer >= 0, got NaN$/],
    ];
    for (const [opts, message] of cases) await refuses(() => cluster(p.model, p.tokenizer, SENTENCES, { k: 2, ...opts }), message);
    await refuses(() => cluster(p.model, p.tokenizer, loose(['a', 1, 'b']), { k: 2 }), /^sentences\[1\] must be a string, got number$/);
    await refuses(() => cluster(p.model, p.tokenizer, SENTENCES, { k: 2, pooler: loose('max') } as ClusterOptions & EmbedOptions), /^pooler must be one of/);
    const ok = await cluster(p.model, p.tokenizer, SENTENCES, { k: 2, nearest: 0 });
    assert.deepEqual(ok.clusters.map((c) => c.nearest.length), [0, 0]);
  });

  it('clusterVectors: a hand-built Matrix that is not consistent is refused, naming what is wrong (it clustered garbage or threw a TypeError)', async () => {
    const m = (data: ArrayLike<number>, rows: number, dim: number): Matrix => ({ data: Float32Array.from(data), rows, dim });
    const cases: [Matrix, RegExp][] = [
      [m([1, 0, 0, 1, 1], 2, 2), /^vectors\.data has 5 values, rows \* dim = 2 \* 2 = 4$/],
      [m([1, 0, 0, 1], 1, 2), /^vectors\.data has 4 values, rows \* dim = 1 \* 2 = 2$/],
      [m([], 0, 0), /^vectors\.dim must be a positive integer, got 0$/],
      [m([1, 0], 1, 2.5), /^vectors\.dim must be a positive integer, got 2\.5$/],
      [m([1, 0, 0, 1], -2, -2), /^vectors\.rows must be an integer >= 0, got -2$/],
      [m([1, 0, NaN, 1], 2, 2), /^vectors\.data\[2\] \(row 1\) is NaN, not a finite number$/],
      [m([1, Infinity, 0, 1], 2, 2), /^vectors\.data\[1\] \(row 0\) is Infinity, not a finite number$/],
      [loose({ data: [1, 0, 0, 1], rows: 2, dim: 2 }), /^vectors\.data must be a Float32Array, got Array$/],
      [loose(null), /^vectors must be a Matrix \{ data, rows, dim \}, got null$/],
    ];
    for (const [vectors, message] of cases) await refuses(async () => clusterVectors(vectors, { k: 1 }), message);
    assert.deepEqual(clusterVectors(m([1, 0, 0, 1], 2, 2), { k: 2 }).assignments.slice().sort(), [0, 1]);
  });

  it('openIndex and search: options are checked when the index is opened and before queries are embedded', async () => {
    const dir = TMP;
    const corpus = path.join(dir, 'corpus.txt');
    await fs.writeFile(corpus, SENTENCES.join('\n') + '\n');
    const out = path.join(dir, 'index');
    for (const threads of [-1, 1.5, NaN]) {
      await refuses(() => buildIndex(p, { corpus, out, ann: { threads } }), new RegExp(`^ann\\.threads must be an integer >= 0 \\(0: every core\\), got ${threads}$`));
    }
    await buildIndex(p, { corpus, out });
    const cases: [OpenIndexOptions, RegExp][] = [
      // A bad batch size was found only by embed, at the first search.
      [{ batchSize: 0 }, /^batchSize must be a positive integer, got 0$/],
      [{ batchSize: loose('8') }, /^batchSize must be a positive integer, got "8"$/],
      [{ model: null, batchSize: 1.5 }, /^batchSize must be a positive integer, got 1\.5$/],
      // usearch took 0 and NaN as they came.
      [{ expansionSearch: 0 }, /^expansionSearch must be a positive integer, got 0$/],
      [{ expansionSearch: NaN }, /^expansionSearch must be a positive integer, got NaN$/],
      [{ view: loose('yes') }, /^view must be a boolean, got string$/],
      [{ model: loose(5) }, /^model must be a checkpoint path or Hub name, a loaded model \(\{ model, tokenizer, report \}\) or null, got number$/],
      // A loaded model was checked by its keys alone; its parts' types are checked too.
      [{ model: loose({ ...p, model: 5 }) }, /^model\.model must be an object, got number$/],
      [{ model: loose({ ...p, tokenizer: null }) }, /^model\.tokenizer must be an object, got null$/],
      [{ model: loose({ ...p, report: { dir: 5 } }) }, /^model\.report\.dir must be a string, got number$/],
    ];
    for (const [opts, message] of cases) await refuses(() => openIndex(out, { model: p, ...opts }), message);
    await refuses(() => openIndex(out, loose('fast')), /^openIndex options must be an object, got string$/);
    const index = await openIndex(out, { model: p, batchSize: 2, expansionSearch: 16 });
    const searches: [number, SearchOptions, RegExp][] = [
      [0, {}, /^top-k must be a positive integer, got 0$/],
      [2.5, {}, /^top-k must be a positive integer, got 2\.5$/],
      [2, loose({ exact: 'yes' }), /^exact must be a boolean, got string$/],
      [2, loose(null), /^search options must be an object, got null$/],
    ];
    for (const [k, opts, message] of searches) {
      await refuses(() => index.search(SENTENCES, k, opts), message);
      // Checked before the queries are embedded: embed would refuse this list first.
      await refuses(() => index.search(loose(['a', 5]), k, opts), message);
      await refuses(() => index.searchVectors({ data: new Float32Array(p.model.config.hiddenSize), rows: 1, dim: p.model.config.hiddenSize }, k, opts), message);
    }
    await refuses(() => index.searchVectors({ data: new Float32Array(3), rows: 2, dim: p.model.config.hiddenSize }), /^queries\.data has 3 values, rows \* dim = 2 \* 32 = 64$/);
    const res = await index.search(SENTENCES, 1);
    assert.deepEqual(res.hits.map((h) => h[0]!.text), SENTENCES);
    index.dispose();
  });

  it('loadPretrained: a dropout override outside [0, 1) is refused as config.json\'s would be', async () => {
    for (const v of [2, -0.1, NaN]) {
      await refuses(() => loadPretrained(MODEL, { hiddenDropoutProb: v }), new RegExp(`^hiddenDropoutProb must be in \\[0, 1\\), got ${v}$`));
    }
    await refuses(() => loadPretrained(MODEL, { attentionProbsDropoutProb: 1 }), /^attentionProbsDropoutProb must be in \[0, 1\), got 1$/);
    const q = await loadPretrained(MODEL, { hiddenDropoutProb: 0 });
    assert.equal(q.config.hiddenDropoutProb, 0);
    q.model.dispose();
  });

  it('selectBackend: an unknown name is a UserError with a did-you-mean', async () => {
    await refuses(() => selectBackend(loose('wasn')), /^unknown backend 'wasn' \(did you mean 'wasm'\?\); valid: auto, /);
  });

  it('trainInMemory: a sentence that is not a string is refused upfront (it trained, the number read as its digits)', async () => {
    const sentences = Array.from({ length: 40 }, (_, i) => `sentence number ${i}`);
    const config = { train: { batchSize: 8, maxSteps: 1 }, objective: { style: 'simcse' } } satisfies PartialTrainConfig;
    await refuses(() => trainInMemory(config, { sentences: loose([...sentences.slice(0, 39), 5]), model: p.model, tokenizer: p.tokenizer }),
      /^sentences\[39\] must be a string, got number$/);
  });

  it('a disposed model says so when used, and a second dispose does nothing', async () => {
    const q = await loadPretrained(MODEL);
    const count = tf.memory().numTensors;
    q.model.dispose();
    q.model.dispose();
    assert.ok(tf.memory().numTensors < count);
    await refuses(() => embed(q.model, q.tokenizer, SENTENCES), /^BertModel: this model was disposed/);
    await refuses(async () => q.model.trainableWeights(), /^BertModel: this model was disposed/);
    await refuses(() => q.model.exportTensors(), /^BertModel: this model was disposed/);
    // The trainer builds its MLP head and optimizer around the model: they are freed again (2 tensors were left).
    const sentences = Array.from({ length: 16 }, (_, i) => `sentence number ${i}`);
    await refuses(() => trainInMemory({ train: { batchSize: 8, maxSteps: 1 }, objective: { style: 'simcse' } }, { sentences, model: q.model, tokenizer: q.tokenizer }),
      /^BertModel: this model was disposed/);
  });
});
