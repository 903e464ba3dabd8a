/**
 * The TF.js `tf.io` weights format, for browser inference with this project's encoder:
 *   model.json              {format, generatedBy, convertedBy, modelTopology: null, weightsManifest: [{paths, weights}]}
 *   group1-shard{i}of{n}.bin  all tensors' float32 little-endian bytes concatenated in manifest order, cut into
 *                           shards of `shardBytes` (a tensor may span two shards, as tensorflowjs_converter does)
 * plus config.json and the tokenizer files. Weights keep BertModel's Hugging Face names and PyTorch layout (Linear
 * weights [out, in]), so `loadPretrained` maps them like a safetensors checkpoint. In a browser:
 * `const { weightSpecs, weightData } = await tf.io.http('model.json').load(); tf.io.decodeWeights(weightData, weightSpecs)`.
 * There is no layers/graph topology: the encoder is code (src/model/bert.ts), not a Keras model.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../fsutil.js';
import { hfConfigFile, tokenizerFiles, writeExportFiles, type ExportSource } from './hf.js';

/** tensorflowjs_converter's default shard size. */
export const DEFAULT_SHARD_BYTES = 4 * 1024 * 1024;
/** model.json's `format` for a weights-only artifact of this project. */
export const TFJS_FORMAT = 'micse-bert-weights';

export interface TfjsOptions {
  shardBytes?: number;
  generatedBy?: string;
}

/** Writes model.json, the shards, config.json and the tokenizer files into `dir`. Returns the file names. */
export async function writeTfjs(dir: string, src: ExportSource, opts: TfjsOptions = {}): Promise<string[]> {
  const shardBytes = opts.shardBytes ?? DEFAULT_SHARD_BYTES;
  if (!Number.isInteger(shardBytes) || shardBytes < 4) throw new Error(`shardBytes must be an integer >= 4, got ${shardBytes}`);
  await fs.mkdir(dir, { recursive: true });
  const names = [...src.tensors.keys()];
  const weights = names.map((name) => ({ name, shape: src.tensors.get(name)!.shape, dtype: 'float32' }));
  const total = names.reduce((a, n) => a + src.tensors.get(n)!.data.byteLength, 0);
  const all = Buffer.alloc(total);
  let pos = 0;
  for (const n of names) {
    const d = src.tensors.get(n)!.data;
    Buffer.from(d.buffer, d.byteOffset, d.byteLength).copy(all, pos);
    pos += d.byteLength;
  }
  const count = Math.max(1, Math.ceil(total / shardBytes));
  const paths: string[] = [];
  for (let i = 0; i < count; i++) {
    const file = `group1-shard${i + 1}of${count}.bin`;
    await writeFileAtomic(path.join(dir, file), all.subarray(i * shardBytes, Math.min(total, (i + 1) * shardBytes)));
    paths.push(file);
  }
  const modelJson = {
    format: TFJS_FORMAT,
    generatedBy: opts.generatedBy ?? 'micse-tfjs',
    convertedBy: 'micse export --format tfjs',
    modelTopology: null,
    userDefinedMetadata: { weightLayout: 'Hugging Face BertModel names; Linear weights [out, in]', config: 'config.json' },
    weightsManifest: [{ paths, weights }],
  };
  await writeFileAtomic(path.join(dir, 'model.json'), JSON.stringify(modelJson, null, 2) + '\n');
  const files = ['model.json', ...paths, ...(await writeExportFiles(dir, { ...hfConfigFile(src.config), ...tokenizerFiles(src.tokenizer) }))];
  return files;
}
