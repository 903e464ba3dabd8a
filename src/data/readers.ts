/**
 * Streaming corpus readers: one sentence per line (SimCSE's wiki1m_for_simcse.txt format) and CSV/TSV through
 * csv-parse. Both yield `{ text, line }` one record at a time, so a large corpus is never held in memory by the
 * reader, and both compute the sha256 of the bytes they read (for subset manifests).
 *
 * Rules (documented in data/README.md):
 * - UTF-8, with or without a byte-order mark; line ends `\n` or `\r\n` (the `\r` is removed). A UTF-16 or UTF-32
 *   byte-order mark is a UserError naming the file (src/data/textCheck.ts). So is a file that looks binary, or
 *   UTF-16/32 without a mark: NUL bytes on at least half of the lines of its first `READ_CHUNK_BYTES` (all of it
 *   when shorter; a piece cut at that boundary counts as a line), named with its first such line. Such a file would
 *   otherwise read as lines of invalid or NUL-riddled text. In any other file a line holding a NUL byte is an
 *   invalid line, as below.
 * - A line longer than MAX_LINE_BYTES (4 MiB, without its line end; see corpusOptions.ts for why that much and why
 *   `onInvalid: skip` does not skip it) is a UserError naming the file and line, raised once that many bytes have
 *   come without a line break, so a file without line breaks is never held whole. In CSV a record, which may span
 *   lines, is held to the same limit (csvParseOptions).
 * - Blank records (empty or whitespace only) are skipped and counted in `stats.blank`; a .txt corpus read with
 *   `blankLines: 'keep'` yields its blank lines as they are (and still counts them), as HF datasets' `text` loader
 *   does (`str.splitlines()` keeps empty lines), which the miCSE and SimCSE training scripts read their corpus with.
 * - A line that is not valid UTF-8, or holds a NUL byte, is skipped and counted (`onInvalid: 'skip'`, the default; the first
 *   `MAX_REPORTED_INVALID` line numbers are kept in `stats.invalidLines`) or fails with a UserError naming the file
 *   and line (`onInvalid: 'fail'`). In CSV a record is invalid when any physical line it spans is.
 * - Line numbers are 1-based physical lines of the file; a CSV record spanning several lines reports its first.
 * - CSV/TSV: `column` is a header name or a 0-based index (default: the first column); which record is a header and
 *   the csv-parse options are src/data/delimited.ts's (shared with the in-memory reader there, which the demo page
 *   uses). Fields may be quoted with `"` (quoted commas, tabs, newlines, `""` escapes). A malformed file is a
 *   UserError with the line where the faulty field or record starts, saying which (describeCsvError).
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { isUtf8 } from 'node:buffer';
import { CsvError, parse } from 'csv-parse';
import { UserError } from '../errors.js';
import {
  DEFAULT_BLANK_LINES, DEFAULT_CORPUS_FORMAT, DEFAULT_ON_INVALID, MAX_LINE_BYTES, type BlankLines, type CorpusFormatChoice, type OnInvalid,
} from './corpusOptions.js';
import { ColumnPicker, csvFaultLine, csvParseOptions, delimitedKind, describeCsvError, isBlank, parseColumn } from './delimited.js';
import { lineOf, MAX_BOM_BYTES, nulByteError, utf8BomLength } from './textCheck.js';

export { KNOWN_HEADER_NAMES, parseColumn } from './delimited.js';
export { MAX_LINE_BYTES };

/** Corpus formats; `auto` picks by extension (.csv, .tsv, anything else is one sentence per line). */
export type CorpusFormat = Exclude<CorpusFormatChoice, 'auto'>;
export type { BlankLines, OnInvalid };

/** At most this many invalid line numbers are kept in the stats (the count is always exact). */
export const MAX_REPORTED_INVALID = 100;
/** Read size for corpus files. */
export const READ_CHUNK_BYTES = 1 << 20;

/**
 * How a reader's messages name its options: a training config's keys (CONFIG_CORPUS_NAMES) unless the command that
 * took them from its flags names those.
 */
export interface CorpusOptionNames {
  column: string;
  /** null for a command without such an option (its messages then do not suggest one). */
  format: string | null;
  blankLines: string;
}

/** The training config's keys of a corpus' options. */
export const CONFIG_CORPUS_NAMES: CorpusOptionNames = { column: 'data.column', format: 'data.format', blankLines: 'data.blankLines' };

export interface ReadCorpusOptions {
  /** Default `auto` (by extension). */
  format?: CorpusFormatChoice;
  /** CSV/TSV only: header name or 0-based index; null/undefined = the first column. */
  column?: string | number | null;
  /** CSV/TSV only: whether the first record is a header; default `auto` (see the module comment). */
  header?: boolean | 'auto';
  /** Default `skip`. */
  onInvalid?: OnInvalid;
  /** .txt only; default `skip`. */
  blankLines?: BlankLines;
  /** How messages name the options above; default CONFIG_CORPUS_NAMES. */
  names?: Partial<CorpusOptionNames>;
  /** How messages name the file when it cannot be read (`cannot read <what> FILE: CODE`); default `corpus`. */
  what?: string;
}

/** One record: its text (without line terminator) and its 1-based first physical line. */
export interface CorpusLine {
  text: string;
  line: number;
}

/** Counts gathered while reading; complete once iteration has finished. */
export interface ReadStats {
  /** Physical lines in the file. */
  lines: number;
  /** Records yielded. */
  records: number;
  /** Blank records (empty or whitespace only): skipped, or with blankLines 'keep' yielded (and among `records`). */
  blank: number;
  /** Records skipped because a line was not valid UTF-8 or held a NUL byte. */
  invalid: number;
  /** The first MAX_REPORTED_INVALID invalid line numbers. */
  invalidLines: number[];
  /** Whether the file started with a UTF-8 byte-order mark. */
  bom: boolean;
  /** Bytes read and their sha256 (hex); set when iteration finished. */
  bytes: number;
  sha256: string | null;
  /** CSV/TSV: whether a header record was found, its fields and the column index used. */
  header: string[] | null;
  columnIndex: number | null;
}

/** What a corpus is and what one line of it holds, for lineTooLongError. */
export const CORPUS_LINES = 'a corpus holds one sentence or record per line (is this a JSON dump, or a compressed or binary file?)';

/**
 * The one-line error for line `line` (1-based) of `file`, longer than `limit` bytes without its line end: FILE:LINE,
 * the limit, then `holds`, the caller's words for what the file is and what one line of it holds (CORPUS_LINES for
 * a corpus).
 */
export function lineTooLongError(file: string, line: number, limit: number, holds: string): UserError {
  return new UserError(`${file}:${line}: line longer than ${limit} bytes: ${holds}`);
}

/** An async iterable over a corpus whose `stats` fill in as it is consumed. */
export interface CorpusReader extends AsyncIterable<CorpusLine> {
  readonly path: string;
  readonly format: CorpusFormat;
  readonly stats: ReadStats;
}

/** Resolves `auto` by extension. */
export function detectFormat(file: string, format: CorpusFormatChoice = DEFAULT_CORPUS_FORMAT): CorpusFormat {
  if (format !== 'auto') return format;
  const ext = path.extname(file).toLowerCase();
  return ext === '.csv' ? 'csv' : ext === '.tsv' ? 'tsv' : 'txt';
}

function newStats(): ReadStats {
  return { lines: 0, records: 0, blank: 0, invalid: 0, invalidLines: [], bom: false, bytes: 0, sha256: null, header: null, columnIndex: null };
}

/** The one-line error for `file` (`what`: a corpus, a queries file) that cannot be read: its errno code, or `err` itself. */
export function cannotReadError(what: string, file: string, err: unknown): UserError {
  return new UserError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
}

async function checkReadable(file: string, what: string): Promise<void> {
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new UserError(`${file}: not a file`);
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw cannotReadError(what, file, err);
  }
}

/** Counts invalid `line` (`nul`: it holds a NUL byte, else it is not valid UTF-8), or with `fail` throws naming it. */
function noteInvalid(stats: ReadStats, file: string, line: number, nul: boolean, onInvalid: OnInvalid): void {
  if (onInvalid === 'fail') {
    throw new UserError(`${file}:${line}: ${nul ? 'NUL byte, not text' : 'not valid UTF-8'} (pass onInvalid: skip / --on-invalid skip to skip such lines)`);
  }
  stats.invalid++;
  if (stats.invalidLines.length < MAX_REPORTED_INVALID) stats.invalidLines.push(line);
}

/**
 * One physical line: bytes [begin, end) of `buf` without terminator, its 1-based number, the file offset of its
 * first byte, whether it holds a NUL byte and whether it is valid (valid UTF-8 and no NUL). The splitter reuses one
 * object for every line (no per-line allocation): read the fields before asking for the next line.
 */
interface LineView {
  buf: Buffer;
  begin: number;
  end: number;
  line: number;
  offset: number;
  nul: boolean;
  valid: boolean;
}

/**
 * Splits a byte stream of `file` into physical lines (`\n`, with a trailing `\r` removed), hashing every byte (when
 * given a hash) and removing a leading UTF-8 BOM. Yields each line, including a last line without `\n`. Throws a UserError on a
 * UTF-16/32 byte-order mark (utf8BomLength), when the first buffer it splits looks binary (checkBinary), or on a
 * line longer than `maxLineBytes` (checkLength), before holding more of it than that and one chunk.
 * Exported for test/data-readers.test.ts only (src/index.ts does not export it): its timing test of a long line
 * feeds chunks far smaller than the readers' READ_CHUNK_BYTES reads, which no public reader can be made to use.
 */
export class LineSplitter {
  /**
   * The bytes after the last `\n` so far, in pieces: a chunk without `\n` is added as it is and the pieces are
   * joined once, when a `\n` (or the end) comes, so a long stretch without one is copied once, not once per chunk.
   */
  private tail: Buffer[] = [];
  /** The tail's length in bytes. */
  private tailBytes = 0;
  /** File offset of the tail's first byte (or of the next byte when there is no tail). */
  private tailStart = 0;
  private lineNo = 0;
  private first = true;
  private sampled = false;
  /**
   * `holds`: what the file is and what one line of it holds, for lineTooLongError (CORPUS_LINES for the corpus
   * readers). `maxLineBytes`: MAX_LINE_BYTES for every reader; the timing test passes a larger one.
   */
  constructor(
    private readonly file: string,
    private readonly hash: Hash | null,
    private readonly stats: ReadStats,
    private readonly holds: string,
    private readonly maxLineBytes = MAX_LINE_BYTES,
  ) {}

  /** `buf` (the file's first bytes, all of them when shorter than a mark) without a UTF-8 BOM; see utf8BomLength. */
  private skipBom(buf: Buffer): Buffer {
    this.first = false;
    const n = utf8BomLength(this.file, buf);
    if (n > 0) this.stats.bom = true;
    this.tailStart += n;
    return buf.subarray(n);
  }

  /**
   * Throws nulByteError (naming the first such line) when NUL bytes are on at least half of the lines of `buf`, the
   * file's first bytes after any BOM (one read chunk, or the whole file; a last piece without `\n` is a line): a
   * binary file, or UTF-16/32 without a mark, where nearly every line holds one, is not skipped line by line as a
   * text file with a stray NUL is. Half, not most: in UTF-16 LE text of characters without a zero byte (CJK) the
   * NUL of each `\n` lands on the next line, so a one-line file has one line with a NUL out of two.
   */
  private checkBinary(buf: Buffer): void {
    let nul = buf.indexOf(0);
    if (nul < 0) return;
    const first = lineOf(buf, nul, this.lineNo + 1);
    let lines = 0;
    let withNul = 0;
    for (let start = 0; start < buf.length; lines++) {
      const nl = buf.indexOf(10, start);
      const end = nl < 0 ? buf.length : nl + 1;
      if (nul >= 0 && nul < start) nul = buf.indexOf(0, start);
      if (nul >= start && nul < end) withNul++;
      start = end;
    }
    if (2 * withNul >= lines) throw nulByteError(this.file, first, `NUL bytes on ${withNul} of the first ${lines} lines: `);
  }

  /**
   * Throws a UserError naming line `line` when its `bytes` (without line end; for a line not yet ended, what is
   * certain to be in it) are more than `maxLineBytes`.
   */
  private checkLength(bytes: number, line: number): void {
    if (bytes > this.maxLineBytes) {
      throw lineTooLongError(this.file, line, this.maxLineBytes, this.holds);
    }
  }

  /**
   * Adds `piece` (copied when `copy`, so a chunk it is cut from is not held) to the tail, bytes of the line after the
   * last complete one, once checkLength has passed that line's length so far.
   */
  private keep(piece: Buffer, copy = false): void {
    // A last `\r` may be the line end's.
    this.checkLength(this.tailBytes + piece.length - (piece[piece.length - 1] === 13 ? 1 : 0), this.lineNo + 1);
    this.tail.push(copy ? Buffer.from(piece) : piece);
    this.tailBytes += piece.length;
  }

  private readonly view: LineView = { buf: Buffer.alloc(0), begin: 0, end: 0, line: 0, offset: 0, nul: false, valid: true };

  *push(chunk: Buffer): Generator<LineView> {
    this.hash?.update(chunk);
    this.stats.bytes += chunk.length;
    if (this.sampled && chunk.indexOf(10) < 0) {
      // Still inside a line (its mark and sample already checked): keep the chunk, join later.
      if (chunk.length > 0) this.keep(chunk);
      return;
    }
    let buf = this.tail.length === 0 ? chunk : Buffer.concat([...this.tail, chunk]);
    this.tail = [];
    this.tailBytes = 0;
    if (this.first) {
      if (buf.length < MAX_BOM_BYTES) {
        this.keep(buf);
        return;
      }
      buf = this.skipBom(buf);
    }
    if (!this.sampled) {
      this.sampled = true;
      this.checkBinary(buf);
    }
    const base = this.tailStart;
    const lastNl = buf.lastIndexOf(10);
    // One NUL search and one validity check for all complete lines of the chunk; per-line checks only when they fail.
    const anyNul = buf.subarray(0, lastNl + 1).indexOf(0) >= 0;
    const allValid = lastNl < 0 || (!anyNul && isUtf8(buf.subarray(0, lastNl + 1)));
    const v = this.view;
    v.buf = buf;
    let start = 0;
    while (start <= lastNl) {
      const nl = buf.indexOf(10, start);
      v.begin = start;
      v.end = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl;
      v.line = ++this.lineNo;
      this.checkLength(v.end - v.begin, v.line);
      v.offset = base + start;
      v.nul = anyNul && buf.subarray(v.begin, v.end).indexOf(0) >= 0;
      v.valid = allValid || (!v.nul && isUtf8(buf.subarray(v.begin, v.end)));
      yield v;
      start = nl + 1;
    }
    this.tailStart = base + start;
    if (start < buf.length) this.keep(buf.subarray(start), true);
  }

  *end(): Generator<LineView> {
    if (this.first && this.tail.length > 0) {
      // A file shorter than the longest mark: its lines are all still in the tail.
      this.tail = [this.skipBom(Buffer.concat(this.tail))];
      yield* this.push(Buffer.alloc(0));
    }
    // A last line without `\n`: its length was checked as it was kept.
    const buf = Buffer.concat(this.tail);
    this.tail = [];
    this.tailBytes = 0;
    if (buf.length > 0) {
      const v = this.view;
      v.buf = buf;
      v.begin = 0;
      v.end = buf[buf.length - 1] === 13 ? buf.length - 1 : buf.length;
      v.line = ++this.lineNo;
      v.offset = this.tailStart;
      v.nul = buf.subarray(0, v.end).indexOf(0) >= 0;
      v.valid = !v.nul && isUtf8(buf.subarray(0, v.end));
      yield v;
    }
    this.stats.lines = this.lineNo;
  }
}

async function* readTxt(file: string, stats: ReadStats, onInvalid: OnInvalid, blankLines: BlankLines): AsyncGenerator<CorpusLine> {
  const hash = createHash('sha256');
  const splitter = new LineSplitter(file, hash, stats, CORPUS_LINES);
  const handle = function* (lines: Generator<LineView>): Generator<CorpusLine> {
    for (const v of lines) {
      const line = v.line;
      if (!v.valid) {
        noteInvalid(stats, file, line, v.nul, onInvalid);
        continue;
      }
      const text = v.buf.toString('utf8', v.begin, v.end);
      if (isBlank(text)) {
        stats.blank++;
        if (blankLines === 'skip') continue;
      }
      stats.records++;
      yield { text, line };
    }
  };
  for await (const lines of splitChunks(file, splitter)) yield* handle(lines);
  stats.sha256 = hash.digest('hex');
}

/**
 * Reads `file` READ_CHUNK_BYTES at a time and yields, a chunk at a time, the lines `splitter` splits from it (the
 * last ones at the end); each must be iterated whole before the next is asked for (the splitter's view is reused).
 */
async function* splitChunks(file: string, splitter: LineSplitter): AsyncGenerator<Generator<LineView>> {
  const stream = createReadStream(file, { highWaterMark: READ_CHUNK_BYTES });
  try {
    for await (const chunk of stream) yield splitter.push(chunk as Buffer);
    yield splitter.end();
  } finally {
    stream.destroy();
  }
}

/** One physical line of readLines: its text and 1-based number. */
export interface TextLine {
  text: string;
  line: number;
}

/**
 * Streams the physical lines of `file` (blank ones included), read READ_CHUNK_BYTES at a time and split by
 * LineSplitter: a UTF-8 BOM removed, `\n` or `\r\n` line ends, and the corpus rules' UserErrors naming the file (a
 * UTF-16/32 byte-order mark, a binary file) or its line (one longer than `maxLineBytes`, default MAX_LINE_BYTES,
 * worded by lineTooLongError with `holds`, what the file is and what one line of it holds), raised before more than
 * that and one chunk is held. Each line is decoded as UTF-8, invalid bytes as U+FFFD. A file
 * that cannot be read throws its errno error (`code`, `path`). For files other than corpora, read line by line so
 * that none is held whole (an index's texts.jsonl, a pairs file).
 */
export async function* readLines(file: string, holds: string, maxLineBytes = MAX_LINE_BYTES): AsyncGenerator<TextLine> {
  const splitter = new LineSplitter(file, null, newStats(), holds, maxLineBytes);
  for await (const lines of splitChunks(file, splitter)) {
    for (const v of lines) yield { text: v.buf.toString('utf8', v.begin, v.end), line: v.line };
  }
}

/**
 * Consecutive lines of the CSV path's LineIndex alike in emptiness, validity and NUL bytes, and (from the second on)
 * equally long with their line ends: lines `line` .. `line + count - 1`, the i-th (from 0) starting at byte
 * `start + i * step` (`step` 0 while `count` is 1). A run of empty lines (a quote never closed, then only line breaks)
 * is one entry however long.
 */
interface LineRun {
  line: number;
  start: number;
  count: number;
  step: number;
  empty: boolean;
  valid: boolean;
  nul: boolean;
}

/** How many lines of `r` start before byte `offset`. */
function linesBefore(r: LineRun, offset: number): number {
  if (offset <= r.start) return 0;
  return r.step === 0 ? 1 : Math.min(r.count, Math.ceil((offset - r.start) / r.step));
}

/**
 * A pass-through Transform for the CSV path: hashes the bytes and remembers, for the lines the parser has not
 * passed yet, their number, start offset, emptiness, validity and NUL bytes (csv-parse itself would decode invalid
 * bytes with replacement characters, and its own line count is off for quoted CRLF), as runs of alike lines
 * (LineRun), so that the lines of a record csv-parse has not finished (up to max_record_size bytes of them) take
 * memory by their kinds and lengths, not their count. Records are located by csv-parse's byte offsets (`info.bytes`).
 */
class LineIndex extends Transform {
  private readonly splitter: LineSplitter;
  /** Pending lines, oldest first, from `head`. */
  private queue: LineRun[] = [];
  private head = 0;
  constructor(file: string, hash: Hash, stats: ReadStats) {
    super();
    this.splitter = new LineSplitter(file, hash, stats, CORPUS_LINES);
  }
  /** Adds line `v` to the last run when it is alike (see LineRun), else as a run of its own. */
  private note(v: LineView): void {
    const empty = v.end === v.begin;
    const last = this.queue[this.queue.length - 1];
    if (last !== undefined && this.queue.length > this.head && last.empty === empty && last.valid === v.valid && last.nul === v.nul) {
      const step = v.offset - (last.start + (last.count - 1) * last.step);
      if (last.count === 1 || step === last.step) {
        last.step = step;
        last.count++;
        return;
      }
    }
    this.queue.push({ line: v.line, start: v.offset, count: 1, step: 0, empty, valid: v.valid, nul: v.nul });
  }
  /**
   * Queues the lines the splitter yields, then calls `cb` with `chunk` (passed on; none at the end) or with what the
   * splitter threw (a UTF-16/32 byte-order mark, a binary file).
   */
  private add(lines: Generator<LineView>, cb: TransformCallback, chunk?: Buffer): void {
    try {
      for (const v of lines) this.note(v);
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb(null, chunk);
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.add(this.splitter.push(chunk), cb, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.add(this.splitter.end(), cb);
  }
  /** The number of the line holding byte `offset` (among lines not yet forgotten). */
  lineContaining(offset: number): number {
    let line = this.queue[this.head]?.line ?? 1;
    for (let i = this.head; i < this.queue.length && this.queue[i]!.start <= offset; i++) {
      const r = this.queue[i]!;
      line = r.line + linesBefore(r, offset + 1) - 1;
    }
    return line;
  }
  /** The first line from `line` on that is not empty (among lines not yet forgotten; `line` itself if none). */
  nonEmptyFrom(line: number): number {
    for (let i = this.head; i < this.queue.length; i++) {
      const r = this.queue[i]!;
      if (!r.empty && r.line + r.count > line) return Math.max(r.line, line);
    }
    return line;
  }
  /**
   * The record occupying bytes [from, to): its first non-empty line, the first invalid line it spans (or
   * null) and whether that one holds a NUL byte, and the number of empty lines before it. Lines before `from` are forgotten, so calls must come in file order.
   */
  record(from: number, to: number): { start: number; invalid: number | null; nul: boolean; emptyBefore: number } {
    while (this.head < this.queue.length) {
      const r = this.queue[this.head]!;
      const gone = linesBefore(r, from);
      if (gone < r.count) {
        r.line += gone;
        r.start += gone * r.step;
        r.count -= gone;
        break;
      }
      this.head++;
    }
    if (this.head > 4096) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    let start = -1;
    let invalid: number | null = null;
    let nul = false;
    let emptyBefore = 0;
    for (let i = this.head; i < this.queue.length && this.queue[i]!.start < to; i++) {
      const r = this.queue[i]!;
      if (start < 0 && r.empty) emptyBefore += linesBefore(r, to);
      if (start < 0 && !r.empty) start = r.line;
      if (invalid === null && !r.valid) {
        invalid = r.line;
        nul = r.nul;
      }
    }
    const last = this.queue[this.queue.length - 1];
    const fallback = this.head < this.queue.length ? this.queue[this.head]!.line : last !== undefined ? last.line + last.count : 1;
    return { start: start < 0 ? fallback : start, invalid, nul, emptyBefore };
  }
}

interface CsvRecord {
  record: string[];
  info: { bytes: number };
}

async function* readCsv(
  file: string,
  delimiter: string,
  stats: ReadStats,
  opts: Required<Pick<ReadCorpusOptions, 'onInvalid' | 'header' | 'what'>> & { column: string | number | null; option: string },
): AsyncGenerator<CorpusLine> {
  const hash = createHash('sha256');
  const index = new LineIndex(file, hash, stats);
  const parser = parse(csvParseOptions(delimiter));
  const source = createReadStream(file, { highWaterMark: READ_CHUNK_BYTES });
  source.on('error', (e) => parser.destroy(e));
  index.on('error', (e) => parser.destroy(e));
  source.pipe(index).pipe(parser);

  const { onInvalid } = opts;
  const picker = new ColumnPicker(file, opts.column, opts.header, opts.option);
  let prevEnd = 0;
  try {
    for await (const rec of parser as AsyncIterable<CsvRecord>) {
      const { start, invalid, nul, emptyBefore } = index.record(prevEnd, rec.info.bytes);
      prevEnd = rec.info.bytes;
      stats.blank += emptyBefore;
      if (picker.atFirst) {
        const isHeader = picker.takeFirst(rec.record, start);
        stats.header = picker.header;
        stats.columnIndex = picker.columnIndex;
        if (isHeader) {
          if (invalid !== null) throw new UserError(`${file}:${invalid}: header ${nul ? 'holds a NUL byte' : 'is not valid UTF-8'}`);
          continue;
        }
      }
      if (invalid !== null) {
        noteInvalid(stats, file, invalid, nul, onInvalid);
        continue;
      }
      const text = picker.text(rec.record, start);
      if (isBlank(text)) {
        stats.blank++;
        continue;
      }
      stats.records++;
      yield { text, line: start };
    }
  } catch (err) {
    if (err instanceof UserError) throw err;
    if (err instanceof CsvError) {
      const fault = describeCsvError(err, prevEnd);
      const line = csvFaultLine(fault, { containing: (offset) => index.lineContaining(offset), nonEmptyFrom: (l) => index.nonEmptyFrom(l) });
      throw new UserError(`${file}:${line}: malformed ${delimitedKind(delimiter)}: ${fault.what}`);
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('E')) throw cannotReadError(opts.what, file, err);
    throw err;
  } finally {
    source.destroy();
  }
  stats.blank += index.record(prevEnd, Number.MAX_SAFE_INTEGER).emptyBefore;
  stats.sha256 = hash.digest('hex');
}

/**
 * Opens a corpus for streaming. The file is checked when iteration starts; each iteration re-reads the file and
 * resets `stats`.
 */
export function openCorpus(file: string, opts: ReadCorpusOptions = {}): CorpusReader {
  const format = detectFormat(file, opts.format ?? DEFAULT_CORPUS_FORMAT);
  const onInvalid = opts.onInvalid ?? DEFAULT_ON_INVALID;
  if (onInvalid !== 'skip' && onInvalid !== 'fail') throw new UserError(`onInvalid must be skip or fail, got ${String(onInvalid)}`);
  const names = { ...CONFIG_CORPUS_NAMES, ...opts.names };
  const column = parseColumn(opts.column, names.column);
  const blankLines = opts.blankLines ?? DEFAULT_BLANK_LINES;
  const what = opts.what ?? 'corpus';
  if (blankLines !== 'skip' && blankLines !== 'keep') throw new UserError(`blankLines must be skip or keep, got ${String(blankLines)}`);
  if (format !== 'txt' && blankLines === 'keep') {
    throw new UserError(`${file}: ${names.blankLines} keep applies to .txt corpora (one sentence per line); blank CSV/TSV records are always skipped`);
  }
  if (format === 'txt' && column !== null) {
    throw new UserError(`${file}: ${names.column} is set (${column}) but the file is read as one sentence per line; use a .csv/.tsv file` +
      `${names.format !== null ? ` or ${names.format} csv/tsv` : ''}`);
  }
  const reader = {
    path: file,
    format,
    stats: newStats(),
    async *[Symbol.asyncIterator](): AsyncGenerator<CorpusLine> {
      await checkReadable(file, what);
      reader.stats = newStats();
      if (format === 'txt') yield* readTxt(file, reader.stats, onInvalid, blankLines);
      else yield* readCsv(file, format === 'tsv' ? '\t' : ',', reader.stats, { onInvalid, header: opts.header ?? 'auto', column, option: names.column, what });
    },
  };
  return reader;
}

/** Reads a whole corpus into memory (for small files and tests). */
export async function readAll(file: string, opts: ReadCorpusOptions = {}): Promise<{ lines: CorpusLine[]; stats: ReadStats }> {
  const reader = openCorpus(file, opts);
  const lines: CorpusLine[] = [];
  for await (const l of reader) lines.push(l);
  return { lines, stats: reader.stats };
}
