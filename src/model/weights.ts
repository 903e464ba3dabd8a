/**
 * The weight name table: every tensor of a Hugging Face BertModel, its shape, and whether it is a Linear weight
 * (stored by PyTorch as [out, in], held here as [in, out] so forward passes need no transposed products).
 * Loading maps checkpoint names onto this table with shape checks; saving walks it back.
 */
import { UserError } from '../errors.js';
import type { BertConfig } from './config.js';
import type { HostTensor } from './safetensors.js';

export interface WeightSpec {
  /** Hugging Face BertModel name, e.g. `encoder.layer.0.attention.self.query.weight`. */
  name: string;
  /** Shape as stored in the checkpoint (PyTorch layout). */
  shape: number[];
  /** Linear weight: transposed between the checkpoint's [out, in] and our [in, out]. */
  linear: boolean;
  /** How a fresh tensor starts (Hugging Face's _init_weights). */
  init: 'normal' | 'zeros' | 'ones';
  /** May be absent from a checkpoint (then initialised fresh and reported). */
  optional?: boolean;
}

/** The full table for a config, in the order transformers lists BertModel's parameters. */
export function bertWeightTable(c: BertConfig): WeightSpec[] {
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const specs: WeightSpec[] = [
    { name: 'embeddings.word_embeddings.weight', shape: [c.vocabSize, H], linear: false, init: 'normal' },
    { name: 'embeddings.position_embeddings.weight', shape: [c.maxPositionEmbeddings, H], linear: false, init: 'normal' },
    { name: 'embeddings.token_type_embeddings.weight', shape: [c.typeVocabSize, H], linear: false, init: 'normal' },
    { name: 'embeddings.LayerNorm.weight', shape: [H], linear: false, init: 'ones' },
    { name: 'embeddings.LayerNorm.bias', shape: [H], linear: false, init: 'zeros' },
  ];
  const linear = (name: string, out: number, inp: number): WeightSpec[] => [
    { name: `${name}.weight`, shape: [out, inp], linear: true, init: 'normal' },
    { name: `${name}.bias`, shape: [out], linear: false, init: 'zeros' },
  ];
  const norm = (name: string): WeightSpec[] => [
    { name: `${name}.weight`, shape: [H], linear: false, init: 'ones' },
    { name: `${name}.bias`, shape: [H], linear: false, init: 'zeros' },
  ];
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `encoder.layer.${i}`;
    specs.push(
      ...linear(`${p}.attention.self.query`, H, H),
      ...linear(`${p}.attention.self.key`, H, H),
      ...linear(`${p}.attention.self.value`, H, H),
      ...linear(`${p}.attention.output.dense`, H, H),
      ...norm(`${p}.attention.output.LayerNorm`),
      ...linear(`${p}.intermediate.dense`, I, H),
      ...linear(`${p}.output.dense`, H, I),
      ...norm(`${p}.output.LayerNorm`),
    );
  }
  // BertModel's pooler (dense + tanh on [CLS]) is not used by miCSE, but is kept so exports load in
  // transformers without "newly initialised" warnings.
  specs.push(...linear('pooler.dense', H, H).map((s) => ({ ...s, optional: true })));
  return specs;
}

/** Checkpoint prefixes of task models whose encoder is a BertModel (`bert.` in BertForPreTraining/MaskedLM/...). */
const ENCODER_PREFIXES = ['bert.', 'model.'];

/** Canonical BertModel name for a checkpoint tensor name, or null when it belongs to a head. */
export function canonicalName(name: string): string | null {
  let n = name;
  for (const p of ENCODER_PREFIXES) if (n.startsWith(p)) n = n.slice(p.length);
  if (!(n.startsWith('embeddings.') || n.startsWith('encoder.') || n.startsWith('pooler.'))) return null;
  // TF-converted and old PyTorch checkpoints name LayerNorm parameters gamma/beta.
  return n.replace(/LayerNorm\.gamma$/, 'LayerNorm.weight').replace(/LayerNorm\.beta$/, 'LayerNorm.bias');
}

/** Non-parameter buffers transformers may save; skipped silently. */
const BUFFERS = [/^embeddings\.position_ids$/, /^embeddings\.token_type_ids$/];

export interface MappedWeights {
  /** Canonical name -> tensor in OUR layout (linear weights transposed to [in, out]). */
  tensors: Map<string, HostTensor>;
  /** Checkpoint tensors that belong to heads (cls.*, classifier.*, ...), not the encoder. */
  ignored: string[];
  /** Optional table entries the checkpoint lacked (initialised fresh by the caller). */
  missingOptional: string[];
}

/** Transposes a row-major [rows, cols] matrix. */
export function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
  return out;
}

/** Index of the first NaN or infinite element, or -1. */
function firstNonFinite(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) if (data[i]! - data[i]! !== 0) return i;
  return -1;
}

/**
 * Names in compact form for one log line: grouped by their first two dot-separated parts, `cls.predictions.* (5)`
 * for a group of several, the name itself for a group of one.
 */
export function summarizeNames(names: readonly string[]): string {
  const groups = new Map<string, string[]>();
  for (const n of names) {
    const key = n.split('.').slice(0, 2).join('.');
    groups.set(key, [...(groups.get(key) ?? []), n]);
  }
  return [...groups].map(([key, members]) => (members.length === 1 ? members[0]! : `${key}.* (${members.length})`)).join(', ');
}

/**
 * Maps checkpoint tensors onto the table, with shape checks; tensors must be finite. Encoder layers past the
 * config's num_hidden_layers are refused (config.json and the weights disagree on the depth). `source` names the
 * file in errors.
 */
export function mapCheckpoint(raw: Map<string, HostTensor>, config: BertConfig, source: string): MappedWeights {
  const table = bertWeightTable(config);
  const bySpec = new Map(table.map((s) => [s.name, s]));
  const found = new Map<string, HostTensor>();
  const ignored: string[] = [];
  const extraLayers = new Set<number>();
  for (const [name, t] of raw) {
    const canon = canonicalName(name);
    if (canon === null) {
      ignored.push(name);
      continue;
    }
    if (BUFFERS.some((re) => re.test(canon))) continue;
    const spec = bySpec.get(canon);
    if (spec === undefined) {
      const layer = /^encoder\.layer\.(\d+)\./.exec(canon);
      if (layer !== null && Number(layer[1]) >= config.numHiddenLayers) extraLayers.add(Number(layer[1]));
      ignored.push(name);
      continue;
    }
    if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      throw new UserError(`${source}: tensor '${name}' has shape [${t.shape.join(', ')}], config.json implies [${spec.shape.join(', ')}]`);
    }
    if (t.data instanceof Int32Array) throw new UserError(`${source}: tensor '${name}' is ${t.stored}, a floating type was expected`);
    const bad = firstNonFinite(t.data);
    if (bad >= 0) {
      throw new UserError(`${source}: tensor '${name}' holds non-finite values (element ${bad} is ${t.data[bad]}); ` +
        'the checkpoint is corrupt or comes from a diverged run');
    }
    if (found.has(canon)) throw new UserError(`${source}: tensor '${canon}' appears twice (as '${name}' and another name)`);
    found.set(canon, spec.linear
      ? { ...t, shape: [spec.shape[1]!, spec.shape[0]!], data: transpose2d(t.data, spec.shape[0]!, spec.shape[1]!) }
      : t);
  }
  if (extraLayers.size > 0) {
    const layers = [...extraLayers].sort((a, b) => a - b);
    throw new UserError(`${source}: holds encoder layer${layers.length > 1 ? 's' : ''} ${layers.join(', ')} past config.json's ` +
      `num_hidden_layers ${config.numHiddenLayers}, which would be dropped; set num_hidden_layers to ${layers.at(-1)! + 1} or remove those layers`);
  }
  const missingOptional: string[] = [];
  for (const spec of table) {
    if (found.has(spec.name)) continue;
    if (spec.optional === true) missingOptional.push(spec.name);
    else throw new UserError(`${source}: tensor '${spec.name}' is missing (looked for it with and without the 'bert.' prefix)`);
  }
  return { tensors: found, ignored, missingOptional };
}
