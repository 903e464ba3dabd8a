/**
 * README.md model card for an export: what the model is (base model, architecture), how it was trained (objective
 * and hyperparameters from the run's config.yaml, data from subset-manifest.json), how well (the run's STS table
 * from eval.json), and how to load it in sentence-transformers, transformers and transformers.js. Every number
 * comes from the run's files; what a plain checkpoint directory cannot tell is said to be unknown.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { STS_TASK_INFO, STS_TEST_TASKS } from '../../eval/sts.js';
import { exists, readJsonFile } from '../fsutil.js';
import { looksLikeModelId } from '../model/hub.js';
import { STATE_FILE } from '../train/checkpoint.js';
import { readYamlFile } from '../train/config.js';
import { CONFIG_FILE, EVAL_FILE, SUBSET_MANIFEST_FILE } from '../train/runFiles.js';
import type { ExportSource } from './hf.js';

export type CardFormat = 'hf' | 'sentence-transformers' | 'onnx' | 'tfjs';

/** What the run directory says about the checkpoint (all optional: a bare checkpoint has none of it). */
export interface RunInfo {
  /** config.yaml, parsed. */
  config: Record<string, Record<string, unknown>> | null;
  /** subset-manifest.json, parsed. */
  manifest: Record<string, Record<string, unknown>> | null;
  /** eval.json when it describes this checkpoint. */
  evalReport: { results: Record<string, { spearman: number | null }>; avg7: number | null; average: number | null } | null;
  /** Why eval.json was not used, when it exists. */
  evalNote: string | null;
  /** trainer_state.json of the checkpoint. */
  state: { step?: number; totalSteps?: number; bestScore?: number | null; bestStep?: number | null } | null;
}


/** Reads config.yaml, subset-manifest.json, eval.json and trainer_state.json where present. */
export async function readRunInfo(src: ExportSource): Promise<RunInfo> {
  const info: RunInfo = { config: null, manifest: null, evalReport: null, evalNote: null, state: null };
  const statePath = path.join(src.checkpointDir, STATE_FILE);
  if (await exists(statePath)) info.state = (await readJsonFile(statePath)) as RunInfo['state'];
  if (src.runDir === null) return info;
  const cfgPath = path.join(src.runDir, CONFIG_FILE);
  if (await exists(cfgPath)) {
    info.config = (await readYamlFile(cfgPath, 'config')) as RunInfo['config'];
  }
  const manPath = path.join(src.runDir, SUBSET_MANIFEST_FILE);
  if (await exists(manPath)) info.manifest = (await readJsonFile(manPath)) as RunInfo['manifest'];
  const evalPath = path.join(src.runDir, EVAL_FILE);
  if (await exists(evalPath)) {
    const report = (await readJsonFile(evalPath)) as RunInfo['evalReport'] & { meta?: { model?: string } };
    // eval.json scores the run's best checkpoint; use it only when that is the checkpoint exported.
    const evaluated = typeof report?.meta?.model === 'string' ? await fs.realpath(report.meta.model).catch(() => null) : null;
    const exported = await fs.realpath(src.checkpointDir);
    if (evaluated === exported) info.evalReport = report;
    else info.evalNote = `${evalPath} scores ${report?.meta?.model ?? 'another checkpoint'}, not the exported ${src.checkpointDir}`;
  }
  return info;
}

const fmt = (v: unknown): string => (v === null || v === undefined ? 'null' : typeof v === 'object' ? JSON.stringify(v) : String(v));

function table(rows: [string, string][]): string {
  return ['| key | value |', '|---|---|', ...rows.map(([k, v]) => `| ${k} | ${v.replace(/\|/g, '\\|')} |`)].join('\n');
}

/** The published STS table layout (Spearman x 100, two decimals) from eval.json. */
export function stsTableMarkdown(report: NonNullable<RunInfo['evalReport']>): string {
  const header: string[] = [];
  const row: string[] = [];
  for (const t of STS_TEST_TASKS) {
    const r = report.results[STS_TASK_INFO[t].senteval];
    if (r === undefined) continue;
    header.push(STS_TASK_INFO[t].label);
    row.push(r.spearman === null ? 'n/a' : r.spearman.toFixed(2));
  }
  const avg = report.avg7 ?? report.average;
  header.push(report.avg7 !== null ? 'Avg' : `Avg (${header.length} of ${STS_TEST_TASKS.length})`);
  row.push(avg === null ? 'n/a' : avg.toFixed(2));
  const dev = report.results[STS_TASK_INFO['stsb-dev'].senteval];
  if (dev !== undefined) {
    header.push(STS_TASK_INFO['stsb-dev'].label);
    row.push(dev.spearman === null ? 'n/a' : dev.spearman.toFixed(2));
  }
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, `| ${row.join(' | ')} |`].join('\n');
}

export interface CardOptions {
  format: CardFormat;
  /** Folder name of the export (the model id transformers.js uses with a local model path). */
  name: string;
  /** onnx: whether onnx/model_quantized.onnx was written. */
  quantized?: boolean;
  files: string[];
}

/** Builds README.md. */
export function buildModelCard(src: ExportSource, run: RunInfo, opts: CardOptions): string {
  const c = src.config;
  const cfg = run.config;
  const init = cfg?.['model']?.['init'];
  const baseModel = typeof init === 'string' ? init : null;
  const objective = cfg?.['objective'] ?? null;
  const style = typeof objective?.['style'] === 'string' ? objective['style'] : null;
  const st = opts.format === 'sentence-transformers';
  const front = ['---',
    `library_name: ${st ? 'sentence-transformers' : opts.format === 'onnx' ? 'transformers.js' : 'transformers'}`,
    `pipeline_tag: ${st ? 'sentence-similarity' : 'feature-extraction'}`,
    'tags:', '- sentence-embeddings', '- feature-extraction', '- sentence-similarity', '- micse',
    ...(st ? ['- sentence-transformers'] : []), ...(opts.format === 'onnx' ? ['- onnx'] : []),
    ...(baseModel !== null && baseModel !== 'random' && looksLikeModelId(baseModel) ? [`base_model: ${baseModel}`] : []),
    '---'];
  const lines: string[] = [...front, '', `# ${opts.name}`, ''];
  lines.push(`A BERT sentence encoder ${style === 'simcse' ? 'trained with unsupervised SimCSE (InfoNCE only)' : style === 'micse' ? 'trained with miCSE (InfoNCE + attention mutual-information regulariser)' : 'exported from a checkpoint directory (no run configuration found, so the training objective is unknown)'} by micse-tfjs.`,
    '',
    'The sentence embedding is the raw `[CLS]` vector of the last hidden state (`last_hidden_state[:, 0]`, "cls_before_pooler"); ' +
    'compare sentences with cosine similarity.',
    '',
    '**The training-only MLP head (Linear + tanh on `[CLS]`) is not part of this export and is not folded into BertModel\'s pooler**: ' +
    'miCSE and SimCSE evaluate the raw `[CLS]` vector. transformers\' `pooler_output` is BertModel\'s own pooler, which training never used' +
    (src.initialised.some((n) => n.startsWith('pooler.')) ? ' (the checkpoint had none, so it was initialised at random at export)' : '') +
    '; do not use it as the embedding.', '');

  lines.push('## Model', '', table([
    ['base model', baseModel ?? 'unknown (no config.yaml beside the checkpoint)'],
    ['architecture', `BertModel: ${c.numHiddenLayers} layers, hidden ${c.hiddenSize}, ${c.numAttentionHeads} heads, intermediate ${c.intermediateSize}, ${c.hiddenAct}`],
    ['vocabulary', `${c.vocabSize} (WordPiece, ${src.tokenizer.doLowerCase ? 'lower-cased' : 'cased'})`],
    ['max positions', String(c.maxPositionEmbeddings)],
    ['embedding dimension', String(c.hiddenSize)],
    ['checkpoint', run.state?.step !== undefined ? `step ${run.state.step}${run.state.totalSteps !== undefined ? ` of ${run.state.totalSteps}` : ''}` : 'unknown step'],
    ...(run.state?.bestScore !== undefined && run.state.bestScore !== null
      ? [['STS-B dev Spearman at selection', `${run.state.bestScore.toFixed(2)} (step ${fmt(run.state.bestStep)})`] as [string, string]] : []),
  ]), '');

  lines.push('## Training', '');
  if (cfg === null) lines.push('Unknown: the checkpoint was exported without its run directory (no config.yaml).', '');
  else {
    lines.push('From the run\'s config.yaml (every key, defaults included, as `micse train` wrote it):', '');
    for (const section of ['objective', 'optim', 'train', 'model']) {
      const body = cfg[section];
      if (body === undefined || body === null) continue;
      lines.push(`### ${section}`, '', table(Object.entries(body).map(([k, v]) => [`${section}.${k}`, fmt(v)])), '');
    }
  }

  lines.push('## Data', '');
  const data = cfg?.['data'];
  if (data !== undefined && data !== null) lines.push(table(Object.entries(data).map(([k, v]) => [`data.${k}`, fmt(v)])), '');
  const m = run.manifest;
  if (m !== null) {
    lines.push('Training sentences (subset-manifest.json):', '', table([
      ['corpus', `${fmt(m['source']?.['path'])} (sha256 ${fmt(m['source']?.['sha256'])})`],
      ['candidates', fmt(m['input']?.['candidates'])],
      ['subset', `fraction ${fmt(m['selection']?.['fraction'])}, count ${fmt(m['selection']?.['count'])}, size ${fmt(m['selection']?.['size'])}, seed ${fmt(m['selection']?.['seed'])}`],
      ['rule', fmt(m['selection']?.['rule'])],
      ['subset sha256', fmt(m['subset']?.['sha256'])],
    ]), '');
  } else lines.push('No subset-manifest.json beside the checkpoint: the training sentences are unknown.', '');

  lines.push('## Evaluation', '');
  if (run.evalReport !== null) {
    lines.push('SentEval STS protocol as in SimCSE/miCSE (Spearman x 100 of cosine similarities; STS12-16 "all" setting; ' +
      'STS-B and SICK-R test splits), from the run\'s eval.json:', '', stsTableMarkdown(run.evalReport), '');
  } else lines.push(run.evalNote !== null ? `Not included: ${run.evalNote}.` : 'No eval.json in the run: this checkpoint was not evaluated on the STS tasks.', '');

  lines.push('## Usage', '', '### sentence-transformers', '', '```python', 'from sentence_transformers import SentenceTransformer',
    '', `model = SentenceTransformer("path/to/${st ? opts.name : 'sentence-transformers'}")  # the sentence-transformers export`,
    'embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])',
    'print(model.similarity(embeddings, embeddings))  # cosine', '```', '',
    '### transformers', '', '```python', 'import torch', 'from transformers import AutoModel, AutoTokenizer', '',
    `path = "path/to/${opts.format === 'hf' || st ? opts.name : 'hf'}"  # the hf or sentence-transformers export`,
    'tokenizer = AutoTokenizer.from_pretrained(path)', 'model = AutoModel.from_pretrained(path).eval()',
    'batch = tokenizer(["A man is playing a guitar."], padding=True, truncation=True, return_tensors="pt")',
    'with torch.no_grad():', '    embeddings = model(**batch).last_hidden_state[:, 0]  # raw [CLS], not pooler_output', '```', '',
    '### transformers.js', '', '```js', 'import { env, pipeline } from "@huggingface/transformers";', '',
    'env.localModelPath = "path/to";  // the folder that holds the onnx export', 'env.allowRemoteModels = false;',
    `const extractor = await pipeline("feature-extraction", "${opts.format === 'onnx' ? opts.name : 'onnx'}", { dtype: "fp32" });`,
    'const output = await extractor(["A man is playing a guitar."], { pooling: "cls" });  // [batch, hidden]',
    '```', '',
    'transformers.js reads `onnx/model.onnx` for `dtype: "fp32"` and `onnx/model_quantized.onnx` for `dtype: "q8"` (its default on the ' +
    `wasm device, i.e. in browsers)${opts.format === 'onnx' ? (opts.quantized === true ? '; this export has both' : '; this export has only the fp32 file, so pass `dtype: "fp32"`') : ''}. ` +
    'The ONNX graph uses opset 17; inputs input_ids, attention_mask, token_type_ids (int64 [batch, sequence]); output last_hidden_state.', '');
  if (opts.format === 'tfjs') {
    lines.push('### TF.js (this folder)', '', '```js',
      'const { weightSpecs, weightData } = await tf.io.http("model.json").load();',
      'const weights = tf.io.decodeWeights(weightData, weightSpecs);  // Hugging Face names, Linear weights [out, in]', '```', '',
      'micse-tfjs reads this folder directly: `loadPretrained("path/to/tfjs")`.', '');
  }
  lines.push('## Files', '', ...opts.files.map((f) => `- \`${f}\``), '');
  return lines.join('\n');
}
