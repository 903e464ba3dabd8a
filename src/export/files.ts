/**
 * `exportFiles`: a model held in memory (trained in a page, or in Node) -> the files of one export layout, as bytes:
 * the same bytes `micse export` writes for the same weights (its README.md model card aside). Nothing is written.
 */
import type { BertTokenizer } from '../data/tokenizer.js';
import { UserError } from '../errors.js';
import type { BertModel } from '../model/bert.js';
import { hfFiles, type ExportFiles, type ExportSource } from './hf.js';
import type { OnnxQuantization } from './onnx/graph.js';
import { onnxFiles } from './onnx/index.js';
import { sentenceTransformersFiles } from './sentenceTransformers.js';

/** The layouts that exist as bytes alone (tfjs is written as shards into a folder). */
export const FILE_EXPORT_FORMATS = ['hf', 'sentence-transformers', 'onnx'] as const;
export type FileExportFormat = (typeof FILE_EXPORT_FORMATS)[number];

/** `format`'s files for `model` and `tokenizer`; `quantize: 'int8'` adds onnx/model_quantized.onnx. */
export async function exportFiles(model: BertModel, tokenizer: BertTokenizer, format: FileExportFormat,
  opts: { quantize?: OnnxQuantization } = {}): Promise<ExportFiles> {
  if (!(FILE_EXPORT_FORMATS as readonly string[]).includes(format)) {
    throw new UserError(`export format ${format}: unknown (valid: ${FILE_EXPORT_FORMATS.join(', ')})`);
  }
  const src: ExportSource = {
    checkpointDir: tokenizer.files.dir, runDir: null, config: model.config, tensors: await model.exportTensors(), tokenizer, initialised: [],
  };
  return format === 'hf' ? hfFiles(src) : format === 'sentence-transformers' ? sentenceTransformersFiles(src) : onnxFiles(src, opts);
}
