/**
 * The transformers.js layout: `onnx/model.onnx` (and `onnx/model_quantized.onnx`, transformers.js's name for its
 * "q8" dtype, with `quantize: 'int8'`), config.json and the tokenizer files at the top of the folder. Also runs an
 * exported file through onnxruntime-node, so the CLI and the tests can check it against the TF.js encoder.
 */
import type { BertTokenizer } from '../../data/tokenizer.js';
import { hfConfigFile, tokenizerFiles, writeExportFiles, type ExportFiles, type ExportSource } from '../hf.js';
import { encodeBertOnnx, type OnnxQuantization } from './graph.js';

export const ONNX_MODEL_FILE = 'onnx/model.onnx';
export const ONNX_QUANTIZED_FILE = 'onnx/model_quantized.onnx';

export interface OnnxExportOptions {
  quantize?: OnnxQuantization;
}

/** The layout's files. */
export function onnxFiles(src: ExportSource, opts: OnnxExportOptions = {}): ExportFiles {
  return {
    [ONNX_MODEL_FILE]: encodeBertOnnx(src.config, src.tensors),
    ...(opts.quantize === 'int8' ? { [ONNX_QUANTIZED_FILE]: encodeBertOnnx(src.config, src.tensors, { quantize: 'int8' }) } : {}),
    ...hfConfigFile(src.config),
    ...tokenizerFiles(src.tokenizer),
  };
}

/** Writes the layout into `dir`. Returns the file names. */
export async function writeOnnx(dir: string, src: ExportSource, opts: OnnxExportOptions = {}): Promise<string[]> {
  return writeExportFiles(dir, onnxFiles(src, opts));
}

/**
 * [CLS] vectors of `sentences` from an ONNX file through onnxruntime-node (CPU), padded per batch like `embed`.
 * Returns one vector per sentence.
 */
export async function onnxClsEmbeddings(file: string, tokenizer: BertTokenizer, sentences: string[],
  opts: { maxLength?: number; batchSize?: number } = {}): Promise<number[][]> {
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(file);
  const batchSize = opts.batchSize ?? 32;
  const out: number[][] = [];
  try {
    for (let start = 0; start < sentences.length; start += batchSize) {
      const chunk = sentences.slice(start, start + batchSize);
      const enc = tokenizer.encodeBatch(chunk, opts.maxLength !== undefined ? { maxLength: opts.maxLength } : {});
      const B = chunk.length;
      const T = enc.inputIds[0]!.length;
      const t = (rows: number[][]) => new ort.Tensor('int64', BigInt64Array.from(rows.flat(), (v) => BigInt(v)), [B, T]);
      const result = await session.run({
        input_ids: t(enc.inputIds), attention_mask: t(enc.attentionMask), token_type_ids: t(enc.inputIds.map((r) => r.map(() => 0))),
      });
      const h = result['last_hidden_state']!;
      const H = h.dims[2]!;
      const data = h.data as Float32Array;
      for (let b = 0; b < B; b++) out.push(Array.from(data.subarray(b * T * H, b * T * H + H)));
    }
  } finally {
    await session.release();
  }
  return out;
}
