/**
 * Export acceptance (issue 7): hf and tfjs read back by loadPretrained give the source's embeddings (1e-6); the ONNX
 * file through onnxruntime-node and through transformers.js' feature-extraction pipeline gives `embed`'s [CLS]
 * vectors (1e-4; the int8 file within its measured tolerance); the sentence-transformers layout file by file;
 * generated tokenizer files; errors that write nothing. A tiny run (2 steps of tiny-h32-l4, wasm) is the source.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { BertTokenizer } from '../src/data/tokenizer.js';
import { UserError } from '../src/errors.js';
import { exportCheckpoint, onnxClsEmbeddings } from '../src/export/index.js';
import { EXPORT_FORMATS } from '../src/export/formats.js';
import { encodeModel } from '../src/kernels/platform/onnxProto.js';
import { selectBackend } from '../src/model/backend.js';
import { embed } from '../src/model/embed.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { readSafetensors } from '../src/model/safetensors.js';
import { tf } from '../src/model/tf.js';
import { bertWeightTable } from '../src/model/weights.js';
import { defaultConfig, mergeConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { ROOT, shared, SKIP_NO_SHARED, testTempDir } from './helpers.js';

const run = promisify(execFile);
const CLI = path.join(ROOT, 'bin', 'micse.js');
const SENTENCES = [
  'a man is playing a guitar .', 'A woman is slicing an onion.', 'hello', 'café déjà vu',
  'two dogs are running through a field of tall grass near the river bank .', '東京 is a city, isn\'t it?',
];
/** Measured: onnx/model_quantized.onnx (dynamic int8) vs TF.js on this run: max |diff| ~1e-3, cosine > 0.9999. */
const INT8_MAX_ABS = 5e-3;
const INT8_MIN_COSINE = 0.999;

const tmpRoot = testTempDir('export');
let runDir = '';
let all = ''; // default export of runDir: hf/, sentence-transformers/, onnx/, tfjs/
let reference: number[][] = []; // embed() of SENTENCES on runDir/best

async function tmp(prefix: string): Promise<string> {
  return fs.mkdtemp(path.join(tmpRoot, `${prefix}-`));
}

async function embedDir(dir: string): Promise<number[][]> {
  const { model, tokenizer } = await loadPretrained(dir);
  const v = await embed(model, tokenizer, SENTENCES);
  model.dispose();
  return v;
}

function compare(a: number[][], b: number[][]): { maxAbs: number; minCos: number } {
  assert.equal(a.length, b.length);
  let maxAbs = 0;
  let minCos = 1;
  a.forEach((row, i) => {
    assert.equal(row.length, b[i]!.length);
    let dot = 0;
    let na = 0;
    let nb = 0;
    row.forEach((x, j) => {
      const y = b[i]![j]!;
      maxAbs = Math.max(maxAbs, Math.abs(x - y));
      dot += x * y;
      na += x * x;
      nb += y * y;
    });
    minCos = Math.min(minCos, dot / Math.sqrt(na * nb));
  });
  return { maxAbs, minCos };
}

async function readJson(file: string): Promise<unknown> {
  return JSON.parse(await fs.readFile(file, 'utf8')) as unknown;
}

async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) {
      const p = path.join(e.parentPath, e.name);
      out.set(path.relative(dir, p), (await fs.readFile(p)).toString('base64'));
    }
  }
  return out;
}

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [CLI, ...args], { cwd: ROOT, maxBuffer: 1 << 24 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

describe('export', { skip: SKIP_NO_SHARED }, () => {
  before(async () => {
    await selectBackend('wasm');
    runDir = path.join(tmpRoot, 'run');
    const config = mergeConfig(defaultConfig(), {
      model: { init: shared('hf-reference', 'tiny-h32-l4') },
      data: { train: shared('wiki1m-head.txt'), count: 16, maxSeqLen: 16, senteval: shared('senteval') },
      objective: { minLayer: 0, maxLayer: 2, lambda: 0.01 },
      optim: { learningRate: 1e-3 },
      train: { batchSize: 8, maxSteps: 2, evalSteps: 2, evalBatchSize: 256, backend: 'wasm', output: runDir, finalEval: true, seed: 7 },
    }, 'export test');
    await train(config, { quiet: true, log: () => undefined });
    reference = await embedDir(path.join(runDir, 'best'));
    all = path.join(tmpRoot, 'all');
    const before = tf.memory().numTensors;
    const result = await exportCheckpoint({ checkpoint: runDir, output: all, quantize: 'int8' });
    assert.equal(tf.memory().numTensors, before, 'export leaves no tensors behind');
    assert.deepEqual(result.written.map((w) => w.format), [...EXPORT_FORMATS]);
    assert.equal(result.runDir, runDir);
    assert.equal(await fs.realpath(result.checkpointDir), await fs.realpath(path.join(runDir, 'best')));
    assert.equal(result.onnxChecks.length, 2);
    assert.ok(result.onnxChecks[0]!.maxAbsDiff < 1e-4, `fp32 onnx check ${result.onnxChecks[0]!.maxAbsDiff}`);
  });

  it('hf: BertModel names only, config.json, and loadPretrained gives the source embeddings within 1e-6', async () => {
    const dir = path.join(all, 'hf');
    const { tensors, metadata } = await readSafetensors(path.join(dir, 'model.safetensors'));
    const cfg = (await readJson(path.join(dir, 'config.json'))) as Record<string, unknown>;
    assert.equal(cfg['model_type'], 'bert');
    assert.deepEqual(cfg['architectures'], ['BertModel']);
    assert.equal(cfg['hidden_size'], 32);
    assert.equal(metadata['format'], 'pt');
    const expected = bertWeightTable((await loadPretrained(dir)).config);
    assert.deepEqual([...tensors.keys()].sort(), expected.map((s) => s.name).sort(), 'exactly BertModel\'s tensors, no MLP head');
    for (const s of expected) assert.deepEqual(tensors.get(s.name)!.shape, s.shape, s.name);
    const source = (await readSafetensors(path.join(runDir, 'best', 'model.safetensors'))).tensors;
    for (const [name, t] of source) assert.deepEqual(tensors.get(name)!.data, t.data, `${name} copied exactly`);
    for (const f of ['tokenizer.json', 'vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json', 'README.md']) {
      assert.ok((await fs.stat(path.join(dir, f))).size > 0, f);
    }
    // tiny-h32-l4 ships no special_tokens_map.json: the export writes transformers' BERT map
    assert.deepEqual(await readJson(path.join(dir, 'special_tokens_map.json')),
      { unk_token: '[UNK]', sep_token: '[SEP]', pad_token: '[PAD]', cls_token: '[CLS]', mask_token: '[MASK]' });
    const tokCfg = (await readJson(path.join(dir, 'tokenizer_config.json'))) as Record<string, unknown>;
    assert.equal(tokCfg['tokenizer_class'], 'BertTokenizer');
    assert.equal(tokCfg['do_lower_case'], true);
    const { maxAbs } = compare(await embedDir(dir), reference);
    assert.ok(maxAbs <= 1e-6, `max |diff| ${maxAbs}`);
    const card = await fs.readFile(path.join(dir, 'README.md'), 'utf8');
    assert.match(card, /not folded into BertModel's pooler/);
  });

  it('tfjs: model.json + shards in tf.io format, read back by loadPretrained within 1e-6', async () => {
    const dir = path.join(all, 'tfjs');
    const manifest = (await readJson(path.join(dir, 'model.json'))) as {
      format: string; weightsManifest: { paths: string[]; weights: { name: string; shape: number[]; dtype: string }[] }[];
    };
    assert.equal(manifest.weightsManifest.length, 1);
    const group = manifest.weightsManifest[0]!;
    assert.ok(group.weights.every((w) => w.dtype === 'float32'));
    let bytes = 0;
    for (const p of group.paths) bytes += (await fs.stat(path.join(dir, p))).size;
    assert.equal(bytes, group.weights.reduce((a, w) => a + 4 * w.shape.reduce((x, y) => x * y, 1), 0));
    // tf.io decodes the manifest itself
    const buffers = await Promise.all(group.paths.map(async (p) => {
      const b = await fs.readFile(path.join(dir, p));
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
    }));
    const named = tf.io.decodeWeights(buffers, group.weights as tf.io.WeightsManifestEntry[]);
    const emb = named['embeddings.word_embeddings.weight']!;
    assert.deepEqual(emb.shape, [30522, 32]);
    tf.dispose(Object.values(named));
    assert.equal(await fs.access(path.join(dir, 'model.safetensors')).then(() => true, () => false), false);
    const { maxAbs } = compare(await embedDir(dir), reference);
    assert.ok(maxAbs <= 1e-6, `max |diff| ${maxAbs}`);
  });

  it('tfjs: small shards split tensors across files and still load', async () => {
    const out = path.join(await tmp('shards'), 'tfjs');
    await exportCheckpoint({ checkpoint: runDir, output: out, formats: ['tfjs'], shardBytes: 1_000_003 });
    const manifest = (await readJson(path.join(out, 'model.json'))) as { weightsManifest: { paths: string[] }[] };
    assert.deepEqual(manifest.weightsManifest[0]!.paths, ['group1-shard1of5.bin', 'group1-shard2of5.bin', 'group1-shard3of5.bin',
      'group1-shard4of5.bin', 'group1-shard5of5.bin']);
    const { maxAbs } = compare(await embedDir(out), reference);
    assert.ok(maxAbs <= 1e-6, `max |diff| ${maxAbs}`);
  });

  it('onnx: onnxruntime-node gives embed()\'s [CLS] vectors within 1e-4; the int8 file stays close', async () => {
    const dir = path.join(all, 'onnx');
    const tokenizer = await BertTokenizer.fromDir(dir);
    const fp32 = compare(await onnxClsEmbeddings(path.join(dir, 'onnx', 'model.onnx'), tokenizer, SENTENCES), reference);
    assert.ok(fp32.maxAbs <= 1e-4, `fp32 max |diff| ${fp32.maxAbs}`);
    const q = compare(await onnxClsEmbeddings(path.join(dir, 'onnx', 'model_quantized.onnx'), tokenizer, SENTENCES), reference);
    assert.ok(q.maxAbs <= INT8_MAX_ABS && q.minCos >= INT8_MIN_COSINE, `int8 max |diff| ${q.maxAbs}, min cosine ${q.minCos}`);
    assert.ok(q.maxAbs > 0, 'the int8 file really is quantised');
    console.log(`onnxruntime vs TF.js: fp32 max |diff| ${fp32.maxAbs.toExponential(2)}; int8 max |diff| ${q.maxAbs.toExponential(2)}, min cosine ${q.minCos.toFixed(7)}`);
    const header = await fs.readFile(path.join(dir, 'onnx', 'model.onnx'));
    assert.ok(header.includes(Buffer.from('LayerNormalization')) && header.includes(Buffer.from('last_hidden_state')));
    const quant = await fs.readFile(path.join(dir, 'onnx', 'model_quantized.onnx'));
    assert.ok(quant.includes(Buffer.from('MatMulInteger')) && quant.includes(Buffer.from('DynamicQuantizeLinear')));
  });

  it('onnx: transformers.js feature-extraction (local files only, pooling cls) within 1e-4 of embed()', async () => {
    const { env, pipeline } = await import('@huggingface/transformers');
    env.allowRemoteModels = false;
    env.localModelPath = all + path.sep;
    const extractor = await pipeline('feature-extraction', 'onnx', { dtype: 'fp32' });
    const out = await extractor(SENTENCES, { pooling: 'cls' });
    const fp32 = compare(out.tolist() as number[][], reference);
    assert.ok(fp32.maxAbs <= 1e-4, `transformers.js fp32 max |diff| ${fp32.maxAbs}`);
    await extractor.dispose();
    const q8 = await pipeline('feature-extraction', 'onnx', { dtype: 'q8' });
    const qOut = compare((await q8(SENTENCES, { pooling: 'cls' })).tolist() as number[][], reference);
    assert.ok(qOut.maxAbs <= INT8_MAX_ABS && qOut.minCos >= INT8_MIN_COSINE, `transformers.js q8 max |diff| ${qOut.maxAbs}, min cosine ${qOut.minCos}`);
    await q8.dispose();
    console.log(`transformers.js vs TF.js: fp32 max |diff| ${fp32.maxAbs.toExponential(2)}; q8 max |diff| ${qOut.maxAbs.toExponential(2)}, min cosine ${qOut.minCos.toFixed(7)}`);
  });

  it('sentence-transformers: the layout file by file, and the model card from the run\'s files', async () => {
    const dir = path.join(all, 'sentence-transformers');
    assert.deepEqual(await readJson(path.join(dir, 'modules.json')), [
      { idx: 0, name: '0', path: '', type: 'sentence_transformers.models.Transformer' },
      { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' },
    ]);
    assert.deepEqual(await readJson(path.join(dir, 'sentence_bert_config.json')), { max_seq_length: 512, do_lower_case: false });
    assert.deepEqual(await readJson(path.join(dir, '1_Pooling', 'config.json')), {
      word_embedding_dimension: 32, pooling_mode_cls_token: true, pooling_mode_mean_tokens: false, pooling_mode_max_tokens: false,
      pooling_mode_mean_sqrt_len_tokens: false, pooling_mode_weightedmean_tokens: false, pooling_mode_lasttoken: false, include_prompt: true,
    });
    assert.deepEqual(await readJson(path.join(dir, 'config_sentence_transformers.json')), {
      __version__: { sentence_transformers: '3.0.0' }, prompts: {}, default_prompt_name: null, similarity_fn_name: 'cosine',
    });
    // module 0 (path "") is the transformers model: the same files as the hf export
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json']) {
      assert.deepEqual(await fs.readFile(path.join(dir, f)), await fs.readFile(path.join(all, 'hf', f)), f);
    }
    const { maxAbs } = compare(await embedDir(dir), reference);
    assert.ok(maxAbs <= 1e-6);

    const card = await fs.readFile(path.join(dir, 'README.md'), 'utf8');
    assert.match(card, /^---\nlibrary_name: sentence-transformers\npipeline_tag: sentence-similarity\n/);
    const cfg = YAML.parse(await fs.readFile(path.join(runDir, 'config.yaml'), 'utf8')) as Record<string, Record<string, unknown>>;
    for (const [k, v] of Object.entries(cfg['objective']!)) assert.ok(card.includes(`| objective.${k} | ${String(v)} |`), `objective.${k}`);
    for (const k of ['learningRate', 'maxGradNorm', 'schedule']) assert.ok(card.includes(`| optim.${k} | ${String(cfg['optim']![k])} |`), k);
    assert.ok(card.includes(`| train.batchSize | 8 |`));
    const manifest = (await readJson(path.join(runDir, 'subset-manifest.json'))) as { subset: { sha256: string } };
    assert.ok(card.includes(manifest.subset.sha256), 'subset manifest hash');
    const evalJson = (await readJson(path.join(runDir, 'eval.json'))) as { results: Record<string, { spearman: number }>; avg7: number };
    const row = ['STS12', 'STS13', 'STS14', 'STS15', 'STS16', 'STSBenchmark', 'SICKRelatedness'].map((t) => evalJson.results[t]!.spearman.toFixed(2));
    assert.ok(card.includes(`| ${[...row, evalJson.avg7.toFixed(2)].join(' | ')} |`), 'STS table from eval.json');
    assert.match(card, /\| STS12 \| STS13 \| STS14 \| STS15 \| STS16 \| STS-B \| SICK-R \| Avg \|/);
    for (const lib of ['from sentence_transformers import SentenceTransformer', 'from transformers import AutoModel', '@huggingface/transformers']) {
      assert.ok(card.includes(lib), lib);
    }
    assert.match(card, /not folded into BertModel's pooler/);
  });

  it('a checkpoint without tokenizer.json or special_tokens_map.json: generated files tokenize like the reference tokenizer.json', async () => {
    const src = await tmp('vocab-only');
    const ref = shared('hf-reference', 'tiny-h32-l4');
    for (const f of ['config.json', 'model.safetensors']) await fs.symlink(path.join(ref, f), path.join(src, f));
    for (const f of ['vocab.txt', 'tokenizer_config.json']) await fs.writeFile(path.join(src, f), await fs.readFile(path.join(ref, f)));
    const out = path.join(await tmp('vocab-out'), 'hf');
    const result = await exportCheckpoint({ checkpoint: src, output: out, formats: ['hf'] });
    assert.equal(result.runDir, null);
    const generated = await BertTokenizer.fromDir(out);
    assert.equal(generated.files.builtFrom, 'tokenizer.json');
    const original = await BertTokenizer.fromDir(ref);
    const texts = [...SENTENCES, 'Ünïcödé ACCENTS and 中文字符 mixed', 'tabs\tand\nnewlines', 'supercalifragilisticexpialidocious', ''];
    for (const t of texts) assert.deepEqual(generated.encode(t), original.encode(t), t);
    const card = await fs.readFile(path.join(out, 'README.md'), 'utf8');
    assert.match(card, /training objective is unknown/);
    assert.match(card, /No eval\.json/);
  });

  it('not a checkpoint, a non-empty output, --quantize without onnx: clear errors, nothing written or overwritten', async () => {
    const empty = await tmp('not-a-checkpoint');
    const out = path.join(await tmp('out'), 'x');
    await assert.rejects(exportCheckpoint({ checkpoint: empty, output: out }), (e: unknown) =>
      e instanceof UserError && /not a checkpoint or run directory/.test(e.message));
    await assert.rejects(exportCheckpoint({ checkpoint: path.join(empty, 'nope'), output: out }), /no such directory/);
    assert.equal(await fs.access(out).then(() => true, () => false), false, 'no output created');
    await assert.rejects(exportCheckpoint({ checkpoint: runDir, output: out, formats: ['hf'], quantize: 'int8' }), /--quantize applies to the onnx format/);

    const before = await snapshot(all);
    await assert.rejects(exportCheckpoint({ checkpoint: runDir, output: all, formats: ['hf'] }), (e: unknown) =>
      e instanceof UserError && /not empty .*--force/.test(e.message));
    assert.deepEqual(await snapshot(all), before, 'existing export untouched');
    await assert.rejects(exportCheckpoint({ checkpoint: runDir, output: path.join(runDir, 'best'), force: true }), /overlaps the checkpoint/);
    assert.equal(await fs.access(path.join(runDir, 'best', 'mlp_head.safetensors')).then(() => true, () => false), true);
    const siblings = await fs.readdir(tmpRoot);
    assert.ok(!siblings.some((s) => s.includes('.tmp-export-') || s.includes('.old-export-')), siblings.join(', '));
  });

  it('--force replaces the output as a whole', async () => {
    const out = await tmp('force');
    await fs.writeFile(path.join(out, 'stale.txt'), 'old');
    await exportCheckpoint({ checkpoint: path.join(runDir, 'best'), output: out, formats: ['hf'], force: true });
    const files = (await fs.readdir(out)).sort();
    assert.deepEqual(files, ['README.md', 'config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json',
      'tokenizer_config.json', 'vocab.txt']);
  });

  it('CLI: exit 2 with one line for a non-empty output; a single --format writes into the output itself', async () => {
    const r = await cli(['export', '--checkpoint', runDir, '--output', all, '--format', 'hf', '--backend', 'wasm']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /micse: .*not empty.*--force/);
    const out = path.join(await tmp('cli'), 'model');
    const ok = await cli(['export', '--checkpoint', runDir, '--output', out, '--format', 'onnx', '--backend', 'wasm']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /onnx check onnx\/model\.onnx: max \|onnxruntime - TF\.js\| = /);
    assert.ok((await fs.stat(path.join(out, 'onnx', 'model.onnx'))).size > 1000);
  });

  it('protobuf varints', () => {
    // ModelProto field 1 (ir_version) is the first thing written: tag 0x08, then the varint.
    const irVersionBytes = (irVersion: number, n: number) => [...encodeModel({
      irVersion, opset: 17, producerName: 'p', producerVersion: '1', graph: { name: 'g', nodes: [], initializers: [], inputs: [], outputs: [] },
    }).subarray(1, 1 + n)];
    assert.deepEqual(irVersionBytes(0, 1), [0]);
    assert.deepEqual(irVersionBytes(300, 2), [0xac, 0x02]);
    assert.deepEqual(irVersionBytes(-1, 10), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  });
});
