/**
 * Model fingerprint: what makes two sets of embeddings comparable. The sha256 over the checkpoint files that
 * determine the vectors (config, weights, tokenizer) plus the pooler and the token limit used. An index stores
 * the fingerprint of the model that built it, and refuses queries embedded by any other.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { exists, readFault } from '../fsutil.js';
import type { EmbedPooler } from '../model/embedOptions.js';
import { readTfjsManifest } from '../model/pretrained.js';
import { readSafetensorsIndex } from '../model/safetensors.js';

/** Files hashed when present, in this order; the weights (model.safetensors or its shards) are added after. */
export const FINGERPRINT_FILES = ['config.json', 'tokenizer.json', 'vocab.txt', 'tokenizer_config.json'] as const;

export interface FingerprintFile {
  name: string;
  bytes: number;
  sha256: string;
}

export interface ModelFingerprint {
  /** sha256 (hex) over the file hashes, the pooler and maxLength: the one value compared. */
  sha256: string;
  files: FingerprintFile[];
  pooler: EmbedPooler;
  /** Token limit: the requested one (at most the model's max positions), else the model's max positions. */
  maxLength: number;
}

async function sha256File(file: string): Promise<FingerprintFile> {
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const chunk of createReadStream(file)) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
  } catch (err) {
    throw readFault(err, file);
  }
  return { name: path.basename(file), bytes, sha256: hash.digest('hex') };
}

/** The weight files of a checkpoint directory: model.safetensors, else its index and shards, else a TF.js model.json and shards. */
async function weightFiles(dir: string): Promise<string[]> {
  const single = path.join(dir, 'model.safetensors');
  if (await exists(single)) return [single];
  const index = path.join(dir, 'model.safetensors.index.json');
  const tfjs = path.join(dir, 'model.json');
  if (!(await exists(index)) && (await exists(tfjs))) {
    // A TF.js export: model.json and the shards its weightsManifest lists.
    const manifest = await readTfjsManifest(tfjs);
    return [tfjs, ...manifest.flatMap((g) => g.paths).map((p) => path.join(dir, p))];
  }
  if (!(await exists(index))) throw new UserError(`${dir}: no model.safetensors, model.safetensors.index.json or model.json to fingerprint`);
  const map = await readSafetensorsIndex(index);
  return [index, ...[...new Set(Object.values(map))].sort().map((s) => path.join(dir, s))];
}

/** Fingerprints the checkpoint in `dir` as used with `pooler` and `maxLength`. */
export async function modelFingerprint(dir: string, pooler: EmbedPooler, maxLength: number): Promise<ModelFingerprint> {
  const paths: string[] = [];
  for (const f of FINGERPRINT_FILES) if (await exists(path.join(dir, f))) paths.push(path.join(dir, f));
  paths.push(...(await weightFiles(dir)));
  const files: FingerprintFile[] = [];
  for (const p of paths) files.push(await sha256File(p));
  const total = createHash('sha256');
  for (const f of files) total.update(`${f.name}\0${f.sha256}\n`);
  total.update(`pooler\0${pooler}\nmaxLength\0${maxLength}\n`);
  return { sha256: total.digest('hex'), files, pooler, maxLength };
}

/** First 12 hex digits, for messages. */
export function shortFingerprint(fp: { sha256: string }): string {
  return fp.sha256.slice(0, 12);
}
