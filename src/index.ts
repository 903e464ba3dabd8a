/**
 * micse-tfjs public API. The CLI (src/cli) calls the same functions but imports their modules directly, together
 * with what only it needs and this API leaves out: its flags' defaults (the DEFAULT_* constants of the modules it
 * drives), output helpers (encodeNpy, writeFileAtomic, the sweep status formatting) and argument parsing
 * (pairsFromArgs).
 */
export { tf } from './model/tf.js';
export { UserError } from './errors.js';
export {
  selectBackend, describeSelection, type BackendSelection, type BackendAttempt, type BackendExclusions,
} from './model/backend.js';
export { BACKEND_NAMES, type BackendName } from './model/backendNames.js';
export { registerKernels, type KernelRegistration } from './kernels/index.js';
export { PRIVATE_DEPENDENCIES, type PrivateDependency } from './kernels/platform/internals.js';
export { BertModel, type BertInputs, type BertOutput, type ForwardOptions } from './model/bert.js';
export { parseBertConfig, readBertConfig, toHfConfig, BERT_BASE_CONFIG, type BertConfig } from './model/config.js';
export {
  loadPretrained, resolveCheckpoint, loadPretrainedFrom, urlSource, hubSource, filesSource,
  type LoadOptions, type Pretrained, type LoadReport, type CheckpointSource, type NamedBlob, type SourceLoadOptions,
} from './model/pretrained.js';
export { resolveModelDir, hubCacheDir, type ResolveOptions } from './model/hub.js';
export { readSafetensors, readSafetensorsDir, writeSafetensors, parseSafetensors, serializeSafetensors, type HostTensor } from './model/safetensors.js';
export { embed, type EmbedOptions } from './model/embed.js';
export { pool } from './model/pooling.js';
export { EMBED_POOLERS, type EmbedPooler } from './model/embedOptions.js';
export {
  BertTokenizer, bertTokenizerJson, type BertNormalization, type EncodeOptions, type EncodedBatch, type TokenizerFiles, type TokenizerTexts,
} from './data/tokenizer.js';

// Objectives
export * from './losses/index.js';

// Data
export { readDelimitedText, type DelimitedLine } from './data/delimited.js';
export {
  openCorpus, readAll, detectFormat, type CorpusFormat, type CorpusLine, type CorpusReader, type ReadCorpusOptions, type ReadStats, type OnInvalid,
  MAX_LINE_BYTES, type BlankLines, type CorpusOptionNames,
} from './data/readers.js';
export {
  loadTrainingSentences, writeSubset, subsetSize, type SubsetManifest, type SubsetSpec, type LoadTrainingOptions, type TrainingSentences,
  type Duplicates, type SubsetOptionNames,
} from './data/subset.js';
export {
  TwoViewBatchIterator, type TwoViewBatch, type BatchIteratorState, type BatchIteratorOptions, type BatchTokenizer,
} from './data/batches.js';
export { stepsPerEpoch } from './data/batchLimits.js';
export { Rng, type RngState } from './data/rng.js';
export {
  downloadFile, downloadDataset, DATASET_NAMES, type DatasetName, type DownloadSpec, type DownloadOptions, type DownloadResult,
} from './data/download.js';

// Evaluation (SentEval protocol)
export * from '../eval/index.js';

// Training
export { train, writeCurves, type TrainOptions, type TrainResult, type MetricsLine } from './train/trainer.js';
export { loadRunConfig } from './train/runConfig.js';
export { loadConfig, defaultConfig, mergeConfig, applyOverrides, SCHEMA as CONFIG_SCHEMA, type TrainConfig, type PartialTrainConfig, type LoadedConfig } from './train/config.js';
export { trainInMemory, type InMemoryTrainOptions, type InMemoryTrainResult, type EvalLine } from './train/memory.js';
export { AdamW, learningRateAt, type AdamWOptions, type AdamWVariant, type NamedParam } from './train/adamw.js';
export { saveCheckpoint, readTrainingState, type TrainerState, type SaveArgs, type LoadedTrainingState } from './train/checkpoint.js';
export type { LossScalerState } from './train/lossScale.js';

// Export for inference stacks
export {
  exportCheckpoint, readExportSource, ONNX_OPSET, onnxClsEmbeddings,
  type ExportOptions, type ExportResult, type LoadedExportSource, type OnnxCheck,
} from './export/index.js';
export { EXPORT_FORMATS, ONNX_QUANTIZATIONS, type ExportFormat } from './export/formats.js';
export type { OnnxQuantization } from './export/onnx/graph.js';
export { exportFiles, FILE_EXPORT_FORMATS, type FileExportFormat } from './export/files.js';
export type { ExportFiles } from './export/hf.js';

// Use the encoder: similarity, semantic search, clustering
export { similarity, type ScoredPair } from './use/similarity.js';
export { readPairsFile, type SentencePair } from './use/pairs.js';
export { buildIndex, type BuildIndexOptions, type BuildIndexReport } from './use/build.js';
export {
  checkIndexOut, countIndexCorpus, readIndexMeta, type CorpusIdentity, type CountedCorpus, type IndexCorpusOptions, type IndexMeta,
} from './use/indexDir.js';
export type { AnnParams, AnnMeta } from './use/ann.js';
export { openIndex, type SemanticIndex, type SearchHit, type SearchResult, type SearchOptions, type OpenIndexOptions } from './use/search.js';
export type { Matrix, Neighbor } from './use/vectors.js';
export { cluster, clusterVectors, type ClusterOptions, type ClusterResult, type ClusterInfo } from './use/cluster.js';
export { modelFingerprint, type ModelFingerprint, type FingerprintFile } from './use/fingerprint.js';

// Few-shot ablation sweeps (local, or distributed on Redis through BullMQ)
export { loadSweep, type Sweep, type SweepPoint, type GridValue } from './sweep/grid.js';
export { runSweep, type RunSweepOptions, type RunSweepResult } from './sweep/local.js';
export { runPoint, pointState, readAttempts, type PointState, type PointOutcome, type AttemptLine } from './sweep/point.js';
export { enqueueSweep, queueStatus, type QueueOptions, type EnqueueResult, type QueueStatus } from './sweep/queue.js';
export { runWorker, type WorkerOptions, type WorkerResult } from './sweep/worker.js';
export { checkRedis, type RedisTarget } from './sweep/redis.js';
export { buildSweepReport, writeSweepReport, formatReportMarkdown, formatReportCsv, type SweepReport } from './sweep/report.js';
