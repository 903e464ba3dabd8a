/**
 * Tokenizer (issue 2): tokenizer.json (HF tokenizers.js) and the vocab.txt-only WordPiece port give the same ids
 * on hard text, and both reproduce ids transformers produced.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { BertTokenizer } from '../src/data/tokenizer.js';
import { shared, SKIP_NO_SHARED, testTempDir } from './helpers.js';

const TMP = testTempDir('tokenizer');

const HARD = [
  'café déjà vu', 'Ångström naïve résumé ÉCOLE', 'e\u0301tude (combining accent)', 'Hello, World!!', "don't stop-believing...",
  '北京欢迎你 東京 漢字', '한국어 テスト ひらがな', 'Привет, мир', 'مرحبا بالعالم', 'emoji 😀👍🏽 family 👨‍👩‍👧',
  'zero\u200bwidth\u200djoiner\ufeffbom', 'control\u0007bell\u0000nul\ttab\r\nnewline', 'nbsp\u00a0em\u2003space',
  'x'.repeat(101) + ' then short words', 'y'.repeat(100), '', '   ', '[CLS] keeps [SEP] special [MASK]',
  'ﬁ ligature ① ² ½', '$100 & 50% off — “quotes” ‘single’ «guillemets»', 'e-mail: someone@example.com, url https://x.y/z?q=1',
  'word '.repeat(600), 'UPPER lower MiXeD', '\ud835\udc00 math bold', 'tab\tseparated\tcolumns',
];

describe('BERT tokenizer', { skip: SKIP_NO_SHARED }, () => {
  let json: BertTokenizer;
  let vocab: BertTokenizer;
  before(async () => {
    json = await BertTokenizer.fromDir(shared('bert-base-uncased'));
    vocab = await BertTokenizer.fromDir(shared('bert-base-uncased'), { prefer: 'vocab.txt' });
    assert.equal(json.files.engine, 'tokenizer.json');
    assert.equal(vocab.files.engine, 'vocab.txt');
  });

  it('tokenizer.json and vocab.txt paths agree on hard text', () => {
    for (const s of HARD) assert.deepEqual(vocab.encode(s), json.encode(s), JSON.stringify(s.slice(0, 40)));
  });

  it('reproduces transformers ids (reference_outputs.json inputs)', async () => {
    const expected: Record<string, number[]> = {
      'a man is playing a guitar .': [101, 1037, 2158, 2003, 2652, 1037, 2858, 1012, 102],
      'café déjà vu': [101, 7668, 2139, 3900, 24728, 102],
      'hello': [101, 7592, 102],
    };
    for (const [s, ids] of Object.entries(expected)) {
      assert.deepEqual(json.encode(s), ids);
      assert.deepEqual(vocab.encode(s), ids);
    }
  });

  it('edge cases: empty string, words over 100 characters, truncation, padding', () => {
    assert.deepEqual(json.encode(''), [json.clsTokenId, json.sepTokenId]);
    assert.deepEqual(json.encode('x'.repeat(101)), [101, json.unkTokenId, 102]);
    assert.notDeepEqual(json.encode('x'.repeat(100)), [101, json.unkTokenId, 102]);
    const long = json.encode('word '.repeat(600));
    assert.equal(long.length, 512, 'truncated to the model maximum');
    const short = json.encode('word '.repeat(600), { maxLength: 32 });
    assert.equal(short.length, 32);
    assert.equal(short[31], json.sepTokenId, '[SEP] stays last');
    const batch = json.encodeBatch(['hello', 'a man is playing a guitar .']);
    assert.deepEqual(batch.inputIds[0], [101, 7592, 102, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(batch.attentionMask[0], [1, 1, 1, 0, 0, 0, 0, 0, 0]);
    assert.throws(() => json.encode('x', { maxLength: 1 }), /maxLength/);
  });

  it('do_lower_case false in tokenizer_config.json keeps case on the vocab.txt path', async () => {
    const dir = await fs.mkdtemp(path.join(TMP, 'tok-'));
    await fs.copyFile(shared('bert-base-uncased', 'vocab.txt'), path.join(dir, 'vocab.txt'));
    await fs.writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ do_lower_case: false }));
    const cased = await BertTokenizer.fromDir(dir);
    assert.notDeepEqual(cased.encode('Hello'), vocab.encode('Hello'));
    assert.deepEqual(cased.encode('hello'), vocab.encode('hello'));
  });

  it('a directory with neither file is a clear error', async () => {
    const dir = await fs.mkdtemp(path.join(TMP, 'tok-'));
    await assert.rejects(BertTokenizer.fromDir(dir), /no tokenizer\.json or vocab\.txt/);
  });
});
