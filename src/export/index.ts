/**
 * `exportCheckpoint`: a checkpoint (or a run directory: its best/, else last/) -> the layouts inference stacks
 * load without edits: `hf` (transformers), `sentence-transformers`, `onnx` (transformers.js / onnxruntime) and
 * `tfjs` (tf.io weights). One format is written into the output directory itself; several go into subfolders
 * named after the formats. Each folder gets a README.md model card.
 *
 * Nothing is overwritten by accident: the source is read and validated first, a non-empty output needs `force`,
 * and everything is written into a sibling staging folder that is renamed into place only when complete (with
 * `force` the previous output is moved aside first and removed last), so a failure leaves the old output whole. A
 * kill leaves those siblings behind, named by the killed process's pid; the next export to the same output
 * (`recoverExport`) moves a previous output back if the kill came between the two renames, and removes the rest.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { faultPoint } from '../faultPoints.js';
import { ensureDir, exists, recoverReplacement, refuseNonEmptyDir, refuseReplacingDir, replacementSibling, writeFileAtomic } from '../fsutil.js';
import { embed } from '../model/embed.js';
import { loadPretrained, resolveCheckpoint } from '../model/pretrained.js';
import { createProgress } from '../progress.js';
import { CONFIG_FILE } from '../train/runFiles.js';
import { cosine } from '../use/vectors.js';
import { EXPORT_FORMATS, ONNX_QUANTIZATIONS, type ExportFormat } from './formats.js';
import { writeHf, type ExportSource } from './hf.js';
import { buildModelCard, readRunInfo, type RunInfo } from './modelCard.js';
import { ONNX_MODEL_FILE, ONNX_QUANTIZED_FILE, onnxClsEmbeddings, writeOnnx } from './onnx/index.js';
import type { OnnxQuantization } from './onnx/graph.js';
import { writeSentenceTransformers } from './sentenceTransformers.js';
import { writeTfjs } from './tfjs.js';


/** Sentences the ONNX files are checked on after writing (short, long, accented, punctuation). */
export const VERIFY_SENTENCES = [
  'a man is playing a guitar .', 'hello', 'café déjà vu',
  'two dogs are running through a field of tall grass near the river bank .',
];
/** Largest |ONNX - TF.js| allowed on [CLS] vectors: float32 noise is ~1e-6; the int8 file is reported, not held to it. */
export const ONNX_VERIFY_TOLERANCE = 1e-4;

export interface ExportOptions {
  /** Checkpoint directory or run directory. */
  checkpoint: string;
  output: string;
  /** Default: all four. */
  formats?: readonly ExportFormat[];
  /** Replace a non-empty output directory. */
  force?: boolean;
  /** onnx: also write onnx/model_quantized.onnx (dynamic int8). */
  quantize?: OnnxQuantization;
  /** Run the ONNX files through onnxruntime and compare with the TF.js encoder (default true). */
  verify?: boolean;
  /** Progress lines on stderr. */
  progress?: boolean;
  /** tfjs shard size in bytes. */
  shardBytes?: number;
}

export interface OnnxCheck {
  file: string;
  sentences: number;
  /** max |ONNX - TF.js| over the [CLS] vectors of VERIFY_SENTENCES */
  maxAbsDiff: number;
  /** smallest cosine between the two vectors of a sentence */
  minCosine: number;
}

export interface ExportResult {
  output: string;
  checkpointDir: string;
  runDir: string | null;
  written: { format: ExportFormat; dir: string; files: string[] }[];
  onnxChecks: OnnxCheck[];
  /** eval.json not used, and why (or null). */
  evalNote: string | null;
}

async function isDir(p: string): Promise<boolean> {
  return fs.stat(p).then((s) => s.isDirectory(), () => false);
}

/** The run directory a checkpoint belongs to: `RUN/best`, `RUN/last` or `RUN/checkpoints/step-N` with RUN/config.yaml. */
async function findRunDir(arg: string, checkpointDir: string): Promise<string | null> {
  if (path.resolve(checkpointDir) !== path.resolve(arg)) return arg; // a run directory was passed
  const candidates: string[] = [];
  if (['best', 'last'].includes(path.basename(path.resolve(arg)))) candidates.push(path.dirname(path.resolve(arg)));
  const real = await fs.realpath(checkpointDir);
  if (path.basename(path.dirname(real)) === 'checkpoints') candidates.push(path.dirname(path.dirname(real)));
  for (const c of candidates) if (await exists(path.join(c, CONFIG_FILE))) return c;
  return null;
}

/** An ExportSource whose model is still loaded (for the ONNX check); call `dispose` when done. */
export interface LoadedExportSource extends ExportSource {
  /** [CLS] vectors from the TF.js encoder (`embed`, cls_before_pooler). */
  embedProbe: (sentences: string[]) => Promise<number[][]>;
  dispose: () => void;
}

/** Reads and validates the checkpoint to export (run directory -> best/, else last/). */
export async function readExportSource(checkpoint: string): Promise<LoadedExportSource> {
  if (!(await isDir(checkpoint))) throw new UserError(`${checkpoint}: no such directory (pass a checkpoint or a run directory)`);
  const checkpointDir = await resolveCheckpoint(checkpoint);
  const hasWeights = (await exists(path.join(checkpointDir, 'model.safetensors'))) ||
    (await exists(path.join(checkpointDir, 'model.safetensors.index.json'))) || (await exists(path.join(checkpointDir, 'model.json')));
  if (!(await exists(path.join(checkpointDir, 'config.json'))) || !hasWeights) {
    throw new UserError(`${checkpoint}: not a checkpoint or run directory (a checkpoint has config.json and model.safetensors; ` +
      'a run directory has best/ or last/ checkpoints)');
  }
  const runDir = await findRunDir(checkpoint, checkpointDir);
  const { model, tokenizer, config, report } = await loadPretrained(checkpointDir);
  const tensors = await model.exportTensors();
  return {
    checkpointDir, runDir, config, tensors, tokenizer, initialised: report.initialised,
    embedProbe: (s) => embed(model, tokenizer, s),
    dispose: () => model.dispose(),
  };
}

/** The siblings an export makes beside `output`: its staging folder and the previous output moved aside. */
function exportSibling(output: string, kind: 'staging' | 'aside', pid: number): string {
  return replacementSibling(output, 'export', kind, pid);
}

/**
 * Repairs what killed exports left beside `output` (recoverReplacement): a previous output moved aside is moved
 * back when `output` is missing; staging folders and moved-aside outputs of dead processes are removed. Returns
 * the paths restored or removed.
 */
export async function recoverExport(output: string): Promise<string[]> {
  return recoverReplacement(output, 'export');
}

/**
 * Throws unless `output` may receive an export; returns whether it exists (and so must be replaced). An existing
 * output is replaced whole, so it may not hold the current folder nor overlap `protectedDirs` (refuseReplacingDir).
 */
async function checkOutput(output: string, force: boolean, protectedDirs: string[]): Promise<boolean> {
  if (!(await exists(output))) return false;
  if (!(await isDir(output))) throw new UserError(`${output}: exists and is not a directory; nothing was written`);
  await refuseReplacingDir(output, '--output', protectedDirs.map((p) => ({ path: p, what: 'the checkpoint being exported' })));
  if (!force) await refuseNonEmptyDir(output, '--output');
  return true;
}

async function check(file: string, src: ExportSource, reference: number[][]): Promise<OnnxCheck> {
  const got = await onnxClsEmbeddings(file, src.tokenizer, VERIFY_SENTENCES);
  let maxAbsDiff = 0;
  let minCosine = 1;
  got.forEach((g, i) => {
    const r = reference[i]!;
    for (let j = 0; j < g.length; j++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(g[j]! - r[j]!));
    minCosine = Math.min(minCosine, cosine(g, r));
  });
  return { file, sentences: got.length, maxAbsDiff, minCosine };
}

/** Exports a checkpoint; see the module comment. */
export async function exportCheckpoint(opts: ExportOptions): Promise<ExportResult> {
  const formats = [...new Set(opts.formats ?? EXPORT_FORMATS)];
  for (const f of formats) {
    if (!(EXPORT_FORMATS as readonly string[]).includes(f)) throw new UserError(`--format ${f}: unknown (valid: ${EXPORT_FORMATS.join(', ')})`);
  }
  const quantize = opts.quantize ?? 'none';
  if (!ONNX_QUANTIZATIONS.includes(quantize)) throw new UserError(`--quantize ${quantize}: unknown (valid: ${ONNX_QUANTIZATIONS.join(', ')})`);
  if (quantize !== 'none' && !formats.includes('onnx')) throw new UserError('--quantize applies to the onnx format, which was not selected');
  if (!(await isDir(opts.checkpoint))) throw new UserError(`${opts.checkpoint}: no such directory (pass a checkpoint or a run directory)`);
  const output = path.resolve(opts.output);
  await recoverExport(output);
  // Checked before and after reading the source: the first check fails fast, the second guards the rename.
  await checkOutput(output, opts.force === true, [opts.checkpoint]);

  const src = await readExportSource(opts.checkpoint);
  const staging = exportSibling(output, 'staging', process.pid);
  const progress = createProgress({ label: 'export', total: formats.length, unit: 'format', silent: opts.progress !== true });
  try {
    const replace = await checkOutput(output, opts.force === true, [src.checkpointDir, ...(src.runDir !== null ? [src.runDir] : [])]);
    const run: RunInfo = await readRunInfo(src);
    await fs.rm(staging, { recursive: true, force: true });
    // The staging folder is ours; a fault making it is reported on the output the user named.
    await ensureDir(staging, output, 'write');
    const written: ExportResult['written'] = [];
    const onnxChecks: OnnxCheck[] = [];
    for (const format of formats) {
      const sub = formats.length === 1 ? '' : format;
      const dir = path.join(staging, sub);
      const files = format === 'hf' ? await writeHf(dir, src)
        : format === 'sentence-transformers' ? await writeSentenceTransformers(dir, src)
          : format === 'onnx' ? await writeOnnx(dir, src, { quantize })
            : await writeTfjs(dir, src, opts.shardBytes !== undefined ? { shardBytes: opts.shardBytes } : {});
      const name = sub === '' ? path.basename(output) : sub;
      files.push('README.md');
      await writeFileAtomic(path.join(dir, 'README.md'), buildModelCard(src, run, { format, name, quantized: quantize === 'int8', files }));
      written.push({ format, dir: path.join(output, sub), files });
      if (format === 'onnx' && opts.verify !== false) {
        const reference = await src.embedProbe(VERIFY_SENTENCES);
        const fp32 = await check(path.join(dir, ONNX_MODEL_FILE), src, reference);
        if (!(fp32.maxAbsDiff <= ONNX_VERIFY_TOLERANCE)) {
          throw new Error(`ONNX export check failed: max |onnxruntime - TF.js| = ${fp32.maxAbsDiff} on the [CLS] vectors (tolerance ${ONNX_VERIFY_TOLERANCE})`);
        }
        onnxChecks.push({ ...fp32, file: path.join(output, sub, ONNX_MODEL_FILE) });
        if (quantize === 'int8') {
          const q = await check(path.join(dir, ONNX_QUANTIZED_FILE), src, reference);
          onnxChecks.push({ ...q, file: path.join(output, sub, ONNX_QUANTIZED_FILE) });
        }
      }
      progress.tick(1, { format });
    }
    // Publish: move any previous output aside, rename the staging folder in, then drop the old one.
    const old = exportSibling(output, 'aside', process.pid);
    faultPoint('export:staged');
    if (replace) await fs.rename(output, old);
    faultPoint('export:moved-aside');
    await fs.rename(staging, output);
    if (replace) await fs.rm(old, { recursive: true, force: true });
    progress.done();
    return { output, checkpointDir: src.checkpointDir, runDir: src.runDir, written, onnxChecks, evalNote: run.evalNote };
  } finally {
    src.dispose();
    await fs.rm(staging, { recursive: true, force: true });
  }
}

export { writeHf, hfFiles, tokenizerFiles, writeExportFiles, type ExportSource, type ExportFiles } from './hf.js';
export { writeSentenceTransformers, sentenceTransformersFiles, modulesJson, poolingConfig, configSentenceTransformers } from './sentenceTransformers.js';
export { writeTfjs } from './tfjs.js';
export { writeOnnx, onnxFiles, onnxClsEmbeddings, ONNX_MODEL_FILE, ONNX_QUANTIZED_FILE } from './onnx/index.js';
export { encodeBertOnnx, buildBertGraph, ONNX_OPSET, ONNX_IR_VERSION, type OnnxQuantization } from './onnx/graph.js';
export { buildModelCard, readRunInfo } from './modelCard.js';
