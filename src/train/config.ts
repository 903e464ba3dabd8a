/**
 * Training configuration: data, validated. Every key has a default (the reference hyperparameters of miCSE's
 * low-shot runs, from the paper and its repository), a type and a range; an unknown key, a wrong type or an out-of-range value is a
 * UserError naming the key (unknown keys with a did-you-mean), after the file and line it was read from (`FILE:LINE`,
 * placeOf) where it came from a YAML file. Files are YAML or JSON, may `extends` another file (relative path), and
 * `--set key.path=value` overrides win last.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import YAML, { isAlias, isCollection, isMap, isNode, isPair, isScalar, isSeq, LineCounter, type Alias, type Document } from 'yaml';
import { DEFAULT_EVAL_BATCH_SIZE } from '../../eval/sts.js';
import { DEFAULT_MAX_SEQ_LEN, MIN_BATCH_SENTENCES } from '../data/batchLimits.js';
import {
  BLANK_LINES_CHOICES, CORPUS_FORMATS, DEFAULT_BLANK_LINES, DEFAULT_CORPUS_FORMAT, DEFAULT_ON_INVALID, ON_INVALID_CHOICES,
} from '../data/corpusOptions.js';
import { DEFAULT_SUBSET_SEED, MAX_SEED } from '../data/seeds.js';
import { didYouMean, firstLineOf, shownValue, UserError } from '../errors.js';
import { isJsonObject, valueAtPath } from '../fsutil.js';
import { amiLayerSpanCheck, amiLayerSpanProblem, MICSE_STYLES, MICSE_VIEWS, TRAIN_POOLERS } from '../losses/micseOptions.js';
import { BACKEND_NAMES } from '../model/backendNames.js';
import { BERT_CONFIG_KEYS, maxLengthProblem, parseBertConfig, type BertConfig } from '../model/config.js';
import { ADAMW_VARIANTS, DEFAULT_ADAMW_VARIANT } from './adamwVariants.js';
import { SELECTIONS } from './selection.js';

/** train.precision: float32 throughout, or float16 product inputs with loss scaling (src/train/lossScale.ts). */
export const PRECISIONS = ['fp32', 'mixed'] as const;

type Kind = 'string' | 'number' | 'integer' | 'boolean' | 'object';

interface KeySpec {
  kind: Kind;
  default: unknown;
  describe: string;
  /** Also accept null. */
  nullable?: boolean;
  choices?: readonly string[];
  min?: number;
  max?: number;
  /** min is exclusive */
  minExclusive?: boolean;
  /** integer or string (CSV column) */
  orString?: boolean;
  /** kind 'object': the keys it may hold; a file or --set merges them into the block below it key by key. */
  keys?: readonly string[];
  /** kind 'number': only powers of two. */
  powerOfTwo?: boolean;
}

/** The schema: section -> key -> spec. Defaults are miCSE's official hyperparameters (fp32 runs). */
export const SCHEMA = {
  model: {
    init: { kind: 'string', default: 'bert-base-uncased', describe: 'Hugging Face directory or Hub name to start from, or "random"' },
    tokenizer: { kind: 'string', default: null, nullable: true, describe: 'tokenizer directory (default: the init directory; required with init: random)' },
    config: { kind: 'object', default: null, nullable: true, keys: BERT_CONFIG_KEYS, describe: 'config.json keys for init: random (snake_case as transformers writes them)' },
    hiddenDropout: { kind: 'number', default: null, nullable: true, min: 0, max: 0.999, describe: 'override hidden_dropout_prob' },
    attentionDropout: { kind: 'number', default: null, nullable: true, min: 0, max: 0.999, describe: 'override attention_probs_dropout_prob' },
  },
  data: {
    train: { kind: 'string', default: 'data/wiki1m_for_simcse.txt', describe: 'training corpus: .txt (one sentence per line), .csv or .tsv' },
    format: { kind: 'string', default: DEFAULT_CORPUS_FORMAT, choices: CORPUS_FORMATS, describe: 'corpus format (auto: by extension)' },
    column: { kind: 'integer', orString: true, default: null, nullable: true, min: 0, describe: 'CSV/TSV column name or 0-based index' },
    fraction: { kind: 'number', default: null, nullable: true, min: 0, minExclusive: true, max: 1, describe: 'few-shot subset: fraction of the corpus' },
    count: { kind: 'integer', default: null, nullable: true, min: MIN_BATCH_SENTENCES, describe: 'few-shot subset: number of sentences' },
    subsetSeed: { kind: 'integer', default: DEFAULT_SUBSET_SEED, min: 0, max: MAX_SEED, describe: 'seed of the subset draw (official: 48..52)' },
    onInvalid: { kind: 'string', default: DEFAULT_ON_INVALID, choices: ON_INVALID_CHOICES, describe: 'lines that are not valid UTF-8' },
    blankLines: { kind: 'string', default: DEFAULT_BLANK_LINES, choices: BLANK_LINES_CHOICES, describe: 'blank lines of a .txt corpus: skip, or keep as empty sentences ([CLS] [SEP]) as the authors\' datasets text loader does' },
    maxSeqLen: { kind: 'integer', default: DEFAULT_MAX_SEQ_LEN, min: 2, max: 512, describe: 'truncate training sentences to this many tokens' },
    dropLast: { kind: 'boolean', default: false, describe: 'drop the last partial batch of each epoch (reference: kept)' },
    senteval: { kind: 'string', default: 'data/senteval', describe: 'SentEval data root (STS-B dev selection, final evaluation)' },
  },
  objective: {
    style: { kind: 'string', default: 'micse', choices: MICSE_STYLES, describe: 'micse: InfoNCE + lambda * AMI; simcse: InfoNCE only' },
    temperature: { kind: 'number', default: 0.05, min: 0, minExclusive: true, describe: 'InfoNCE temperature' },
    alpha: { kind: 'number', default: 1, min: 0, describe: 'weight of InfoNCE' },
    lambda: { kind: 'number', default: 1e-3, min: 0, describe: 'weight of the attention mutual-information term' },
    minLayer: { kind: 'integer', default: 7, min: 0, describe: 'first encoder layer of the AMI term' },
    maxLayer: { kind: 'integer', default: 11, min: 1, describe: 'one past the last AMI layer (maxLayer - minLayer must be even)' },
    targetSamples: { kind: 'integer', default: 150, min: 1, describe: 'attention entries drawn per AMI row' },
    nanValue: { kind: 'number', default: 100, describe: 'AMI value substituted for NaN (reference behaviour)' },
    rhoEps: { kind: 'number', default: 1e-6, min: 0, max: 0.999999, describe: 'AMI |rho| is clamped to 1 - rhoEps; 0: no clamp, the reference\'s -inf at |rho| = 1 and NaN (-> nanValue) above' },
    views: { kind: 'string', default: 'interleaved', choices: MICSE_VIEWS, describe: 'one pass over 2B interleaved rows, or two passes' },
    pooler: { kind: 'string', default: 'cls', choices: TRAIN_POOLERS, describe: 'training pooler (cls = [CLS] + MLP head); selection, evaluation and exports use the raw [CLS]' },
  },
  optim: {
    variant: { kind: 'string', default: DEFAULT_ADAMW_VARIANT, choices: ADAMW_VARIANTS, describe: 'AdamW: torch (torch.optim.AdamW) or hf (transformers 4.22 AdamW, the authors\' optimizer)' },
    learningRate: { kind: 'number', default: 1e-5, min: 0, minExclusive: true, describe: 'peak learning rate (low-shot runs: 1e-5; SimCSE: 3e-5)' },
    weightDecay: { kind: 'number', default: 0, min: 0, describe: 'AdamW decoupled weight decay (not applied to biases and LayerNorm weights)' },
    beta1: { kind: 'number', default: 0.9, min: 0, max: 0.999999, describe: 'Adam beta1' },
    beta2: { kind: 'number', default: 0.999, min: 0, max: 0.999999, describe: 'Adam beta2' },
    eps: { kind: 'number', default: 1e-8, min: 0, minExclusive: true, describe: 'Adam epsilon (transformers Trainer default)' },
    schedule: { kind: 'string', default: 'linear', choices: ['linear', 'constant'], describe: 'learning-rate decay after warmup' },
    warmupSteps: { kind: 'integer', default: 0, min: 0, describe: 'linear warmup steps (wins over warmupRatio when > 0)' },
    warmupRatio: { kind: 'number', default: 0, min: 0, max: 1, describe: 'warmup as a fraction of all steps' },
    maxGradNorm: { kind: 'number', default: 1, min: 0, describe: 'global gradient-norm clip (0: off)' },
  },
  train: {
    batchSize: { kind: 'integer', default: 64, min: MIN_BATCH_SENTENCES, describe: 'sentences per batch (each appears twice; InfoNCE contrasts the sentences of a batch)' },
    epochs: { kind: 'integer', default: 1, min: 1, describe: 'passes over the training sentences' },
    maxSteps: { kind: 'integer', default: null, nullable: true, min: 1, describe: 'stop after this many steps (overrides epochs)' },
    evalSteps: { kind: 'integer', default: 250, min: 1, describe: 'evaluate STS-B dev (and checkpoint) every this many steps' },
    selection: { kind: 'string', default: 'every-eval', choices: SELECTIONS, describe: 'best checkpoint: every-eval (every evaluation and the last step are candidates) or hf-save-steps (transformers 4.22: evaluations at multiples of saveSteps only)' },
    saveSteps: { kind: 'integer', default: 500, min: 1, describe: 'with selection hf-save-steps: the save_steps of transformers\' Trainer' },
    evalBatchSize: { kind: 'integer', default: DEFAULT_EVAL_BATCH_SIZE, min: 1, describe: 'sentences per pass when evaluating (SentEval: 128)' },
    finalEval: { kind: 'boolean', default: true, describe: 'evaluate the best checkpoint on all STS tasks at the end' },
    seed: { kind: 'integer', default: 42, min: 0, max: MAX_SEED, describe: 'training seed: shuffling, dropout, AMI draws, head init' },
    output: { kind: 'string', default: 'checkpoints/run', describe: 'run directory' },
    backend: { kind: 'string', default: 'auto', choices: BACKEND_NAMES, describe: 'TF.js backend' },
    maxBadSteps: { kind: 'integer', default: 10, min: 1, describe: 'stop after this many skipped steps in a row (a non-finite loss; with precision mixed, also a gradient overflow)' },
    logSteps: { kind: 'integer', default: 1, min: 1, describe: 'write a metrics.jsonl line every this many steps' },
    precision: { kind: 'string', default: 'fp32', choices: PRECISIONS, describe: 'fp32, or mixed: the encoder\'s dense products take float16 inputs (rounded on cpu, wasm and webgpu; float32 products), float32 weights and moments, dynamic loss scaling' },
    lossScale: { kind: 'number', default: 65536, min: 1, powerOfTwo: true, describe: 'with precision mixed: the initial loss scale, a power of two (PyTorch GradScaler\'s 2^16)' },
    lossScaleGrowthInterval: { kind: 'integer', default: 2000, min: 1, describe: 'with precision mixed: double the loss scale after this many steps without an overflow (GradScaler\'s growth_interval)' },
    webgpuReplay: { kind: 'boolean', default: true, describe: 'webgpu: record a training step\'s GPU commands once and replay them while the batch shape repeats, skipping the step\'s JavaScript (MICSE_WEBGPU_REPLAY=1 or 0 overrides)' },
  },
} as const satisfies Record<string, Record<string, KeySpec>>;

type SchemaT = typeof SCHEMA;
type Value<S> = S extends { kind: 'string'; choices: readonly (infer C)[] } ? C
  : S extends { kind: 'string' } ? string
  : S extends { kind: 'integer'; orString: true } ? number | string
  : S extends { kind: 'number' | 'integer' } ? number
  : S extends { kind: 'boolean' } ? boolean
  : Record<string, unknown>;
type Nullable<S, V> = S extends { nullable: true } ? V | null : V;
export type TrainConfig = {
  -readonly [Sec in keyof SchemaT]: { -readonly [K in keyof SchemaT[Sec]]: Nullable<SchemaT[Sec][K], Value<SchemaT[Sec][K]>> };
};

/**
 * A training config as a caller writes it for trainInMemory: any sections, any keys of each, values typed as in
 * TrainConfig. It is merged over the defaults and checked at run time by mergeConfig (a JavaScript caller, or an
 * object parsed from JSON and cast, gets the same UserErrors as a YAML file).
 */
export type PartialTrainConfig = { [Sec in keyof TrainConfig]?: Partial<TrainConfig[Sec]> };

function allKeyPaths(): string[] {
  return Object.entries(SCHEMA).flatMap(([sec, keys]) => Object.keys(keys).map((k) => `${sec}.${k}`));
}

/** The defaults, as a full config. */
export function defaultConfig(): TrainConfig {
  const out: Record<string, Record<string, unknown>> = {};
  for (const [sec, keys] of Object.entries(SCHEMA)) {
    out[sec] = {};
    for (const [k, spec] of Object.entries(keys)) out[sec]![k] = (spec as KeySpec).default;
  }
  const c = out as TrainConfig;
  ORIGINS.set(c, { byKey: new Map(), rest: 'defaults' });
  return c;
}

/**
 * Where a key's value came from: a place in a config file (`FILE:LINE`, or the file alone where its lines are not
 * known: placeOf), or an override whose text names the key and value (`--set k=v`).
 */
type Origin = { at: string } | { override: string };

/**
 * Where the values of a config came from, by key path (a model.config key as model.config.NAME); `rest`: what
 * holds the keys not listed, the defaults, or 'unknown' for a config mergeConfig built on one it had not made.
 */
interface Origins {
  byKey: Map<string, Origin>;
  rest: 'defaults' | 'unknown';
}

/**
 * The origins of the configs defaultConfig and mergeConfig return, for the cross-key checks' messages
 * (`describeOrigins`). Held beside each config, not in it, so that a config stays plain data (config.yaml, a sweep
 * point's file); a copy made by other means (structuredClone, JSON) has none.
 */
const ORIGINS = new WeakMap<TrainConfig, Origins>();

/**
 * Where the values of `keyPaths` in `c` came from, for the start of an error message, each place once, e.g.
 * `configs/tiny.yaml:21 (objective.minLayer: 2) and --set objective.maxLayer=3`; `unknown` stands in where `c` has
 * no record (a config not built by mergeConfig).
 */
export function describeOrigins(c: TrainConfig, keyPaths: readonly string[], unknown: string): string {
  const origins = ORIGINS.get(c);
  const places = new Map<string, string[]>();
  for (const keyPath of keyPaths) {
    const origin = origins?.byKey.get(keyPath);
    const place = origin !== undefined ? ('at' in origin ? origin.at : origin.override)
      : origins?.rest === 'defaults' ? 'defaults' : unknown;
    const keys = places.get(place) ?? [];
    places.set(place, keys);
    if (origin !== undefined && 'override' in origin) continue;
    const v = valueAtPath(c, keyPath);
    keys.push(v === undefined ? keyPath : `${keyPath}: ${shownValue(v)}`);
  }
  return [...places].map(([place, keys]) => (keys.length === 0 ? place : `${place} (${keys.join(', ')})`)).join(' and ');
}

/**
 * Checks the value `v` of `keyPath` against its spec; `at` names where the key is (placeOf) and `where` the file (or
 * `--set`) it was read from, for the place of an unknown key inside a mapping value.
 */
function checkValue(keyPath: string, spec: KeySpec, v: unknown, where: string, at: string): unknown {
  const bad = (want: string) => new UserError(`${at}: ${keyPath} must be ${want}, got ${shownValue(v)}`);
  if (v === null) {
    if (spec.nullable === true) return null;
    throw bad(`a ${spec.kind}`);
  }
  if (spec.orString === true && typeof v === 'string') return v;
  switch (spec.kind) {
    case 'string':
      if (typeof v !== 'string') throw bad('a string');
      if (spec.choices !== undefined && !spec.choices.includes(v)) {
        throw new UserError(`${at}: ${keyPath} must be one of ${spec.choices.join(', ')}, got '${v}'${didYouMean(v, spec.choices)}`);
      }
      return v;
    case 'boolean':
      if (typeof v !== 'boolean') throw bad('true or false');
      return v;
    case 'object': {
      if (!isJsonObject(v)) throw bad('a mapping');
      const known = spec.keys;
      const unknown = known === undefined ? undefined : Object.keys(v).find((k) => !known.includes(k));
      if (unknown !== undefined) {
        throw new UserError(`${placeOf(where, v, [unknown])}: unknown key '${keyPath}.${unknown}'${didYouMean(`${keyPath}.${unknown}`, known!.map((k) => `${keyPath}.${k}`))}; ` +
          `${keyPath} takes ${known!.join(', ')}`);
      }
      return v;
    }
    case 'number':
    case 'integer': {
      if (typeof v !== 'number') throw bad(spec.kind === 'integer' ? 'an integer' : 'a number');
      if (!Number.isFinite(v)) throw bad(spec.kind === 'integer' ? 'a finite integer' : 'a finite number');
      if (spec.kind === 'integer' && !Number.isInteger(v)) throw bad('an integer');
      const lo = spec.min;
      const hi = spec.max;
      if (lo !== undefined && (spec.minExclusive === true ? v <= lo : v < lo)) {
        throw new UserError(`${at}: ${keyPath} must be ${spec.minExclusive === true ? '>' : '>='} ${lo}, got ${v}`);
      }
      if (hi !== undefined && v > hi) throw new UserError(`${at}: ${keyPath} must be <= ${hi}, got ${v}`);
      if (spec.powerOfTwo === true && !Number.isInteger(Math.log2(v))) {
        throw new UserError(`${at}: ${keyPath} must be a power of two (scaling by it is then exact), got ${v}`);
      }
      return v;
    }
  }
}

/**
 * Merges a parsed config object onto `base`, validating every key; a mapping value (model.config) merges key by key
 * into the one below it (null replaces it). `where` names the file in errors, with the line of the key where
 * readYamlFile parsed `raw` (placeOf). `override`: the text of the override this object is (`--set train.seed=1`),
 * which the cross-key checks name as the origin of its keys instead of `where`.
 */
export function mergeConfig(base: TrainConfig, raw: unknown, where: string, override?: string): TrainConfig {
  if (raw === null || raw === undefined) return base;
  if (!isJsonObject(raw)) throw new UserError(`${where}: the top level must be a mapping of sections`);
  const out = structuredClone(base) as unknown as Record<string, Record<string, unknown>>;
  const below = ORIGINS.get(base);
  const origins: Origins = { byKey: new Map(below?.byKey), rest: below?.rest ?? 'unknown' };
  const origin = (keyPath: readonly string[]): Origin =>
    (override !== undefined ? { override } : { at: placeOf(where, raw, keyPath) });
  for (const [sec, body] of Object.entries(raw)) {
    if (sec === 'extends') continue;
    const keys = (SCHEMA as Record<string, Record<string, KeySpec>>)[sec];
    if (keys === undefined) throw new UserError(`${placeOf(where, raw, [sec])}: unknown section '${sec}'${didYouMean(sec, Object.keys(SCHEMA))}; sections: ${Object.keys(SCHEMA).join(', ')}`);
    if (body === null) continue;
    if (!isJsonObject(body)) throw new UserError(`${placeOf(where, raw, [sec])}: section '${sec}' must be a mapping`);
    for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
      const spec = keys[k];
      if (spec === undefined) {
        throw new UserError(`${placeOf(where, raw, [sec, k])}: unknown key '${sec}.${k}'${didYouMean(`${sec}.${k}`, allKeyPaths())}`);
      }
      const keyPath = `${sec}.${k}`;
      const value = checkValue(keyPath, spec, v, where, placeOf(where, raw, [sec, k]));
      const old = out[sec]![k];
      const merges = spec.kind === 'object' && isJsonObject(value) && isJsonObject(old);
      out[sec]![k] = merges ? { ...old, ...value } : value;
      if (spec.kind === 'object' && !merges) {
        for (const p of [...origins.byKey.keys()]) if (p.startsWith(`${keyPath}.`)) origins.byKey.delete(p);
      }
      if (isJsonObject(value)) for (const sub of Object.keys(value)) origins.byKey.set(`${keyPath}.${sub}`, origin([sec, k, sub]));
      origins.byKey.set(keyPath, origin([sec, k]));
    }
  }
  const merged = out as unknown as TrainConfig;
  ORIGINS.set(merged, origins);
  return merged;
}

/**
 * Where a random init's value of the config.json key `hfKey` (max_position_embeddings, num_hidden_layers) comes
 * from, as messages name it: model.config, or bert-base's value.
 */
export function randomConfigSource(c: TrainConfig, hfKey: string): string {
  return c.model.config?.[hfKey] !== undefined ? 'model.config' : "bert-base's default; model.config does not set it";
}

/**
 * The UserError of a check of `c`'s values: `problem`, after where the values of `keyPaths` came from
 * (describeOrigins: a file's line, a `--set`, the defaults; `where` for a config without that record). The one form
 * of the checks that look at a whole config: its cross-key rules, the model it trains, a sweep's rules.
 */
export function configError(c: TrainConfig, keyPaths: readonly string[], problem: string, where: string): UserError {
  return new UserError(`${describeOrigins(c, keyPaths, where)}: ${problem}`);
}

/**
 * Cross-key rules. Each message starts with where the values it is about came from (configError); `where` stands in
 * for configs without that record.
 */
export function checkConsistency(c: TrainConfig, where: string): void {
  const fail = (keyPaths: readonly string[], problem: string): never => {
    throw configError(c, keyPaths, problem, where);
  };
  if (c.data.fraction !== null && c.data.count !== null) fail(['data.fraction', 'data.count'], 'set data.fraction or data.count, not both');
  if (c.model.init === 'random' && c.model.tokenizer === null) {
    fail(['model.init', 'model.tokenizer'], 'model.init is "random", so model.tokenizer must name a tokenizer directory');
  }
  if (c.model.config !== null || c.model.init === 'random') {
    // A random init builds its model from model.config (bert-base's values for the keys it leaves out), whose depth
    // checkModelFits checks the AMI layer span against here, before the span alone (a span past the model's layers
    // said before an odd count); a checkpoint's config.json is checked when the trainer reads it (loadPretrained).
    const model = parseBertConfig(c.model.config ?? {},
      (keys) => `${describeOrigins(c, keys.map((k) => `model.config.${k}`), where)}: model.config`);
    if (c.model.init === 'random') checkModelFits(c, model, null, where);
  }
  // The span is the AMI's: a simcse objective reads no layers (micseLoss does not check them either).
  const span = c.objective.style === 'micse' ? amiLayerSpanProblem(c.objective.minLayer, c.objective.maxLayer) : null;
  if (span !== null) fail(['objective.minLayer', 'objective.maxLayer'], span);
}

/**
 * Throws unless `c` fits `model`: the AMI layer span within its depth, data.maxSeqLen within its positions, each
 * message starting with where the config's values came from (configError; `where` for a config without that
 * record). `source` names where the model's config came from (a checkpoint's config.json); null: `model` was built
 * from `c`'s model.config (a random init), whose num_hidden_layers or max_position_embeddings the message then names
 * beside the keys of `c` that do not fit it.
 */
export function checkModelFits(c: TrainConfig, model: BertConfig, source: string | null, where: string): void {
  const from = (hfKey: string) => (source === null ? { source: randomConfigSource(c, hfKey), keys: [`model.config.${hfKey}`] } : { source, keys: [] });
  const layers = from('num_hidden_layers');
  const span = c.objective.style === 'micse'
    ? amiLayerSpanCheck(c.objective.minLayer, c.objective.maxLayer, model.numHiddenLayers, layers.source) : null;
  // The model's num_hidden_layers is among the places only where the span is wrong for its depth, not in itself.
  if (span !== null) throw configError(c, ['objective.minLayer', 'objective.maxLayer', ...(span.depth ? layers.keys : [])], span.message, where);
  const positions = from('max_position_embeddings');
  const long = maxLengthProblem('data.maxSeqLen', c.data.maxSeqLen, model, positions.source);
  if (long !== null) throw configError(c, ['data.maxSeqLen', ...positions.keys], long, where);
}

/**
 * The 1-based line of each key of the mappings readYamlFile parsed (and of each item of its sequences, by index),
 * held by the object or array the key is in, for placeOf. Held beside the parsed values, not in them (as ORIGINS is),
 * so that they stay plain data; a value not parsed by readYamlFile (a JSON file, a `--set`, an object written in
 * code, a copy) has none.
 */
const KEY_LINES = new WeakMap<object, Map<string, number>>();

/**
 * Records in KEY_LINES the line of every key and item below `node`, a node of a parsed YAML document, whose value
 * as JavaScript is `value` (the document's toJS below that node). An alias is not followed: its object's lines are
 * those of the anchored node, recorded where that appears.
 */
function recordLines(node: unknown, value: unknown, lines: LineCounter): void {
  if (value === null || typeof value !== 'object' || KEY_LINES.has(value)) return;
  const byKey = new Map<string, number>();
  if (isMap(node) && isJsonObject(value)) {
    KEY_LINES.set(value, byKey);
    for (const pair of node.items) {
      // A scalar key is the JavaScript key its text gives (toJS: null is ''); readYamlFile refuses a mapping or
      // sequence as a key (unheldNode) before its lines are recorded.
      if (!isScalar(pair.key) || pair.key.range == null) continue;
      const key = pair.key.value === null ? '' : String(pair.key.value);
      byKey.set(key, lines.linePos(pair.key.range[0]).line);
      recordLines(pair.value, value[key], lines);
    }
  } else if (isSeq(node) && Array.isArray(value)) {
    KEY_LINES.set(value, byKey);
    node.items.forEach((item, i) => {
      const range = (item as { range?: readonly number[] | null } | null)?.range;
      if (range != null) byKey.set(String(i), lines.linePos(range[0]!).line);
      recordLines(item, value[i], lines);
    });
  }
}

/**
 * Where the key at `keyPath` below `raw` is, for the start of an error message: `where` (the file `raw` was read
 * from) and the line of the key (of the item, for an index of a sequence), `configs/tiny.yaml:21`; `where` alone
 * when readYamlFile did not parse `raw` (a JSON file, a `--set`) or the path is not in it. The one map from a key
 * path of a config or sweep file to its line.
 */
export function placeOf(where: string, raw: unknown, keyPath: readonly (string | number)[]): string {
  let holder = raw;
  for (const k of keyPath.slice(0, -1)) {
    holder = holder !== null && typeof holder === 'object' ? (holder as Record<string, unknown>)[k] : undefined;
  }
  const line = holder !== null && typeof holder === 'object' ? KEY_LINES.get(holder)?.get(String(keyPath.at(-1))) : undefined;
  return line === undefined ? where : `${where}:${line}`;
}

/**
 * The first node of `doc` (in document order) that parses but that a config cannot hold, and where it starts (an
 * offset into the text): an alias whose anchor is not set before it (which toJS refuses without a position), a
 * mapping or sequence as a key (which toJS would turn into text); null when there is none.
 */
function unheldNode(doc: Document): { pos: number; problem: string } | null {
  const anchors = new Set<string>();
  let found: { pos: number; problem: string } | null = null;
  YAML.visit(doc, (_key, node) => {
    if (isAlias(node)) {
      if (!anchors.has(node.source)) found = { pos: node.range?.[0] ?? -1, problem: `not valid YAML (alias *${node.source} has no anchor &${node.source} before it)` };
    } else if (isNode(node) && node.anchor !== undefined) {
      anchors.add(node.anchor);
    } else if (isPair(node) && isCollection(node.key)) {
      found = { pos: node.key.range?.[0] ?? -1, problem: `a key must be a scalar (a name), not a ${isSeq(node.key) ? 'list' : 'mapping'}` };
    }
    return found === null ? undefined : YAML.visit.BREAK;
  });
  return found;
}

/**
 * The alias at which `doc.toJS()` throws, having resolved more aliases than its maxAliasCount (a "billion laughs"
 * document): toJS runs again with each alias's resolve (the yaml package's Alias.resolve, where it counts an alias's
 * uses and throws past the limit) wrapped to note the alias whose resolve threw first, the innermost one, so the alias
 * named is exactly the one at which the count was exceeded; null when no alias's resolve threw (toJS failed for
 * another reason), and the caller names the file alone. Call it only once toJS has thrown: it leaves the wrappers on
 * `doc`'s aliases.
 */
function aliasPastCount(doc: Document): Alias | null {
  const threw: Alias[] = [];
  YAML.visit(doc, {
    Alias: (_key, node) => {
      const resolve = node.resolve.bind(node);
      node.resolve = (...args: Parameters<Alias['resolve']>) => {
        try {
          return resolve(...args);
        } catch (err) {
          threw.push(node);
          throw err;
        }
      };
    },
  });
  try {
    doc.toJS();
  } catch {
    // Expected: the fault the caller saw, now with the alias noted.
  }
  return threw[0] ?? null;
}

/**
 * `value`, the top level of a file of kind `what` read from `place` (`FILE:LINE` of its first node, or the file),
 * as the mapping every config and sweep file is; a UserError naming what it is instead.
 */
function topLevelMapping(value: unknown, what: string, place: string): Record<string, unknown> {
  if (isJsonObject(value)) return value;
  const got = value === undefined ? 'an empty document' : Array.isArray(value) ? 'a list' : shownValue(value);
  throw new UserError(`${place}: the top level of a ${what} file must be a mapping, got ${got}`);
}

/**
 * Parses a YAML file (JSON when it ends in .json), whose top level must be a mapping; `what` names its kind in a
 * read fault ('config', 'sweep') and `namedBy` what pointed at it (an `extends`, a sweep's base). A YAML file's
 * syntax errors, duplicate keys included, are named by the yaml package's line and column (`FILE:LINE:COL: not
 * valid YAML (...)`), its warnings (an unknown tag) likewise, as are an alias without its anchor and a mapping or
 * list as a key (unheldNode), and more aliases than the package resolves, by the alias past the limit
 * (aliasPastCount); a top level that is not a mapping by the line it
 * starts on (line 1 when the file holds no value); the lines of its keys are recorded for placeOf.
 */
export async function readYamlFile(file: string, what: string, namedBy?: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`${file}: cannot read ${what} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` +
      (namedBy !== undefined ? `, named by ${namedBy}` : ''));
  }
  if (file.endsWith('.json')) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new UserError(`${file}: not valid JSON (${firstLineOf(err)})`);
    }
    return topLevelMapping(value, what, file);
  }
  const lines = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const at = (pos: number): string => {
    if (pos < 0) return file;
    const { line, col } = lines.linePos(pos);
    return `${file}:${line}:${col}`;
  };
  for (const w of doc.warnings) process.emitWarning(`${at(w.pos[0])}: ${firstLineOf(w)}`, 'YAMLWarning');
  const syntax = doc.errors[0];
  if (syntax !== undefined) throw new UserError(`${at(syntax.pos[0])}: not valid YAML (${firstLineOf(syntax)})`);
  const unheld = unheldNode(doc);
  if (unheld !== null) throw new UserError(`${at(unheld.pos)}: ${unheld.problem}`);
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (err) {
    // What parsing and unheldNode accept and toJS refuses: more aliases than toJS's maxAliasCount, which the yaml
    // package throws without a position; aliasPastCount finds the alias.
    const alias = aliasPastCount(doc);
    const where = alias === null ? file : at(alias.range?.[0] ?? -1);
    throw new UserError(`${where}: not valid YAML (${firstLineOf(err)}${alias === null ? '' : `, at alias *${alias.source}`})`);
  }
  const top = doc.contents === null ? 1 : lines.linePos(doc.contents.range[0]).line;
  const mapping = topLevelMapping(doc.contents === null ? undefined : value, what, `${file}:${top}`);
  recordLines(doc.contents, mapping, lines);
  return mapping;
}

/**
 * Parses `text`, the JSON read from `file` (a sweep point's point.json), and records the lines of its keys for
 * placeOf, as readYamlFile does for a YAML file; a UserError naming the file when `text` is not JSON.
 */
export function parseJsonLines(text: string, file: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UserError(`${file}: not valid JSON (${firstLineOf(err)})`);
  }
  // JSON is YAML's flow style: the yaml package's nodes hold the lines of its keys. A document it refuses (a key
  // JSON.parse takes twice) records none, and messages name the file alone.
  const lines = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length === 0) recordLines(doc.contents, value, lines);
  return value;
}

/** A parsed config and the file it came from (`extends` is relative to that file). */
export interface ConfigLayer {
  raw: unknown;
  file: string;
}

/**
 * The layers of the config `raw` read from `file` (or written inline in it), base first: each `extends` is read,
 * relative to the file that names it, until a layer has none. `seen`: the files already on the chain.
 */
export async function configLayers(raw: unknown, file: string, seen: readonly string[] = [path.resolve(file)]): Promise<ConfigLayer[]> {
  const ext = isJsonObject(raw) ? raw['extends'] : undefined;
  if (ext === undefined) return [{ raw, file }];
  const at = placeOf(file, raw, ['extends']);
  if (typeof ext !== 'string') throw new UserError(`${at}: extends must be a path string`);
  const parent = path.resolve(path.dirname(file), ext);
  if (seen.includes(parent)) throw new UserError(`${at}: 'extends' forms a cycle (${[...seen, parent].join(' -> ')})`);
  return [...(await configLayers(await readYamlFile(parent, 'config', `${at}: extends`), parent, [...seen, parent])), { raw, file }];
}

/** Paths in a config are relative to the working directory, except `extends` (relative to its file). */
export interface LoadedConfig {
  config: TrainConfig;
  /** The files read, base first. */
  files: string[];
}

/** Parses `--set` values as YAML scalars (numbers, booleans, null, strings). */
export function parseSetValue(s: string): unknown {
  try {
    return YAML.parse(s) as unknown;
  } catch {
    return s;
  }
}

/** A `key.path=value` override's key path and value text (a UserError when `s` has no `=` after a key). */
export function parseOverride(s: string): { keyPath: string; value: string } {
  const eq = s.indexOf('=');
  if (eq <= 0) throw new UserError(`--set ${s}: expected key.path=value`);
  return { keyPath: s.slice(0, eq).trim(), value: s.slice(eq + 1) };
}

/** Applies `key.path=value` overrides. */
export function applyOverrides(c: TrainConfig, sets: readonly string[]): TrainConfig {
  let out = c;
  for (const s of sets) {
    const { keyPath, value } = parseOverride(s);
    const [sec, key, ...rest] = keyPath.split('.');
    if (sec === undefined || key === undefined) throw new UserError(`--set ${s}: expected section.key=value (e.g. train.seed=1)`);
    if (sec === 'model' && key === 'config' && rest.length > 0) {
      out = mergeConfig(out, { model: { config: { [rest.join('.')]: parseSetValue(value) } } }, `--set ${s}`, `--set ${s}`);
      continue;
    }
    if (rest.length > 0) throw new UserError(`--set ${s}: '${keyPath}' is not a config key${didYouMean(keyPath, allKeyPaths())}`);
    out = mergeConfig(out, { [sec]: { [key]: parseSetValue(value) } }, `--set ${s}`, `--set ${s}`);
  }
  return out;
}

/** Loads a config file (following `extends`), applies overrides, validates. */
export async function loadConfig(file: string | null, sets: readonly string[] = []): Promise<LoadedConfig> {
  const layers = file === null ? [] : await configLayers(await readYamlFile(file, 'config'), file);
  let config = defaultConfig();
  for (const l of layers) config = mergeConfig(config, l.raw, l.file);
  config = applyOverrides(config, sets);
  checkConsistency(config, file ?? 'config');
  return { config, files: layers.map((l) => l.file) };
}

/** A config as YAML, sections and keys in schema order. */
export function configToYaml(c: TrainConfig): string {
  return YAML.stringify(c);
}
