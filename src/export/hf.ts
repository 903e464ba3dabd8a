/**
 * The Hugging Face transformers layout of a checkpoint: config.json (`model_type: bert`, `BertModel`),
 * model.safetensors with BertModel's tensor names and nothing else (no MLP head, no optimizer state), and the
 * tokenizer files transformers, sentence-transformers and transformers.js read: tokenizer.json, vocab.txt,
 * tokenizer_config.json, special_tokens_map.json. Files the source lacks are generated from the vocabulary.
 */
import path from 'node:path';
import { SPECIAL_TOKENS, type BertTokenizer } from '../data/tokenizer.js';
import { isJsonObject, writeFileAtomic } from '../fsutil.js';
import { toHfConfig, type BertConfig } from '../model/config.js';
import { serializeSafetensors } from '../model/safetensors.js';
import type { CheckpointTensors } from './onnx/graph.js';

/** What every writer receives: the checkpoint, read once. */
export interface ExportSource {
  /** The checkpoint directory read (a run directory resolves to best/, else last/). */
  checkpointDir: string;
  /** The run directory when the checkpoint belongs to one (config.yaml, eval.json, subset-manifest.json). */
  runDir: string | null;
  config: BertConfig;
  /** BertModel's tensors in checkpoint layout (Linear weights [out, in]), Hugging Face names. */
  tensors: CheckpointTensors;
  tokenizer: BertTokenizer;
  /** BertModel tensors the checkpoint lacked and the loader initialised (only the unused pooler may be). */
  initialised: string[];
}

/** transformers' special_tokens_map.json for BERT. */
export function specialTokensMap(): Record<string, string> {
  return {
    unk_token: SPECIAL_TOKENS.unk, sep_token: SPECIAL_TOKENS.sep, pad_token: SPECIAL_TOKENS.pad,
    cls_token: SPECIAL_TOKENS.cls, mask_token: SPECIAL_TOKENS.mask,
  };
}

/** The files of one export layout: relative path ('/'-separated) -> bytes. */
export type ExportFiles = Record<string, Uint8Array>;

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
const json = (v: unknown): Uint8Array => utf8(JSON.stringify(v, null, 2) + '\n');

/** Writes `files` under `dir` (creating subfolders). Returns their paths, in order. */
export async function writeExportFiles(dir: string, files: ExportFiles): Promise<string[]> {
  for (const [name, bytes] of Object.entries(files)) {
    await writeFileAtomic(path.join(dir, name), bytes); // makes the file's folder (1_Pooling/, onnx/)
  }
  return Object.keys(files);
}

/**
 * The four tokenizer files: the source checkpoint's where it had them, otherwise generated (tokenizer.json: the one
 * the tokenizer runs, built for its vocab.txt); tokenizer_config.json gains `tokenizer_class` and the special tokens
 * when it lacks them (transformers.js picks its tokenizer class from that key).
 */
export function tokenizerFiles(tokenizer: BertTokenizer): ExportFiles {
  const texts = tokenizer.files.texts;
  let srcCfg: Record<string, unknown> = {};
  if (texts['tokenizer_config.json'] !== undefined) {
    const raw = JSON.parse(texts['tokenizer_config.json']) as unknown;
    if (isJsonObject(raw)) srcCfg = raw;
  }
  const tokens = () => [...tokenizer.vocab.entries()].sort((a, b) => a[1] - b[1]).map(([t]) => t);
  const cfg: Record<string, unknown> = {
    do_lower_case: tokenizer.doLowerCase, model_max_length: tokenizer.modelMaxLength, tokenizer_class: 'BertTokenizer',
    ...specialTokensMap(), ...srcCfg,
  };
  return {
    'tokenizer.json': utf8(tokenizer.toJson()),
    'vocab.txt': utf8(texts['vocab.txt'] ?? tokens().join('\n') + '\n'),
    'tokenizer_config.json': json(cfg),
    'special_tokens_map.json': texts['special_tokens_map.json'] !== undefined ? utf8(texts['special_tokens_map.json']) : json(specialTokensMap()),
  };
}

/** config.json as transformers writes it for a BertModel. */
export function hfConfigFile(config: BertConfig): ExportFiles {
  return { 'config.json': json(toHfConfig(config, ['BertModel'])) };
}

/** The full transformers layout: config.json, model.safetensors and the tokenizer files. */
export function hfFiles(src: ExportSource): ExportFiles {
  return {
    ...hfConfigFile(src.config),
    'model.safetensors': serializeSafetensors(src.tensors, { format: 'pt' }),
    ...tokenizerFiles(src.tokenizer),
  };
}

/** Writes the transformers layout into `dir`. Returns the file names. */
export async function writeHf(dir: string, src: ExportSource): Promise<string[]> {
  return writeExportFiles(dir, hfFiles(src));
}
