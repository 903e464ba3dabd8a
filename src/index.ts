/**
 * micse-tfjs public API. The CLI uses nothing that is not exported here.
 */
export { tf } from './model/tf.js';
export { UserError } from './errors.js';
export { selectBackend, describeSelection, BACKEND_NAMES, type BackendName, type BackendSelection } from './model/backend.js';
export { BertModel, type BertInputs, type BertOutput, type ForwardOptions } from './model/bert.js';
export { parseBertConfig, toHfConfig, BERT_BASE_CONFIG, type BertConfig } from './model/config.js';
export { loadPretrained, readBertConfig, type LoadOptions, type Pretrained, type LoadReport } from './model/pretrained.js';
export { resolveModelDir, hubCacheDir } from './model/hub.js';
export { readSafetensors, readSafetensorsDir, writeSafetensors, parseSafetensors, serializeSafetensors } from './model/safetensors.js';
export { embed, type EmbedOptions } from './model/embed.js';
export { pool, EMBED_POOLERS, type EmbedPooler } from './model/pooling.js';
export { BertTokenizer, WordPieceTokenizer, type EncodeOptions, type EncodedBatch } from './data/tokenizer.js';
