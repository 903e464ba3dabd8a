/**
 * The sentence-transformers layout (as `SentenceTransformer.save()` writes it in sentence-transformers 3.x-5.x):
 * the transformers files at the top (module 0, `models.Transformer`, path ""), plus
 *   modules.json                       [Transformer at "", Pooling at "1_Pooling"]
 *   sentence_bert_config.json          {"max_seq_length", "do_lower_case": false}
 *   1_Pooling/config.json              CLS-token pooling: the raw [CLS] vector, as miCSE evaluates
 *   config_sentence_transformers.json  {"__version__", "prompts", "default_prompt_name", "similarity_fn_name": "cosine"}
 * No Normalize module: miCSE scores with the cosine of unnormalised vectors, which the similarity function does.
 */
import { hfFiles, writeExportFiles, type ExportFiles, type ExportSource } from './hf.js';

/** The oldest sentence-transformers whose loader understands every key written here (similarity_fn_name: 3.0). */
export const ST_FORMAT_VERSION = '3.0.0';

export function modulesJson(): Record<string, unknown>[] {
  return [
    { idx: 0, name: '0', path: '', type: 'sentence_transformers.models.Transformer' },
    { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.models.Pooling' },
  ];
}

/** Pooling config with only `pooling_mode_cls_token` on (the key set sentence-transformers 3+ writes). */
export function poolingConfig(hiddenSize: number): Record<string, unknown> {
  return {
    word_embedding_dimension: hiddenSize,
    pooling_mode_cls_token: true,
    pooling_mode_mean_tokens: false,
    pooling_mode_max_tokens: false,
    pooling_mode_mean_sqrt_len_tokens: false,
    pooling_mode_weightedmean_tokens: false,
    pooling_mode_lasttoken: false,
    include_prompt: true,
  };
}

/** Inputs longer than this are truncated by sentence-transformers: the model's position limit (SentEval: no truncation). */
export function sentenceBertConfig(src: ExportSource): Record<string, unknown> {
  return { max_seq_length: Math.min(src.tokenizer.modelMaxLength, src.config.maxPositionEmbeddings), do_lower_case: false };
}

export function configSentenceTransformers(): Record<string, unknown> {
  return {
    __version__: { sentence_transformers: ST_FORMAT_VERSION },
    prompts: {},
    default_prompt_name: null,
    similarity_fn_name: 'cosine',
  };
}

const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v, null, 2) + '\n');

/** The transformers files and the sentence-transformers modules. */
export function sentenceTransformersFiles(src: ExportSource): ExportFiles {
  return {
    ...hfFiles(src),
    'modules.json': json(modulesJson()),
    'sentence_bert_config.json': json(sentenceBertConfig(src)),
    '1_Pooling/config.json': json(poolingConfig(src.config.hiddenSize)),
    'config_sentence_transformers.json': json(configSentenceTransformers()),
  };
}

/** Writes the sentence-transformers layout into `dir`. Returns the file names. */
export async function writeSentenceTransformers(dir: string, src: ExportSource): Promise<string[]> {
  return writeExportFiles(dir, sentenceTransformersFiles(src));
}
