import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UserError } from '../src/errors.js';
import { stepsPerEpoch } from '../src/data/batchLimits.js';
import { TwoViewBatchIterator, type BatchIteratorState, type BatchTokenizer, type TwoViewBatch } from '../src/data/batches.js';
import { shared, SKIP_NO_SHARED } from './helpers.js';

const CLS = 101;
const SEP = 102;
const PAD = 0;
/** Fake tokenizer: one id per word (1000 + word length), [CLS]/[SEP] added, truncated keeping [SEP] last. */
const fake: BatchTokenizer & { calls: number } = {
  padTokenId: PAD,
  calls: 0,
  encode(text: string, opts?: { maxLength?: number }): number[] {
    this.calls++;
    const max = opts?.maxLength ?? 512;
    const words = text.split(/\s+/).filter((w) => w !== '').map((w) => 1000 + w.length);
    return [CLS, ...words.slice(0, max - 2), SEP];
  },
};

const sentences = Array.from({ length: 23 }, (_, i) => Array.from({ length: (i % 7) + 1 }, (_, j) => 'w'.repeat(j + 1)).join(' ') + ` s${i}`);

function take(it: TwoViewBatchIterator, k: number): TwoViewBatch[] {
  return Array.from({ length: k }, () => it.next().value as TwoViewBatch);
}

test('rows are interleaved views, truncated and padded to the batch longest', () => {
  const it = new TwoViewBatchIterator({ sentences, tokenizer: fake, batchSize: 4, maxSeqLen: 5, seed: 42, shuffle: false });
  const b = it.next().value as TwoViewBatch;
  assert.equal(b.inputIds.length, 8);
  assert.deepEqual(b.sentences, sentences.slice(0, 4));
  assert.deepEqual(b.inputIds[0], [CLS, 1001, 1002, SEP, PAD]); // "w s0": 2 words + [CLS]/[SEP], padded to 5
  for (let i = 0; i < 4; i++) {
    assert.deepEqual(b.inputIds[2 * i], b.inputIds[2 * i + 1]);
    assert.deepEqual(b.attentionMask[2 * i], b.attentionMask[2 * i + 1]);
    const row = b.inputIds[2 * i]!;
    const mask = b.attentionMask[2 * i]!;
    assert.equal(row.length, 5);
    const len = mask.reduce((a, m) => a + m, 0);
    assert.equal(row[len - 1], SEP, 'SEP kept last after truncation');
    assert.ok(row.slice(len).every((x) => x === PAD));
  }
  assert.ok(b.attentionMask.every((m) => m.length === 5));
  assert.ok(b.attentionMask.some((m) => m[4] === 1), 'longest row fills the width');
});

test('first row checked exactly', () => {
  const it = new TwoViewBatchIterator({ sentences: ['a bb', 'ccc dddd eeeee ffffff'], tokenizer: fake, batchSize: 2, maxSeqLen: 4, seed: 1, shuffle: false });
  const b = it.next().value as TwoViewBatch;
  assert.deepEqual(b.inputIds, [
    [CLS, 1001, 1002, SEP],
    [CLS, 1001, 1002, SEP],
    [CLS, 1003, 1004, SEP],
    [CLS, 1003, 1004, SEP],
  ]);
  const short = new TwoViewBatchIterator({ sentences: ['a', 'bb cc dd'], tokenizer: fake, batchSize: 2, maxSeqLen: 32, seed: 1, shuffle: false });
  const s = short.next().value as TwoViewBatch;
  assert.deepEqual(s.inputIds[0], [CLS, 1001, SEP, PAD, PAD]);
  assert.deepEqual(s.attentionMask[1], [1, 1, 1, 0, 0]);
  assert.deepEqual(s.attentionMask[2], [1, 1, 1, 1, 1]);
});

test('epochs: every sentence once per epoch, last partial batch kept unless dropLast, orders differ', () => {
  assert.equal(stepsPerEpoch(23, 4), 6);
  assert.equal(stepsPerEpoch(23, 4, true), 5);
  assert.equal(stepsPerEpoch(1000, 64), 16);
  const it = new TwoViewBatchIterator({ sentences, tokenizer: fake, batchSize: 4, seed: 42 });
  assert.equal(it.stepsPerEpoch, 6);
  const e0 = take(it, 6);
  const e1 = take(it, 6);
  assert.deepEqual(e0.map((b) => b.sentences.length), [4, 4, 4, 4, 4, 3]);
  assert.ok(e0.every((b) => b.epoch === 0) && e1.every((b) => b.epoch === 1));
  assert.deepEqual(e1.map((b) => b.step), [6, 7, 8, 9, 10, 11]);
  const order0 = e0.flatMap((b) => b.indices);
  const order1 = e1.flatMap((b) => b.indices);
  assert.deepEqual([...order0].sort((a, b) => a - b), sentences.map((_, i) => i));
  assert.deepEqual([...order1].sort((a, b) => a - b), sentences.map((_, i) => i));
  assert.notDeepEqual(order0, order1);
  e0.forEach((b) => assert.deepEqual(b.sentences, b.indices.map((i) => sentences[i])));

  const same = new TwoViewBatchIterator({ sentences, tokenizer: fake, batchSize: 4, seed: 42 });
  assert.deepEqual(take(same, 6), e0);
  const other = new TwoViewBatchIterator({ sentences, tokenizer: fake, batchSize: 4, seed: 43 });
  assert.notDeepEqual(take(other, 6).flatMap((b) => b.indices), order0);

  const drop = new TwoViewBatchIterator({ sentences, tokenizer: fake, batchSize: 4, seed: 42, dropLast: true });
  const d = take(drop, 10);
  assert.ok(d.every((b) => b.sentences.length === 4));
  assert.deepEqual(d.map((b) => b.epoch), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
});

test('restored at step k yields exactly what the uninterrupted iterator yields from k on', () => {
  for (const dropLast of [false, true]) {
    const opts = { sentences, tokenizer: fake, batchSize: 5, maxSeqLen: 6, seed: 7, dropLast };
    const ref = take(new TwoViewBatchIterator(opts), 20);
    for (let k = 0; k <= 14; k++) {
      const it = new TwoViewBatchIterator(opts);
      take(it, k);
      const saved = JSON.parse(JSON.stringify(it.state())) as BatchIteratorState;
      assert.equal(saved.step, k);
      const resumed = new TwoViewBatchIterator(opts, saved);
      assert.equal(resumed.step, k);
      assert.deepEqual(take(resumed, 20 - k), ref.slice(k), `dropLast ${dropLast}, k ${k}`);
      // the original keeps going identically too
      assert.deepEqual(take(it, 20 - k), ref.slice(k));
    }
  }
});

test('tokens are cached per sentence', () => {
  fake.calls = 0;
  const it = new TwoViewBatchIterator({ sentences, tokenizer: fake, batchSize: 8, seed: 1 });
  take(it, 9);
  assert.equal(fake.calls, sentences.length);
});

test('state mismatches and impossible settings are UserErrors', () => {
  const opts = { sentences, tokenizer: fake, batchSize: 4, seed: 42 };
  const it = new TwoViewBatchIterator(opts);
  take(it, 3);
  const s = it.state();
  assert.throws(() => new TwoViewBatchIterator({ ...opts, batchSize: 5 }, s), /train\.batchSize was 4, now 5/);
  assert.throws(() => new TwoViewBatchIterator({ ...opts, sentences: sentences.slice(1) }, s), /number of sentences/);
  assert.throws(() => new TwoViewBatchIterator({ ...opts, sentences: [...sentences.slice(1), 'other'] }, s), /sha256 of the training sentences/);
  assert.throws(() => new TwoViewBatchIterator(opts, { ...s, rng: { ...s.rng, s: [0, 0, 0, 0] } }), UserError);
  assert.throws(() => new TwoViewBatchIterator(opts, { ...s, position: 99 }), /position/);
  assert.throws(() => new TwoViewBatchIterator({ ...opts, batchSize: 64, dropLast: true }), /larger than the 23 training sentences/);
  assert.throws(() => new TwoViewBatchIterator({ ...opts, sentences: [] }), UserError);
});

test('works with the real BERT tokenizer (maxSeqLen 32)', { skip: SKIP_NO_SHARED }, async () => {
  const { BertTokenizer } = await import('../src/data/tokenizer.js');
  const tok = await BertTokenizer.fromDir(shared('bert-base-uncased'));
  const long = 'word '.repeat(100);
  const it = new TwoViewBatchIterator({ sentences: ['Hello world.', long], tokenizer: tok, batchSize: 2, maxSeqLen: 32, seed: 42, shuffle: false });
  const b = it.next().value as TwoViewBatch;
  assert.equal(b.inputIds[0]!.length, 32);
  assert.equal(b.inputIds[0]![0], tok.encode('x')[0]);
  assert.equal(b.inputIds[2]![31], tok.encode('x').at(-1));
  assert.equal(b.inputIds[0]![31], tok.padTokenId);
});
