/**
 * BERT tokenization with Hugging Face's ids, by `@huggingface/tokenizers` (the JS port of HF tokenizers) for every
 * checkpoint: from its tokenizer.json, or, when it has only vocab.txt, from the tokenizer.json transformers'
 * BertTokenizerFast would build for that vocabulary (`bertTokenizerJson`, with tokenizer_config.json's
 * do_lower_case / strip_accents / tokenize_chinese_chars). `[CLS] ... [SEP]` are added here, so truncation to
 * `maxLength` keeps [SEP] last.
 */
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { checkInteger, kindOf, shownValue, UserError } from '../errors.js';
import { ensureDir, exists, isJsonObject, readFileNamed, writeFileAtomic } from '../fsutil.js';

/** transformers' BERT default: words longer than this become [UNK]. */
export const MAX_INPUT_CHARS_PER_WORD = 100;
export const SPECIAL_TOKENS = { pad: '[PAD]', unk: '[UNK]', cls: '[CLS]', sep: '[SEP]', mask: '[MASK]' } as const;
/** `encode` tokenizes a long text by prefixes of at least this many characters, and this many per piece wanted. */
const PREFIX_MIN_CHARS = 4096;
const PREFIX_CHARS_PER_PIECE = 16;

export interface EncodeOptions {
  /** Truncate to this many ids including [CLS] and [SEP]. */
  maxLength?: number;
}

export interface EncodedBatch {
  /** [B, T] padded with the pad id to the longest row */
  inputIds: number[][];
  /** [B, T] 1 for tokens, 0 for padding */
  attentionMask: number[][];
}

/** Throws a UserError naming `what` unless `text` is a string (the tokenizer would otherwise coerce a number). */
export function checkText(text: unknown, what: string): asserts text is string {
  if (typeof text !== 'string') throw new UserError(`${what} must be a string, got ${kindOf(text)}`);
}

/** Throws a UserError unless `texts` is an array of strings, naming `what` or its first element that is not one. */
export function checkTexts(texts: unknown, what: string): asserts texts is string[] {
  if (!Array.isArray(texts)) throw new UserError(`${what} must be an array of strings, got ${kindOf(texts)}`);
  texts.forEach((s: unknown, i) => checkText(s, `${what}[${i}]`));
}

/** Throws a UserError unless `maxLength` is an integer >= 2 (room for [CLS] and [SEP]). */
export function checkMaxLength(maxLength: number): void {
  checkInteger('maxLength', maxLength, 2);
}

/** The length a tokenizer without model_max_length (or with HF's "no limit", VERY_LARGE_INTEGER = 1e30) truncates to: BERT's 512 positions. */
const DEFAULT_MODEL_MAX_LENGTH = 512;
/** model_max_length values at or above this are HF's "no limit" (transformers writes int(1e30)). */
const NO_LIMIT_FROM = 1e9;

/**
 * tokenizer_config.json's model_max_length (absent or null: DEFAULT_MODEL_MAX_LENGTH, as for HF's "no limit"); a value
 * that is no integer >= 2 (room for [CLS] and [SEP]) is refused naming `file`.
 */
function modelMaxLengthOf(cfg: Record<string, unknown>, file: string): number {
  const v = cfg['model_max_length'];
  if (v === undefined || v === null) return DEFAULT_MODEL_MAX_LENGTH;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 2) {
    throw new UserError(`${file}: model_max_length must be an integer >= 2, got ${shownValue(v)}`);
  }
  return v >= NO_LIMIT_FROM ? DEFAULT_MODEL_MAX_LENGTH : v;
}

/** Pads id rows to the longest with `padTokenId` and builds the attention mask (1 for tokens, 0 for padding). */
export function padRows(rows: readonly (readonly number[])[], padTokenId: number): EncodedBatch {
  const T = rows.reduce((m, r) => Math.max(m, r.length), 0);
  return {
    inputIds: rows.map((r) => [...r, ...new Array<number>(T - r.length).fill(padTokenId)]),
    attentionMask: rows.map((r) => [...new Array<number>(r.length).fill(1), ...new Array<number>(T - r.length).fill(0)]),
  };
}

/** How transformers' BertTokenizer normalizes text, from tokenizer_config.json (its defaults where a key is absent). */
export interface BertNormalization {
  /** `do_lower_case` (default true). */
  lowercase: boolean;
  /** `strip_accents`; null strips them exactly when lower-casing. */
  stripAccents: boolean | null;
  /** `tokenize_chinese_chars` (default true): CJK ideographs become words of their own. */
  handleChineseChars: boolean;
}

/**
 * A tokenizer.json (Hugging Face tokenizers' serialisation) equivalent to transformers' BertTokenizerFast for
 * `vocab`: BertNormalizer, BertPreTokenizer, WordPiece (## prefix, 100 chars per word), [CLS] A [SEP] template.
 */
export function bertTokenizerJson(vocab: Map<string, number>, norm: BertNormalization): Record<string, unknown> {
  const id = (t: string) => vocab.get(t);
  const special = Object.values(SPECIAL_TOKENS).filter((t) => id(t) !== undefined).sort((a, b) => id(a)! - id(b)!);
  const tok = (t: string, typeId: number) => ({ SpecialToken: { id: t, type_id: typeId } });
  const seq = (s: string, typeId: number) => ({ Sequence: { id: s, type_id: typeId } });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: special.map((t) => ({ id: id(t), special: true, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false })),
    normalizer: {
      type: 'BertNormalizer', clean_text: true, handle_chinese_chars: norm.handleChineseChars, strip_accents: norm.stripAccents,
      lowercase: norm.lowercase,
    },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [tok(SPECIAL_TOKENS.cls, 0), seq('A', 0), tok(SPECIAL_TOKENS.sep, 0)],
      pair: [tok(SPECIAL_TOKENS.cls, 0), seq('A', 0), tok(SPECIAL_TOKENS.sep, 0), seq('B', 1), tok(SPECIAL_TOKENS.sep, 1)],
      special_tokens: Object.fromEntries([SPECIAL_TOKENS.cls, SPECIAL_TOKENS.sep].map((t) => [t, { id: t, ids: [id(t)], tokens: [t] }])),
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: {
      type: 'WordPiece', unk_token: SPECIAL_TOKENS.unk, continuing_subword_prefix: '##', max_input_chars_per_word: MAX_INPUT_CHARS_PER_WORD,
      vocab: Object.fromEntries([...vocab.entries()].sort((a, b) => a[1] - b[1])),
    },
  };
}

/** The tokenizer files of a Hugging Face checkpoint that the tokenizer reads and checkpoints carry. */
export const TOKENIZER_FILES = ['tokenizer.json', 'vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json'] as const;
export type TokenizerTexts = Partial<Record<(typeof TOKENIZER_FILES)[number], string>>;

export interface TokenizerFiles {
  /** Where the tokenizer was read from. */
  dir: string;
  /** What the tokenizer was built from: the source's tokenizer.json, or its vocab.txt (see `bertTokenizerJson`). */
  builtFrom: 'tokenizer.json' | 'vocab.txt';
  /** The text of the tokenizer files the source had. */
  texts: TokenizerTexts;
}

export class BertTokenizer {
  readonly padTokenId: number;
  readonly clsTokenId: number;
  readonly sepTokenId: number;
  readonly unkTokenId: number;
  readonly vocabSize: number;
  readonly modelMaxLength: number;

  private readonly tok: HfTokenizer;

  /**
   * @param json the tokenizer.json to run: the source's, or the one built for its vocab.txt
   * @param jsonText its text, as `toJson` returns it
   * @param cfg the source's tokenizer_config.json ({} without one)
   */
  private constructor(json: Record<string, unknown>, private readonly jsonText: string, cfg: Record<string, unknown>,
    readonly vocab: Map<string, number>, readonly files: TokenizerFiles, readonly doLowerCase: boolean, modelMaxLength: number) {
    const id = (t: string) => {
      const v = vocab.get(t);
      if (v === undefined) throw new UserError(`${files.dir}: the vocabulary has no ${t} token`);
      return v;
    };
    this.padTokenId = id(SPECIAL_TOKENS.pad);
    this.clsTokenId = id(SPECIAL_TOKENS.cls);
    this.sepTokenId = id(SPECIAL_TOKENS.sep);
    this.unkTokenId = id(SPECIAL_TOKENS.unk);
    this.vocabSize = vocab.size;
    this.modelMaxLength = modelMaxLength;
    this.tok = new HfTokenizer(json, cfg);
  }

  /**
   * Reads a tokenizer from a Hugging Face directory: tokenizer.json when present (unless `prefer` says
   * 'vocab.txt'), else vocab.txt with tokenizer_config.json's do_lower_case / strip_accents / tokenize_chinese_chars.
   */
  static async fromDir(dir: string, opts: { prefer?: 'tokenizer.json' | 'vocab.txt' } = {}): Promise<BertTokenizer> {
    const texts: TokenizerTexts = {};
    for (const name of TOKENIZER_FILES) {
      const file = path.join(dir, name);
      if (await exists(file)) texts[name] = await readFileNamed(file, 'utf8');
    }
    return BertTokenizer.fromTexts(texts, dir, opts);
  }

  /**
   * A tokenizer from the text of a checkpoint's tokenizer files (as `fromDir` reads them; a page's fetches or
   * Files); `dir` names where they came from in errors.
   */
  static fromTexts(texts: TokenizerTexts, dir: string, opts: { prefer?: 'tokenizer.json' | 'vocab.txt' } = {}): BertTokenizer {
    const parse = (name: 'tokenizer.json' | 'tokenizer_config.json'): Record<string, unknown> => {
      let raw: unknown;
      try {
        raw = JSON.parse(texts[name]!) as unknown;
      } catch (err) {
        throw new UserError(`${dir}/${name}: invalid JSON (${(err as Error).message})`);
      }
      if (!isJsonObject(raw)) throw new UserError(`${dir}/${name}: not a JSON object`);
      return raw;
    };
    const cfg = texts['tokenizer_config.json'] !== undefined ? parse('tokenizer_config.json') : {};
    const maxLen = modelMaxLengthOf(cfg, `${dir}/tokenizer_config.json`);
    const hasVocab = texts['vocab.txt'] !== undefined;
    if (texts['tokenizer.json'] !== undefined && (opts.prefer !== 'vocab.txt' || !hasVocab)) {
      const json = parse('tokenizer.json');
      const { model, normalizer } = json as { model?: { type?: string; vocab?: Record<string, number> }; normalizer?: { lowercase?: boolean } };
      if (model?.type !== 'WordPiece' || model.vocab === undefined) {
        throw new UserError(`${dir}/tokenizer.json: model type is '${String(model?.type)}', a BERT WordPiece tokenizer was expected`);
      }
      const vocab = new Map(Object.entries(model.vocab));
      return new BertTokenizer(json, texts['tokenizer.json'], cfg, vocab, { dir, builtFrom: 'tokenizer.json', texts },
        normalizer?.lowercase ?? true, maxLen);
    }
    if (!hasVocab) throw new UserError(`${dir}: no tokenizer.json or vocab.txt (a BERT tokenizer needs one of them)`);
    const lines = texts['vocab.txt']!.split(/\r?\n/);
    if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    const vocab = new Map<string, number>();
    lines.forEach((t, i) => {
      if (!vocab.has(t)) vocab.set(t, i);
    });
    const norm: BertNormalization = {
      lowercase: typeof cfg['do_lower_case'] === 'boolean' ? cfg['do_lower_case'] : true,
      stripAccents: typeof cfg['strip_accents'] === 'boolean' ? cfg['strip_accents'] : null,
      handleChineseChars: typeof cfg['tokenize_chinese_chars'] === 'boolean' ? cfg['tokenize_chinese_chars'] : true,
    };
    const json = bertTokenizerJson(vocab, norm);
    return new BertTokenizer(json, JSON.stringify(json), cfg, vocab, { dir, builtFrom: 'vocab.txt', texts }, norm.lowercase, maxLen);
  }

  /** The text of the tokenizer.json this tokenizer runs: the source's, or the one built for its vocab.txt. */
  toJson(): string {
    return this.jsonText;
  }

  /** Word pieces of `text` (no special tokens). */
  tokenize(text: string): string[] {
    return this.tok.tokenize(text, { add_special_tokens: false });
  }

  /** Ids of the word pieces of `text` (no special tokens). */
  private pieces(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }

  /**
   * Ids with [CLS] and [SEP]; truncated to `maxLength` (default: the model's 512) keeping [SEP] last. A text far
   * longer than that is tokenized by prefixes ending before a space, doubling until one yields enough pieces: the
   * BERT pre-tokenizer splits words at spaces and the normalizer maps characters alone, so those pieces are the whole text's first ones,
   * and the work follows `maxLength`, not the length of the text (a 1 MB line costs what a sentence does).
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    checkText(text, 'text');
    const maxLength = opts.maxLength ?? this.modelMaxLength;
    checkMaxLength(maxLength);
    const want = maxLength - 2;
    let pieces: number[] | null = null;
    for (let chars = Math.max(PREFIX_MIN_CHARS, PREFIX_CHARS_PER_PIECE * want); chars < text.length && pieces === null; chars *= 2) {
      const cut = text.lastIndexOf(' ', chars);
      if (cut <= 0) continue;
      const head = this.pieces(text.slice(0, cut));
      if (head.length >= want) pieces = head;
    }
    pieces ??= this.pieces(text);
    return [this.clsTokenId, ...pieces.slice(0, want), this.sepTokenId];
  }

  /** Encodes and pads to the longest row. */
  encodeBatch(texts: string[], opts: EncodeOptions = {}): EncodedBatch {
    return this.pad(texts.map((t) => this.encode(t, opts)));
  }

  /** Pads id rows to the longest with the pad id and builds the attention mask. */
  pad(rows: number[][]): EncodedBatch {
    return padRows(rows, this.padTokenId);
  }

  /** The files a checkpoint needs to carry this tokenizer: the source's files when it had them. */
  async saveTo(dir: string): Promise<string[]> {
    const written: string[] = [];
    await ensureDir(dir);
    for (const f of TOKENIZER_FILES) {
      const text = this.files.texts[f];
      if (text !== undefined) {
        await writeFileAtomic(path.join(dir, f), text);
        written.push(f);
      }
    }
    if (!written.includes('vocab.txt')) {
      const inv = [...this.vocab.entries()].sort((a, b) => a[1] - b[1]).map(([t]) => t);
      await writeFileAtomic(path.join(dir, 'vocab.txt'), inv.join('\n') + '\n');
      written.push('vocab.txt');
    }
    if (!written.includes('tokenizer_config.json')) {
      await writeFileAtomic(path.join(dir, 'tokenizer_config.json'), JSON.stringify({
        do_lower_case: this.doLowerCase, model_max_length: this.modelMaxLength, tokenizer_class: 'BertTokenizer',
        cls_token: SPECIAL_TOKENS.cls, sep_token: SPECIAL_TOKENS.sep, pad_token: SPECIAL_TOKENS.pad,
        unk_token: SPECIAL_TOKENS.unk, mask_token: SPECIAL_TOKENS.mask,
      }, null, 2) + '\n');
      written.push('tokenizer_config.json');
    }
    return written;
  }
}
