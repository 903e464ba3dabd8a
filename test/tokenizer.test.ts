/**
 * Tokenizer (issues 2, 20): a checkpoint's tokenizer.json and the tokenizer.json built in memory for a vocab.txt-only
 * checkpoint give the same ids on hard text, and both reproduce ids transformers produced.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { BertTokenizer, bertTokenizerJson } from '../src/data/tokenizer.js';
import { escapeRegExp, shared, SKIP_NO_SHARED, testTempDir } from './helpers.js';

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
    assert.equal(json.files.builtFrom, 'tokenizer.json');
    assert.equal(vocab.files.builtFrom, 'vocab.txt');
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

  it('a vocab.txt-only checkpoint encodes like the shared tokenizer.json, and exports the tokenizer.json it runs', async () => {
    const dir = await fs.mkdtemp(path.join(TMP, 'tok-'));
    for (const f of ['vocab.txt', 'tokenizer_config.json']) await fs.copyFile(shared('bert-base-uncased', f), path.join(dir, f));
    const only = await BertTokenizer.fromDir(dir);
    assert.equal(only.files.builtFrom, 'vocab.txt');
    const varied = [...HARD, 'Ça coûte 10€ — naïveté, façade, Zürich; Øre, Łódź', '中文字符和English混合,標點。', '¿Qué? ¡Sí! «Oui» (non) [a] {b}',
      'a'.repeat(150) + ' ' + 'b'.repeat(101) + '-' + 'c'.repeat(99), ' \t\n \u3000 ', 'tab\there\r\nand\u2028there'];
    for (const s of varied) {
      assert.deepEqual(only.encode(s), json.encode(s), JSON.stringify(s.slice(0, 40)));
      assert.deepEqual(only.tokenize(s), json.tokenize(s), JSON.stringify(s.slice(0, 40)));
    }
    assert.equal(only.toJson(), JSON.stringify(bertTokenizerJson(only.vocab, { lowercase: true, stripAccents: null, handleChineseChars: true })));
    assert.equal(json.toJson(), await fs.readFile(shared('bert-base-uncased', 'tokenizer.json'), 'utf8'), 'a tokenizer.json source runs its own text');
  });

  it('tokenize_chinese_chars false in tokenizer_config.json keeps CJK runs as words', async () => {
    const dir = await fs.mkdtemp(path.join(TMP, 'tok-'));
    await fs.copyFile(shared('bert-base-uncased', 'vocab.txt'), path.join(dir, 'vocab.txt'));
    await fs.writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ tokenize_chinese_chars: false }));
    const whole = await BertTokenizer.fromDir(dir);
    assert.deepEqual(whole.tokenize('北京'), ['北', '##京']);
    assert.deepEqual(vocab.tokenize('北京'), ['北', '京']);
    assert.deepEqual(whole.encode('北京'), [101, 1781, 30281, 102]);
  });

  it('model_max_length in tokenizer_config.json sets the default truncation; HF\'s "no limit" is 512; a bad value names the file', async () => {
    const dir = await fs.mkdtemp(path.join(TMP, 'tok-'));
    await fs.copyFile(shared('bert-base-uncased', 'vocab.txt'), path.join(dir, 'vocab.txt'));
    const withMax = async (v: unknown) => {
      await fs.writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: v }));
      return BertTokenizer.fromDir(dir);
    };
    assert.equal((await withMax(16)).encode('word '.repeat(600)).length, 16);
    assert.equal((await withMax(1e30)).modelMaxLength, 512);
    assert.equal((await withMax(null)).modelMaxLength, 512);
    const file = escapeRegExp(path.join(dir, 'tokenizer_config.json'));
    for (const [bad, shown] of [[-5, '-5'], [1, '1'], [12.5, '12.5'], ['512', '"512"'], [true, 'true']] as const) {
      await assert.rejects(withMax(bad), new RegExp(`^UserError: ${file}: model_max_length must be an integer >= 2, got ${shown.replace('.', '\\.')}$`));
    }
  });

  it('a directory with neither file is a clear error', async () => {
    const dir = await fs.mkdtemp(path.join(TMP, 'tok-'));
    await assert.rejects(BertTokenizer.fromDir(dir), /no tokenizer\.json or vocab\.txt/);
  });
});
