/**
 * BERT hyperparameters, read from and written to Hugging Face's config.json (snake_case there, camelCase here).
 */
import path from 'node:path';
import { shownValue, UserError } from '../errors.js';
import { exists, readJsonObject } from '../fsutil.js';

export interface BertConfig {
  vocabSize: number;
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  intermediateSize: number;
  /** Only the exact (erf) GELU of HF's "gelu" is implemented; "gelu_new"/"gelu_pytorch_tanh" use the tanh form. */
  hiddenAct: 'gelu' | 'gelu_new' | 'gelu_pytorch_tanh' | 'relu';
  hiddenDropoutProb: number;
  attentionProbsDropoutProb: number;
  maxPositionEmbeddings: number;
  typeVocabSize: number;
  layerNormEps: number;
  padTokenId: number;
  initializerRange: number;
}

/** bert-base-uncased's values: the defaults for keys a config.json leaves out (as transformers does). */
export const BERT_BASE_CONFIG: BertConfig = {
  vocabSize: 30522,
  hiddenSize: 768,
  numHiddenLayers: 12,
  numAttentionHeads: 12,
  intermediateSize: 3072,
  hiddenAct: 'gelu',
  hiddenDropoutProb: 0.1,
  attentionProbsDropoutProb: 0.1,
  maxPositionEmbeddings: 512,
  typeVocabSize: 2,
  layerNormEps: 1e-12,
  padTokenId: 0,
  initializerRange: 0.02,
};

/** camelCase key -> config.json key. */
const HF_KEYS: Record<keyof BertConfig, string> = {
  vocabSize: 'vocab_size',
  hiddenSize: 'hidden_size',
  numHiddenLayers: 'num_hidden_layers',
  numAttentionHeads: 'num_attention_heads',
  intermediateSize: 'intermediate_size',
  hiddenAct: 'hidden_act',
  hiddenDropoutProb: 'hidden_dropout_prob',
  attentionProbsDropoutProb: 'attention_probs_dropout_prob',
  maxPositionEmbeddings: 'max_position_embeddings',
  typeVocabSize: 'type_vocab_size',
  layerNormEps: 'layer_norm_eps',
  padTokenId: 'pad_token_id',
  initializerRange: 'initializer_range',
};

/** The config.json keys of a BERT config that this project reads (the keys a training config's model.config may set). */
export const BERT_CONFIG_KEYS: readonly string[] = Object.values(HF_KEYS);

const ACTS = ['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu'] as const;

/**
 * Where the keys of a config being parsed came from, for error messages: one name (a config.json file), or a
 * function of the config.json keys an error is about (a training config's model.config block, whose keys may come
 * from different files and `--set`s).
 */
export type ConfigSource = string | ((keys: readonly string[]) => string);

/**
 * Parses a config.json object (snake_case, as transformers writes it) or our camelCase form. `source` names where
 * the keys came from in error messages. Rejects non-BERT model types and inconsistent sizes.
 */
export function parseBertConfig(raw: Record<string, unknown>, source: ConfigSource): BertConfig {
  const at = (...keys: string[]): string => (typeof source === 'string' ? source : source(keys));
  const modelType = raw['model_type'];
  if (modelType !== undefined && modelType !== 'bert') {
    throw new UserError(`${at('model_type')}: model_type is '${String(modelType)}', but only BERT ('bert') checkpoints are supported`);
  }
  const cfg = { ...BERT_BASE_CONFIG };
  for (const key of Object.keys(HF_KEYS) as (keyof BertConfig)[]) {
    const v = raw[HF_KEYS[key]] ?? raw[key];
    if (v === undefined || v === null) continue;
    if (key === 'hiddenAct') {
      if (typeof v !== 'string' || !(ACTS as readonly string[]).includes(v)) {
        throw new UserError(`${at('hidden_act')}: hidden_act '${String(v)}' is not supported (valid: ${ACTS.join(', ')})`);
      }
      cfg.hiddenAct = v as BertConfig['hiddenAct'];
    } else {
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw new UserError(`${at(HF_KEYS[key])}: ${HF_KEYS[key]} must be a ${typeof v === 'number' ? 'finite ' : ''}number, got ${shownValue(v)}`);
      }
      (cfg as Record<string, number | string>)[key] = v;
    }
  }
  const ints: (keyof BertConfig)[] = ['vocabSize', 'hiddenSize', 'numHiddenLayers', 'numAttentionHeads', 'intermediateSize',
    'maxPositionEmbeddings', 'typeVocabSize'];
  for (const k of ints) {
    const v = cfg[k] as number;
    if (!Number.isInteger(v) || v <= 0) throw new UserError(`${at(HF_KEYS[k])}: ${HF_KEYS[k]} must be a positive integer, got ${v}`);
  }
  if (cfg.hiddenSize % cfg.numAttentionHeads !== 0) {
    throw new UserError(`${at('hidden_size', 'num_attention_heads')}: hidden_size ${cfg.hiddenSize} is not a multiple of num_attention_heads ${cfg.numAttentionHeads}`);
  }
  for (const k of ['hiddenDropoutProb', 'attentionProbsDropoutProb'] as const) checkDropoutProb(cfg[k], `${at(HF_KEYS[k])}: ${HF_KEYS[k]}`);
  return cfg;
}

/** Reads and validates `dir/config.json`. */
export async function readBertConfig(dir: string): Promise<BertConfig> {
  const file = path.join(dir, 'config.json');
  if (!(await exists(file))) throw new UserError(`${file}: missing (a Hugging Face checkpoint directory needs config.json)`);
  return parseBertConfig(await readJsonObject(file), file);
}

/** Throws a UserError naming `what` unless `p` is a dropout probability: a number in [0, 1). */
function checkDropoutProb(p: number, what: string): void {
  if (!(typeof p === 'number' && p >= 0 && p < 1)) throw new UserError(`${what} must be in [0, 1), got ${p}`);
}

/** `config` with the dropout rates of `overrides` that are given (each checked as config.json's are). */
export function withDropout(config: BertConfig, overrides: Pick<Partial<BertConfig>, 'hiddenDropoutProb' | 'attentionProbsDropoutProb'>): BertConfig {
  const out = { ...config };
  for (const k of ['hiddenDropoutProb', 'attentionProbsDropoutProb'] as const) {
    const p = overrides[k];
    if (p === undefined) continue;
    checkDropoutProb(p, k);
    out[k] = p;
  }
  return out;
}

/**
 * Why `length` tokens ([CLS] and [SEP] included), asked for by `name` (a flag or a config key), do not fit the
 * model's position embeddings, or null when they do: a longer sequence would index past the position table (HF
 * transformers fails there too). `source` names where max_position_embeddings was read. The one check of every
 * token length against the model (`--max-length`, data.maxSeqLen, embed's maxLength).
 */
export function maxLengthProblem(name: string, length: number, cfg: BertConfig, source: string): string | null {
  const max = cfg.maxPositionEmbeddings;
  return length <= max ? null : `${name} is ${length} but the model's max_position_embeddings is ${max} (${source}): lower ${name} to at most ${max}`;
}

/** The config.json transformers writes for a BertModel with these hyperparameters. */
export function toHfConfig(cfg: BertConfig, architectures: string[] = ['BertModel']): Record<string, unknown> {
  const out: Record<string, unknown> = { architectures, model_type: 'bert' };
  for (const key of Object.keys(HF_KEYS) as (keyof BertConfig)[]) out[HF_KEYS[key]] = cfg[key];
  out['position_embedding_type'] = 'absolute';
  out['torch_dtype'] = 'float32';
  return out;
}
