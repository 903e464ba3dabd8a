/**
 * What `exportCheckpoint` (src/export/index.ts) writes, in a module of its own that loads none of the exporters:
 * the CLI's --format and --quantize flags name them.
 */
import type { OnnxQuantization } from './onnx/graph.js';

export const EXPORT_FORMATS = ['hf', 'sentence-transformers', 'onnx', 'tfjs'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];
export const ONNX_QUANTIZATIONS: readonly OnnxQuantization[] = ['none', 'int8'];
