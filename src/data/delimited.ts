/**
 * CSV/TSV rules shared by the streaming corpus reader (src/data/readers.ts, files in Node) and the in-memory reader
 * below (the demo page's uploaded file, or any text in Node): the csv-parse options, which record is a header and
 * which column holds the sentence, and how a csv-parse error reads. No Node built-ins here: the browser bundle
 * includes this module (its `csv-parse/sync` becomes csv-parse's browser build there, scripts/build.mjs).
 */
import { CsvError, parse, type Options } from 'csv-parse/sync';
import { UserError } from '../errors.js';
import { MAX_LINE_BYTES } from './corpusOptions.js';

/** Header names recognised by `header: 'auto'` when the column is given by index. */
export const KNOWN_HEADER_NAMES: readonly string[] = ['sent0', 'sent1', 'sentence', 'sentences', 'text', 'sent'];

/**
 * csv-parse's options for a corpus with `delimiter` (`,` or a tab): every record carries its end offset in bytes;
 * records end at `\r\n` or `\n`, the line ends the readers take, in any mix (csv-parse would otherwise take the first
 * line end it finds for every record, and search for it at three allocations a byte until one comes); and a record of
 * more than MAX_LINE_BYTES (a line's limit, corpusOptions.ts; csv-parse counts a record's finished fields in UTF-16
 * units, the field being read in bytes) is an error (CSV_MAX_RECORD_SIZE, see describeCsvError) once that much of it
 * has come: a quote never closed would otherwise hold the rest of the file.
 */
export function csvParseOptions(delimiter: string): Options {
  return {
    bom: true, info: true, skip_empty_lines: true, delimiter, quote: '"', relax_column_count: false, record_delimiter: ['\r\n', '\n'],
    max_record_size: MAX_LINE_BYTES,
  };
}

/**
 * Parses a CLI/YAML/page column value: a non-negative integer (or its decimal string) is an index, else a name.
 * `name` is what the error calls the option.
 */
export function parseColumn(column: string | number | null | undefined, name = 'data.column'): string | number | null {
  if (column === null || column === undefined || column === '') return null;
  if (typeof column === 'number') {
    if (!Number.isInteger(column) || column < 0) throw new UserError(`${name} must be a name or a 0-based index, got ${column}`);
    return column;
  }
  return /^\d+$/.test(column) ? Number(column) : column;
}

/** Empty or whitespace only. */
export function isBlank(s: string): boolean {
  return !/\S/.test(s);
}

/**
 * Takes a file's records in order and gives the text of the chosen column: `column` is a header name or a 0-based
 * index (null: the first column). `header: 'auto'` treats the first record as a header when `column` is a name or
 * null (the convention of SimCSE's CSV loader), or when `column` is an index and the first record's cell in that
 * column is one of KNOWN_HEADER_NAMES.
 */
export class ColumnPicker {
  /** The header's fields (trimmed) once the first record was one, else null. */
  header: string[] | null = null;
  /** The column read, once the first record has been seen. */
  columnIndex: number | null = null;
  private first = true;

  /** `option`: what chose the column, as the messages name it (`--column`, `data.column`). */
  constructor(
    private readonly file: string,
    private readonly column: string | number | null,
    private readonly headerMode: boolean | 'auto',
    private readonly option = 'column',
  ) {}

  /**
   * The first record: true when it is the header (which names the column when `column` is a name). Throws a
   * UserError when a named column is missing or the file has no header to name it.
   */
  takeFirst(record: string[], line: number): boolean {
    this.first = false;
    const { column } = this;
    const isHeader = this.headerMode === true ||
      (this.headerMode === 'auto' && (typeof column !== 'number' || KNOWN_HEADER_NAMES.includes((record[column] ?? '').trim().toLowerCase())));
    if (isHeader) {
      this.header = record.map((h) => h.trim());
      if (typeof column === 'string') {
        const idx = this.header.indexOf(column);
        if (idx < 0) throw new UserError(`${this.file}:${line}: ${this.option} "${column}" is not in the header [${this.header.join(', ')}]`);
        this.columnIndex = idx;
      } else this.columnIndex = column ?? 0;
      return true;
    }
    if (typeof column === 'string') throw new UserError(`${this.file}: ${this.option} "${column}" names a column, but the file has no header`);
    this.columnIndex = column ?? 0;
    return false;
  }

  /** Whether the next record is the file's first (see takeFirst). */
  get atFirst(): boolean {
    return this.first;
  }

  /** The chosen column's text of a data record starting on `line`. */
  text(record: string[], line: number): string {
    const idx = this.columnIndex!;
    if (idx >= record.length) throw new UserError(`${this.file}:${line}: record has ${record.length} column(s), no column ${idx} (0-based, ${this.option})`);
    return record[idx]!;
  }
}

/**
 * Where a csv-parse error is and what it says. Every fault is reported at the line where the faulty part starts, and
 * `what` says which part: the field, for quote errors (csv-parse's `bytes` is where that field starts: its opening
 * quote, the delimiter just before it, or the end of the previous record when empty lines come between), or the record,
 * for a wrong field count (`bytes` is the record's end; the line breaks inside its fields, which csv-parse gives back,
 * lead to its first line). A record past max_record_size is told by the field it was in (its `bytes` is where that
 * field starts). csv-parse's own line numbers are unreliable with CRLF and point past the fault.
 */
export interface CsvFault {
  /** A byte offset in the file. */
  at: number;
  /** `field`: the faulty field starts at `at`; `record`: the faulty record ends at `at` and spans `linesIn` more lines. */
  part: 'field' | 'record';
  linesIn: number;
  what: string;
}

/** The CsvFault of a csv-parse error; `prevEnd` (the end of the last record read) when it carries no offset. */
export function describeCsvError(err: CsvError, prevEnd: number): CsvFault {
  const at = typeof err.bytes === 'number' ? err.bytes : prevEnd;
  if (err.code === 'CSV_RECORD_INCONSISTENT_FIELDS_LENGTH') {
    const fields = (err as CsvError & { record?: unknown }).record;
    const linesIn = Array.isArray(fields) ? fields.reduce((n: number, f: unknown) => n + String(f).split('\n').length - 1, 0) : 0;
    return { at, part: 'record', linesIn, what: `the record starting on this line: ${cleanCsvMessage(err)}` };
  }
  const what = err.code === 'CSV_QUOTE_NOT_CLOSED'
    ? 'the quoted field starting on this line is never closed'
    : err.code === 'CSV_MAX_RECORD_SIZE'
      ? `the field starting on this line takes its record past ${MAX_LINE_BYTES} bytes (a quote never closed?)`
      : `the field starting on this line: ${cleanCsvMessage(err)}`;
  return { at, part: 'field', linesIn: 0, what };
}

/** csv-parse's message without its (unreliable) line number. */
function cleanCsvMessage(err: CsvError): string {
  return err.message.replace(/\s*(?:at|on) line \d+/g, '').replace(/:\s*$/, '');
}

/**
 * The 1-based line a CsvFault is reported at, given a file's lines: `containing(offset)`, the line holding a byte,
 * and `nonEmptyFrom(line)`, the first line from `line` on that is not empty.
 */
export function csvFaultLine(fault: CsvFault, lines: { containing(offset: number): number; nonEmptyFrom(line: number): number }): number {
  return fault.part === 'record'
    ? lines.containing(Math.max(0, fault.at - 1)) - fault.linesIn
    : lines.nonEmptyFrom(lines.containing(fault.at));
}

/** CSV or TSV by its delimiter, for messages. */
export function delimitedKind(delimiter: string): 'CSV' | 'TSV' {
  return delimiter === '\t' ? 'TSV' : 'CSV';
}

/** One record's text and its 1-based first physical line (as the streaming reader's CorpusLine). */
export interface DelimitedLine {
  text: string;
  line: number;
}

/**
 * The sentences of CSV/TSV text held in memory, by the streaming reader's rules (src/data/readers.ts: header and
 * column as ColumnPicker, quoted delimiters and newlines, `""` escapes, BOM, CRLF; blank records skipped; line
 * numbers of each record's first non-empty physical line). Malformed text is a UserError naming `file` and the line.
 */
export function readDelimitedText(text: string, file: string, delimiter: string, opts: { column?: string | number | null; header?: boolean | 'auto' } = {}): DelimitedLine[] {
  const bytes = new TextEncoder().encode(text);
  /** Byte offset of each physical line's start, and whether the line is empty (only `\r` at most). */
  const starts: number[] = [0];
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 10 && i + 1 < bytes.length) starts.push(i + 1);
  const lineEnd = (k: number): number => (k + 1 < starts.length ? starts[k + 1]! - 1 : bytes.length);
  const isEmptyLine = (k: number): boolean => {
    const len = lineEnd(k) - starts[k]!;
    return len === 0 || (len === 1 && bytes[starts[k]!] === 13);
  };
  /** Index of the line holding byte `offset`. */
  const lineAt = (offset: number): number => {
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  /** 1-based number of the first non-empty line starting in [from, to). */
  const firstLine = (from: number, to: number): number => {
    let k = lineAt(from);
    if (starts[k]! < from) k++;
    while (k + 1 < starts.length && starts[k + 1]! < to && isEmptyLine(k)) k++;
    return Math.min(k, starts.length - 1) + 1;
  };

  const column = parseColumn(opts.column);
  const picker = new ColumnPicker(file, column, opts.header ?? 'auto');
  let records: { record: string[]; info: { bytes: number } }[];
  try {
    records = parse(text, csvParseOptions(delimiter)) as unknown as typeof records;
  } catch (err) {
    if (!(err instanceof CsvError)) throw err;
    const fault = describeCsvError(err, 0);
    const line = csvFaultLine(fault, {
      containing: (offset) => lineAt(offset) + 1,
      nonEmptyFrom: (l) => {
        let k = l - 1;
        while (k + 1 < starts.length && isEmptyLine(k)) k++;
        return k + 1;
      },
    });
    throw new UserError(`${file}:${line}: malformed ${delimitedKind(delimiter)}: ${fault.what}`);
  }
  const out: DelimitedLine[] = [];
  let prevEnd = 0;
  for (const rec of records) {
    const line = firstLine(prevEnd, rec.info.bytes);
    prevEnd = rec.info.bytes;
    if (picker.atFirst && picker.takeFirst(rec.record, line)) continue;
    const t = picker.text(rec.record, line);
    if (!isBlank(t)) out.push({ text: t, line });
  }
  return out;
}
