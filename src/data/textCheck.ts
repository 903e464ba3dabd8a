/**
 * What makes a file's bytes not UTF-8 text, checked the same way by the streaming corpus readers
 * (src/data/readers.ts) and the SentEval task readers (eval/senteval.ts): a UTF-16 or UTF-32 byte-order mark, and
 * NUL bytes (text has none; binary files and UTF-16/32 without a mark do). Plain Uint8Array code with no Node
 * imports, as eval/senteval.ts is also part of the browser bundle.
 */
import { UserError } from '../errors.js';

/** The UTF-8 byte-order mark. */
export const UTF8_BOM = Uint8Array.of(0xef, 0xbb, 0xbf);
/** A byte-order mark needs at most this many bytes. */
export const MAX_BOM_BYTES = 4;
/** Byte-order marks of encodings other than UTF-8; UTF-32 LE first, as its mark starts with UTF-16 LE's. */
const OTHER_BOMS: readonly { name: string; bytes: Uint8Array }[] = [
  { name: 'UTF-32 little-endian', bytes: Uint8Array.of(0xff, 0xfe, 0x00, 0x00) },
  { name: 'UTF-32 big-endian', bytes: Uint8Array.of(0x00, 0x00, 0xfe, 0xff) },
  { name: 'UTF-16 little-endian', bytes: Uint8Array.of(0xff, 0xfe) },
  { name: 'UTF-16 big-endian', bytes: Uint8Array.of(0xfe, 0xff) },
];

function startsWith(head: Uint8Array, mark: Uint8Array): boolean {
  return head.length >= mark.length && mark.every((b, i) => head[i] === b);
}

/**
 * The length of the UTF-8 byte-order mark `head` (a file's first bytes) starts with (3, or 0 without one); a
 * UserError naming `file` when it starts with a UTF-16 or UTF-32 mark instead.
 */
export function utf8BomLength(file: string, head: Uint8Array): number {
  if (startsWith(head, UTF8_BOM)) return UTF8_BOM.length;
  const other = OTHER_BOMS.find((b) => startsWith(head, b.bytes));
  if (other !== undefined) {
    const hex = [...other.bytes].map((x) => x.toString(16).toUpperCase().padStart(2, '0')).join(' ');
    throw new UserError(`${file}: ${other.name.split(' ')[0]} text (byte order mark ${hex}, ${other.name}); save it as UTF-8`);
  }
  return 0;
}

/**
 * A UserError for the NUL byte on `line` of `file`, a file that is not text: a binary file, or UTF-16/32 without a
 * mark. `why`, when given, says how that was told (the corpus readers' share of lines with a NUL).
 */
export function nulByteError(file: string, line: number, why = ''): UserError {
  return new UserError(`${file}:${line}: NUL byte, not text (${why}a binary file, or UTF-16/UTF-32 without a byte order mark?); save it as UTF-8`);
}

/** The 1-based line of byte `pos` of `bytes`, whose first byte is on line `first`. */
export function lineOf(bytes: Uint8Array, pos: number, first = 1): number {
  let line = first;
  for (let i = bytes.indexOf(10); i >= 0 && i < pos; i = bytes.indexOf(10, i + 1)) line++;
  return line;
}

/**
 * Checks a whole file's bytes as text: a UserError naming `file` for a UTF-16/32 byte-order mark (utf8BomLength)
 * or, naming its line too, for a NUL byte (nulByteError). Returns the length of its UTF-8 byte-order mark (0 or 3).
 */
export function checkTextBytes(file: string, bytes: Uint8Array): number {
  const bom = utf8BomLength(file, bytes.subarray(0, MAX_BOM_BYTES));
  const nul = bytes.indexOf(0, bom);
  if (nul >= 0) throw nulByteError(file, lineOf(bytes, nul));
  return bom;
}
