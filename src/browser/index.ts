/**
 * The browser bundle's entry (`npm run build` -> dist/browser/micse.js, ESM): the library minus what cannot exist
 * in a page (file paths, onnxruntime-node, usearch, BullMQ/Redis, Dawn). The wasm backend's binaries are loaded
 * from beside the bundle.
 */
import { UserError } from '../errors.js';
import { setWasmBinaryPrefix } from '../model/backend.js';
import { filesSource, hubSource, loadPretrainedFrom, urlSource, type NamedBlob, type Pretrained, type SourceLoadOptions } from '../model/pretrained.js';

setWasmBinaryPrefix(new URL('./', import.meta.url).href);

export { tf } from '../model/tf.js';
export { UserError } from '../errors.js';
export { selectBackend, describeSelection, type BackendSelection } from '../model/backend.js';
export { BACKEND_NAMES, type BackendName } from '../model/backendNames.js';
export { BertModel } from '../model/bert.js';
export { embed, type EmbedOptions } from '../model/embed.js';
export { pool } from '../model/pooling.js';
export { EMBED_POOLERS, type EmbedPooler } from '../model/embedOptions.js';
export { BertTokenizer } from '../data/tokenizer.js';
export { loadPretrainedFrom, urlSource, hubSource, filesSource, type CheckpointSource, type NamedBlob, type Pretrained } from '../model/pretrained.js';
export { trainInMemory, trainInMemory as train, type InMemoryTrainOptions, type InMemoryTrainResult, type EvalLine } from '../train/memory.js';
export type { MetricsLine } from '../train/loop.js';
export { defaultConfig, mergeConfig, SCHEMA as CONFIG_SCHEMA, type TrainConfig, type PartialTrainConfig } from '../train/config.js';
export { parseBertConfig, type BertConfig } from '../model/config.js';
export { parseStsBenchmark } from '../../eval/senteval.js';
export { exportFiles, FILE_EXPORT_FORMATS, type FileExportFormat } from '../export/files.js';
export type { ExportFiles } from '../export/hf.js';
export { stsbDevSpearman, type StsTaskData } from '../../eval/sts.js';
export { cosine } from '../use/vectors.js';
export { readDelimitedText, type DelimitedLine } from '../data/delimited.js';

/**
 * A checkpoint from the base URL of its directory (absolute, or relative to the page: `./model/`), the `File`s of
 * a picked or dropped folder, or a Hugging Face Hub name (`bert-base-uncased`, `org/name`, fetched from the Hub).
 */
export async function loadPretrained(source: string | readonly NamedBlob[], opts: SourceLoadOptions = {}): Promise<Pretrained> {
  if (typeof source !== 'string') {
    if (source.length === 0) throw new UserError('loadPretrained: no files given (pick a checkpoint folder)');
    return loadPretrainedFrom(filesSource(source), opts);
  }
  const url = /^[a-z][a-z0-9+.-]*:/i.test(source) || /^\.{0,2}\//.test(source);
  return loadPretrainedFrom(url ? urlSource(source) : hubSource(source), opts);
}
