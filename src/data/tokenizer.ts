/**
 * BERT tokenization with Hugging Face's ids.
 *
 * - A directory with tokenizer.json is tokenized by `@huggingface/tokenizers` (the JS port of HF tokenizers).
 * - A directory with only vocab.txt gets `WordPieceTokenizer` below: a port of transformers' BertTokenizer
 *   (basic tokenizer: clean text, CJK spacing, lower-casing and accent stripping per tokenizer_config.json,
 *   punctuation split; then greedy longest-match WordPiece, words over 100 characters -> [UNK]).
 * Either way `[CLS] ... [SEP]` are added here, so truncation to `maxLength` keeps [SEP] last for both.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { UserError } from '../errors.js';
import { ensureDir, exists, writeFileAtomic } from '../fsutil.js';

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

/** Pads id rows to the longest with `padTokenId` and builds the attention mask (1 for tokens, 0 for padding). */
export function padRows(rows: readonly (readonly number[])[], padTokenId: number): EncodedBatch {
  const T = rows.reduce((m, r) => Math.max(m, r.length), 0);
  return {
    inputIds: rows.map((r) => [...r, ...new Array<number>(T - r.length).fill(padTokenId)]),
    attentionMask: rows.map((r) => [...new Array<number>(r.length).fill(1), ...new Array<number>(T - r.length).fill(0)]),
  };
}

/** Splits text into word pieces (no special tokens). */
interface PieceEncoder {
  pieces(text: string): number[];
  tokens(text: string): string[];
}

/** Unicode predicates exactly as transformers' tokenization_bert.py defines them. */
const RE_CONTROL = /^\p{C}$/u;
const RE_WS_CAT = /^\p{Zs}$/u;
const RE_PUNCT_CAT = /^\p{P}$/u;
const RE_MN = /\p{Mn}/gu;

function isWhitespace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || RE_WS_CAT.test(ch);
}
function isControl(ch: string): boolean {
  if (ch === '\t' || ch === '\n' || ch === '\r') return false;
  return RE_CONTROL.test(ch);
}
function isPunctuation(ch: string): boolean {
  const cp = ch.codePointAt(0)!;
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
  return RE_PUNCT_CAT.test(ch);
}
/** CJK Unified Ideographs blocks (not Hangul or kana), as in BERT's _is_chinese_char. */
function isChineseChar(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) || (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/** transformers' BertTokenizer (slow) for a vocab.txt. */
export class WordPieceTokenizer implements PieceEncoder {
  private readonly vocab: Map<string, number>;
  private readonly unkId: number;
  private readonly neverSplit: Set<string>;

  constructor(vocab: Map<string, number>, private readonly doLowerCase: boolean, private readonly stripAccents: boolean | null) {
    this.vocab = vocab;
    const unk = vocab.get(SPECIAL_TOKENS.unk);
    if (unk === undefined) throw new UserError(`vocabulary has no ${SPECIAL_TOKENS.unk} token`);
    this.unkId = unk;
    this.neverSplit = new Set(Object.values(SPECIAL_TOKENS).filter((t) => vocab.has(t)));
  }

  /** Basic tokenizer: the words WordPiece then splits. */
  private basic(text: string): string[] {
    let cleaned = '';
    for (const ch of text) {
      const cp = ch.codePointAt(0)!;
      if (cp === 0 || cp === 0xfffd || isControl(ch)) continue;
      if (isWhitespace(ch)) cleaned += ' ';
      else if (isChineseChar(cp)) cleaned += ` ${ch} `;
      else cleaned += ch;
    }
    // NFC first, as transformers does, so the same text in different normal forms tokenizes alike.
    const words = cleaned.normalize('NFC').trim().split(/ +/).filter((w) => w.length > 0);
    const out: string[] = [];
    for (let w of words) {
      if (this.neverSplit.has(w)) {
        out.push(w);
        continue;
      }
      if (this.doLowerCase) w = w.toLowerCase();
      if (this.stripAccents === true || (this.stripAccents === null && this.doLowerCase)) {
        w = w.normalize('NFD').replace(RE_MN, '');
      }
      let cur = '';
      for (const ch of w) {
        if (isPunctuation(ch)) {
          if (cur !== '') out.push(cur);
          out.push(ch);
          cur = '';
        } else cur += ch;
      }
      if (cur !== '') out.push(cur);
    }
    return out;
  }

  /** Greedy longest-match-first WordPiece of one word. */
  private wordPiece(word: string): string[] {
    const chars = Array.from(word);
    if (chars.length > MAX_INPUT_CHARS_PER_WORD) return [SPECIAL_TOKENS.unk];
    const pieces: string[] = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found: string | null = null;
      while (start < end) {
        const sub = (start > 0 ? '##' : '') + chars.slice(start, end).join('');
        if (this.vocab.has(sub)) {
          found = sub;
          break;
        }
        end--;
      }
      if (found === null) return [SPECIAL_TOKENS.unk];
      pieces.push(found);
      start = end;
    }
    return pieces;
  }

  tokens(text: string): string[] {
    return this.basic(text).flatMap((w) => (this.neverSplit.has(w) ? [w] : this.wordPiece(w)));
  }

  pieces(text: string): number[] {
    return this.tokens(text).map((t) => this.vocab.get(t) ?? this.unkId);
  }
}

/** tokenizer.json through @huggingface/tokenizers. */
class HfJsonEncoder implements PieceEncoder {
  constructor(private readonly tok: HfTokenizer) {}
  pieces(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }
  tokens(text: string): string[] {
    return this.tok.tokenize(text, { add_special_tokens: false });
  }
}

/** The tokenizer files of a Hugging Face checkpoint that the tokenizer reads and checkpoints carry. */
export const TOKENIZER_FILES = ['tokenizer.json', 'vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json'] as const;
export type TokenizerTexts = Partial<Record<(typeof TOKENIZER_FILES)[number], string>>;

export interface TokenizerFiles {
  /** Where the tokenizer was read from. */
  dir: string;
  /** Which implementation tokenizes: tokenizer.json (HF tokenizers.js) or vocab.txt (our WordPiece port). */
  engine: 'tokenizer.json' | 'vocab.txt';
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

  private constructor(private readonly enc: PieceEncoder, readonly vocab: Map<string, number>, readonly files: TokenizerFiles,
    readonly doLowerCase: boolean, modelMaxLength: number) {
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
  }

  /**
   * Reads a tokenizer from a Hugging Face directory: tokenizer.json when present (unless `prefer` says
   * 'vocab.txt'), else vocab.txt with tokenizer_config.json's do_lower_case / strip_accents.
   */
  static async fromDir(dir: string, opts: { prefer?: 'tokenizer.json' | 'vocab.txt' } = {}): Promise<BertTokenizer> {
    const texts: TokenizerTexts = {};
    for (const name of TOKENIZER_FILES) {
      const file = path.join(dir, name);
      if (await exists(file)) texts[name] = await fs.readFile(file, 'utf8');
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
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new UserError(`${dir}/${name}: not a JSON object`);
      return raw as Record<string, unknown>;
    };
    const cfg = texts['tokenizer_config.json'] !== undefined ? parse('tokenizer_config.json') : {};
    const maxLen = typeof cfg['model_max_length'] === 'number' && cfg['model_max_length'] < 1e9 ? cfg['model_max_length'] : 512;
    const hasVocab = texts['vocab.txt'] !== undefined;
    if (texts['tokenizer.json'] !== undefined && (opts.prefer !== 'vocab.txt' || !hasVocab)) {
      const json = parse('tokenizer.json') as { model?: { type?: string; vocab?: Record<string, number> }; normalizer?: { lowercase?: boolean } };
      if (json.model?.type !== 'WordPiece' || json.model.vocab === undefined) {
        throw new UserError(`${dir}/tokenizer.json: model type is '${String(json.model?.type)}', a BERT WordPiece tokenizer was expected`);
      }
      const vocab = new Map(Object.entries(json.model.vocab));
      const tok = new HfTokenizer(json, cfg);
      return new BertTokenizer(new HfJsonEncoder(tok), vocab, { dir, engine: 'tokenizer.json', texts },
        json.normalizer?.lowercase ?? true, maxLen);
    }
    if (!hasVocab) throw new UserError(`${dir}: no tokenizer.json or vocab.txt (a BERT tokenizer needs one of them)`);
    const lines = texts['vocab.txt']!.split(/\r?\n/);
    if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    const vocab = new Map<string, number>();
    lines.forEach((t, i) => {
      if (!vocab.has(t)) vocab.set(t, i);
    });
    const lower = typeof cfg['do_lower_case'] === 'boolean' ? cfg['do_lower_case'] : true;
    const strip = typeof cfg['strip_accents'] === 'boolean' ? cfg['strip_accents'] : null;
    return new BertTokenizer(new WordPieceTokenizer(vocab, lower, strip), vocab, { dir, engine: 'vocab.txt', texts }, lower, maxLen);
  }

  /** Word pieces of `text` (no special tokens). */
  tokenize(text: string): string[] {
    return this.enc.tokens(text);
  }

  /**
   * Ids with [CLS] and [SEP]; truncated to `maxLength` (default: the model's 512) keeping [SEP] last. A text far
   * longer than that is tokenized by prefixes ending before a space, doubling until one yields enough pieces: both
   * tokenizers split words at spaces and normalize characters alone, so those pieces are the whole text's first ones,
   * and the work follows `maxLength`, not the length of the text (a 1 MB line costs what a sentence does).
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const maxLength = opts.maxLength ?? this.modelMaxLength;
    if (!Number.isInteger(maxLength) || maxLength < 2) throw new UserError(`maxLength must be an integer >= 2, got ${maxLength}`);
    const want = maxLength - 2;
    let pieces: number[] | null = null;
    for (let chars = Math.max(PREFIX_MIN_CHARS, PREFIX_CHARS_PER_PIECE * want); chars < text.length && pieces === null; chars *= 2) {
      const cut = text.lastIndexOf(' ', chars);
      if (cut <= 0) continue;
      const head = this.enc.pieces(text.slice(0, cut));
      if (head.length >= want) pieces = head;
    }
    pieces ??= this.enc.pieces(text);
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
