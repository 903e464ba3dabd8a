/**
 * `data.blankLines`: a .txt corpus's blank lines are skipped (default) or kept as empty sentences, as HF datasets'
 * text loader (str.splitlines) gives them to the authors' train.py; the subset manifest records which; an empty
 * sentence becomes a [CLS] [SEP] training row; CSV refuses `keep` with the file named.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { TwoViewBatchIterator, type TwoViewBatch } from '../src/data/batches.js';
import { readAll } from '../src/data/readers.js';
import { loadTrainingSentences } from '../src/data/subset.js';
import { BertTokenizer } from '../src/data/tokenizer.js';
import { defaultConfig } from '../src/train/config.js';
import { shared, SKIP_NO_SHARED } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'micse-blank-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Lines: "a", "", "b", "   ", "c" and a final newline (python3: 'a\n\nb\n   \nc\n'.splitlines() has 5 items). */
const TEXT = 'a\n\nb\r\n   \nc\n';

describe('blank lines', () => {
  const file = path.join(dir, 'corpus.txt');
  writeFileSync(file, TEXT);

  test('skip (the default) drops them; keep yields them verbatim with their line numbers', async () => {
    assert.equal(defaultConfig().data.blankLines, 'skip');
    const skipped = await readAll(file);
    assert.deepEqual(skipped.lines.map((l) => l.text), ['a', 'b', 'c']);
    assert.equal(skipped.stats.blank, 2);
    const kept = await readAll(file, { blankLines: 'keep' });
    assert.deepEqual(kept.lines, [{ text: 'a', line: 1 }, { text: '', line: 2 }, { text: 'b', line: 3 }, { text: '   ', line: 4 }, { text: 'c', line: 5 }]);
    assert.equal(kept.stats.blank, 2);
    assert.equal(kept.stats.records, 5);
  });

  test('the manifest records the choice; kept blanks are candidates', async () => {
    const skip = await loadTrainingSentences({ path: file });
    assert.equal(skip.manifest.input.blankLines, 'skip');
    assert.equal(skip.manifest.input.candidates, 3);
    assert.match(skip.manifest.selection.rule, /non-blank valid records/);
    const keep = await loadTrainingSentences({ path: file, blankLines: 'keep' });
    assert.equal(keep.manifest.input.blankLines, 'keep');
    assert.equal(keep.manifest.input.candidates, 5);
    assert.deepEqual(keep.sentences, ['a', '', 'b', '   ', 'c']);
    assert.match(keep.manifest.selection.rule, /blank lines included/);
  });

  test('keep on a CSV corpus is refused, naming the file and the key', async () => {
    const csv = path.join(dir, 'c.csv');
    writeFileSync(csv, 'text\na\n\nb\n');
    await assert.rejects(readAll(csv, { blankLines: 'keep' }), (e: Error) => e.message.includes(csv) && e.message.includes('data.blankLines'));
  });

  test('an empty sentence is a [CLS] [SEP] row in both views', { skip: SKIP_NO_SHARED }, async () => {
    const tokenizer = await BertTokenizer.fromDir(shared('bert-base-uncased'));
    const it = new TwoViewBatchIterator({ sentences: ['', 'hello world'], tokenizer, batchSize: 2, maxSeqLen: 8, seed: 1 });
    const batch: TwoViewBatch = it.next().value;
    const cls = tokenizer.encode('')[0]!;
    const sep = tokenizer.encode('').at(-1)!;
    assert.deepEqual(tokenizer.encode(''), [cls, sep]);
    const emptyRows = batch.inputIds.map((ids, r) => ({ ids, mask: batch.attentionMask[r]! }))
      .filter((r) => r.mask.reduce((a, b) => a + b, 0) === 2);
    assert.equal(emptyRows.length, 2, 'two views of the empty sentence');
    for (const r of emptyRows) assert.deepEqual(r.ids.slice(0, 2), [cls, sep]);
  });
});
