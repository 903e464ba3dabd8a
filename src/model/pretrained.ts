/**
 * `loadPretrained`: a Hugging Face BERT directory (or Hub name) -> model, tokenizer and config; `loadPretrainedFrom`:
 * the same from a URL, the Hub over https or a page's files (the browser's loaders).
 * Everything that reads a model goes through here.
 */
import path from 'node:path';
import { UserError } from '../errors.js';
import { BertTokenizer, TOKENIZER_FILES, type TokenizerTexts } from '../data/tokenizer.js';
import { exists, isJsonObject, readFileNamed, readJsonObject } from '../fsutil.js';
import { ensureBackend, selectBackend, type BackendSelection } from './backend.js';
import type { BackendName } from './backendNames.js';
import { BertModel } from './bert.js';
import { maxLengthProblem, parseBertConfig, readBertConfig, withDropout, type BertConfig } from './config.js';
import { resolveModelDir, type ResolveOptions } from './hub.js';
import { hasSafetensorsWeights, parseSafetensors, readSafetensorsDir, type HostTensor } from './safetensors.js';
import { tf } from './tf.js';
import { mapCheckpoint, summarizeNames } from './weights.js';

export interface LoadOptions extends ResolveOptions {
  /** Backend to activate first (default: keep the active one, or `auto`). */
  backend?: BackendName;
  /** Override config.json's dropout rates (each in [0, 1)). */
  hiddenDropoutProb?: number;
  attentionProbsDropoutProb?: number;
  /** Where the warning line about ignored checkpoint tensors goes (default: stderr). */
  warn?: (line: string) => void;
  /**
   * The token length the caller will use and the flag or key that gave it: a UserError naming them when config.json's
   * max_position_embeddings cannot hold it, before the tokenizer and weights are read.
   */
  maxLength?: { length: number; name: string };
  /**
   * A check of config.json (read from `configFile`) against what the caller will do with the model, called as soon
   * as it is read, before the tokenizer and weights (a training config's: checkModelFits); what it throws stops the
   * load.
   */
  checkConfig?: (config: BertConfig, configFile: string) => void;
}

export interface LoadReport {
  /** The directory the files were read from. */
  dir: string;
  /** Checkpoint tensors not part of BertModel (pre-training heads etc.). */
  ignored: string[];
  /** BertModel tensors the checkpoint lacked, initialised fresh (only the unused pooler may be). */
  initialised: string[];
  backend: BackendSelection;
}

export interface Pretrained {
  model: BertModel;
  tokenizer: BertTokenizer;
  config: BertConfig;
  report: LoadReport;
}

/** A training run directory resolves to its best checkpoint (else its last); anything else is returned as is. */
export async function resolveCheckpoint(modelArg: string): Promise<string> {
  for (const sub of ['best', 'last']) {
    const dir = path.join(modelArg, sub);
    if (await exists(path.join(dir, 'config.json'))) return dir;
  }
  return modelArg;
}

/** The weightsManifest of a TF.js model.json (`file`): its groups of weights and the shard files that hold them. */
export async function readTfjsManifest(file: string): Promise<tf.io.WeightsManifestConfig> {
  const manifest = (await readJsonObject(file))['weightsManifest'];
  const valid = Array.isArray(manifest) && manifest.every((g) => isJsonObject(g) && Array.isArray(g['paths']) && Array.isArray(g['weights']) &&
    g['paths'].every((p) => typeof p === 'string'));
  if (!valid) throw new UserError(`${file}: not a TF.js model.json (no weightsManifest of weights and shard paths)`);
  return manifest as tf.io.WeightsManifestConfig;
}

/**
 * Reads the weights of a TF.js `tf.io` directory (model.json's weightsManifest + .bin shards, as
 * `micse export --format tfjs` writes them: Hugging Face names, PyTorch layout) as host tensors.
 */
async function readTfjsWeights(dir: string): Promise<Map<string, HostTensor>> {
  const file = path.join(dir, 'model.json');
  const manifest = await readTfjsManifest(file);
  const out = new Map<string, HostTensor>();
  for (const group of manifest) {
    const buffers: ArrayBuffer[] = [];
    for (const p of group.paths) {
      const b = await readFileNamed(path.join(dir, p)).catch((err: unknown) => {
        if ((err as { cause?: NodeJS.ErrnoException }).cause?.code === 'ENOENT') throw new UserError(`${file}: weight shard ${p} is missing`);
        throw err;
      });
      buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
    }
    const bytes = buffers.reduce((a, b) => a + b.byteLength, 0);
    const need = group.weights.reduce((a, w) => a + 4 * w.shape.reduce((x, y) => x * y, 1), 0);
    const other = group.weights.find((w) => w.dtype !== 'float32');
    if (other !== undefined) throw new UserError(`${file}: weight '${other.name}' is ${other.dtype}; only float32 weights are read`);
    if (bytes !== need) {
      throw new UserError(`${file}: shards hold ${bytes} bytes, the manifest's float32 weights need ${need}`);
    }
    const named = tf.io.decodeWeights(buffers, group.weights);
    for (const [name, t] of Object.entries(named)) {
      out.set(name, { shape: t.shape, data: t.dataSync() as Float32Array, stored: 'F32' });
      t.dispose();
    }
  }
  return out;
}

/** `config` (read from `configFile`) with `opts`' dropout rates, once `opts.maxLength` and `opts.checkConfig` pass it. */
function applyLoadOptions(config: BertConfig, opts: SourceLoadOptions, configFile: string): BertConfig {
  const positions = opts.maxLength === undefined ? null : maxLengthProblem(opts.maxLength.name, opts.maxLength.length, config, configFile);
  if (positions !== null) throw new UserError(positions);
  opts.checkConfig?.(config, configFile);
  return withDropout(config, opts);
}

/** Loads a Hugging Face BERT checkpoint (plain BertModel or `bert.`-prefixed task model), or a TF.js export of one. */
export async function loadPretrained(dirOrName: string, opts: LoadOptions = {}): Promise<Pretrained> {
  const backend = opts.backend !== undefined ? await selectBackend(opts.backend) : await ensureBackend();
  const dir = await resolveModelDir(dirOrName, opts);
  const config = applyLoadOptions(await readBertConfig(dir), opts, path.join(dir, 'config.json'));
  const tokenizer = await BertTokenizer.fromDir(dir);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new UserError(`${dir}: the tokenizer has ${tokenizer.vocabSize} tokens but config.json's vocab_size is ${config.vocabSize}`);
  }
  // A TF.js export (`micse export --format tfjs`: model.json + shards, no model.safetensors) holds the same names.
  const tfjs = !(await hasSafetensorsWeights(dir)) && (await exists(path.join(dir, 'model.json')));
  const raw = tfjs ? await readTfjsWeights(dir) : await readSafetensorsDir(dir);
  const source = path.join(dir, tfjs ? 'model.json' : 'model.safetensors');
  const mapped = mapCheckpoint(raw, config, source);
  if (mapped.ignored.length > 0) {
    (opts.warn ?? ((l: string) => process.stderr.write(l + '\n')))(
      `warning: ${source}: ${mapped.ignored.length} tensor${mapped.ignored.length === 1 ? '' : 's'} not part of BertModel ignored: ${summarizeNames(mapped.ignored)}`);
  }
  const model = BertModel.fromTensors(config, mapped.tensors);
  return { model, tokenizer, config, report: { dir, ignored: mapped.ignored, initialised: mapped.missingOptional, backend } };
}

/** A checkpoint's files read by name (config.json, model.safetensors, the tokenizer files), wherever they are. */
export interface CheckpointSource {
  /** Names the source in messages (a URL, "dropped files"). */
  label: string;
  /** The file's bytes, or null when the source has no such file. */
  read(name: string): Promise<Uint8Array | null>;
}

/** What a page's file picker or drop gives: `File`s (only the name and the bytes are used). */
export interface NamedBlob {
  name: string;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** The base URL of a Hugging Face checkpoint directory; a 404 means the file is absent. */
export function urlSource(base: string): CheckpointSource {
  const dir = base.endsWith('/') ? base : base + '/';
  return {
    label: dir,
    async read(name) {
      const url = new URL(name, new URL(dir, globalThis.location?.href)).href;
      let res: Response;
      try {
        res = await fetch(url);
      } catch (err) {
        throw new UserError(`${url}: cannot fetch (${(err as Error).message})`);
      }
      if (res.status === 404) return null;
      if (!res.ok) throw new UserError(`${url}: HTTP ${res.status} ${res.statusText}`);
      return new Uint8Array(await res.arrayBuffer());
    },
  };
}

/** A Hub model (`bert-base-uncased`, `org/name`) read from huggingface.co. */
export function hubSource(modelId: string, revision = 'main'): CheckpointSource {
  return urlSource(`https://huggingface.co/${modelId}/resolve/${revision}/`);
}

/** Files picked or dropped in a page (a checkpoint folder's files), matched by file name. */
export function filesSource(files: readonly NamedBlob[]): CheckpointSource {
  const byName = new Map(files.map((f) => [f.name, f]));
  return {
    label: `the ${files.length} files given (${[...byName.keys()].sort().join(', ')})`,
    async read(name) {
      const f = byName.get(name);
      return f === undefined ? null : new Uint8Array(await f.arrayBuffer());
    },
  };
}

/** `loadPretrainedFrom`'s options: `loadPretrained`'s but the Hub cache's (a source reads no cache). */
export type SourceLoadOptions = Omit<LoadOptions, keyof ResolveOptions>;

/**
 * Loads a Hugging Face BERT checkpoint from `source` (a URL, a Hub model, a page's files): config.json,
 * model.safetensors and tokenizer.json or vocab.txt, checked as `loadPretrained` checks a directory.
 */
export async function loadPretrainedFrom(source: CheckpointSource, opts: SourceLoadOptions = {}): Promise<Pretrained> {
  const backend = opts.backend !== undefined ? await selectBackend(opts.backend) : await ensureBackend();
  const where = (name: string) => `${source.label.endsWith('/') ? source.label : source.label + ': '}${name}`;
  const text = async (name: string) => {
    const bytes = await source.read(name);
    return bytes === null ? undefined : new TextDecoder().decode(bytes);
  };
  const configText = await text('config.json');
  if (configText === undefined) throw new UserError(`${where('config.json')}: missing (a Hugging Face checkpoint needs config.json)`);
  let rawConfig: unknown;
  try {
    rawConfig = JSON.parse(configText);
  } catch (err) {
    throw new UserError(`${where('config.json')}: invalid JSON (${(err as Error).message})`);
  }
  if (!isJsonObject(rawConfig)) throw new UserError(`${where('config.json')}: not a JSON object`);
  const config = applyLoadOptions(parseBertConfig(rawConfig, where('config.json')), opts, where('config.json'));
  const texts: TokenizerTexts = {};
  for (const name of TOKENIZER_FILES) {
    const t = await text(name);
    if (t !== undefined) texts[name] = t;
  }
  const tokenizer = BertTokenizer.fromTexts(texts, source.label);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new UserError(`${source.label}: the tokenizer has ${tokenizer.vocabSize} tokens but config.json's vocab_size is ${config.vocabSize}`);
  }
  const weights = await source.read('model.safetensors');
  if (weights === null) throw new UserError(`${where('model.safetensors')}: missing (sharded and TF.js weights are read from directories only)`);
  const mapped = mapCheckpoint(parseSafetensors(weights, where('model.safetensors')).tensors, config, where('model.safetensors'));
  const model = BertModel.fromTensors(config, mapped.tensors);
  return { model, tokenizer, config, report: { dir: source.label, ignored: mapped.ignored, initialised: mapped.missingOptional, backend } };
}
