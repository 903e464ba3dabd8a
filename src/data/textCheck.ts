/**
 * What makes a file's bytes not UTF-8 text, checked the same way by the streaming corpus readers
 * (src/data/readers.ts) and the SentEval task readers (eval/senteval.ts): a UTF-16 or UTF-32 byte-order mark, and
 * NUL bytes (text has none; binary files and UTF-16/32 without a mark do). A whole file read at once
 * (decodeTextBytes, the task readers) must also be valid UTF-8 (firstInvalidUtf8 says where it is not); the corpus
 * readers judge validity line by line instead (their onInvalid). Plain Uint8Array code with no Node imports, as eval/senteval.ts
 * is also part of the browser bundle.
 */
import { UserError } from '../errors.js';

/** The UTF-8 byte-order mark. */
const UTF8_BOM = Uint8Array.of(0xef, 0xbb, 0xbf);
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

/** Length of the UTF-8 sequence led by `lead`, and the range of its second byte (Unicode Table 3-7); null when `lead` leads none. */
function utf8Sequence(lead: number): { length: number; lo: number; hi: number } | null {
  if (lead >= 0xc2 && lead <= 0xdf) return { length: 2, lo: 0x80, hi: 0xbf };
  if (lead === 0xe0) return { length: 3, lo: 0xa0, hi: 0xbf }; // no overlong forms
  if (lead === 0xed) return { length: 3, lo: 0x80, hi: 0x9f }; // no surrogates
  if (lead >= 0xe1 && lead <= 0xef) return { length: 3, lo: 0x80, hi: 0xbf };
  if (lead === 0xf0) return { length: 4, lo: 0x90, hi: 0xbf };
  if (lead >= 0xf1 && lead <= 0xf3) return { length: 4, lo: 0x80, hi: 0xbf };
  if (lead === 0xf4) return { length: 4, lo: 0x80, hi: 0x8f }; // nothing above U+10FFFF
  return null;
}

/**
 * The offset of the first byte of `bytes` that starts no well-formed UTF-8 sequence (Unicode's definition, which
 * Python's strict utf-8 codec follows: no overlong forms, surrogates or code points above U+10FFFF; a sequence cut
 * off by the end is invalid), or -1 when all of `bytes` is UTF-8.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length;) {
    const lead = bytes[i]!;
    if (lead < 0x80) {
      i++;
      continue;
    }
    const seq = utf8Sequence(lead);
    if (seq === null || i + seq.length > bytes.length) return i;
    const second = bytes[i + 1]!;
    if (second < seq.lo || second > seq.hi) return i;
    for (let j = 2; j < seq.length; j++) if ((bytes[i + j]! & 0xc0) !== 0x80) return i;
    i += seq.length;
  }
  return -1;
}

/**
 * A whole file's bytes decoded as text, in one pass: a UserError naming `file` for a UTF-16/32 byte-order mark
 * (utf8BomLength) or, naming its line too, for a NUL byte (nulByteError) or bytes that are not valid UTF-8 (where
 * firstInvalidUtf8 finds them; as Python's `open(f, encoding='utf8')` refuses them). A UTF-8 byte-order mark is kept
 * in the text, as Python's `open(f, encoding='utf8')` keeps it.
 */
export function decodeTextBytes(file: string, bytes: Uint8Array): string {
  const bom = utf8BomLength(file, bytes.subarray(0, MAX_BOM_BYTES));
  const nul = bytes.indexOf(0, bom);
  if (nul >= 0) throw nulByteError(file, lineOf(bytes, nul));
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    const bad = firstInvalidUtf8(bytes);
    const hex = bytes[bad]!.toString(16).toUpperCase().padStart(2, '0');
    throw new UserError(`${file}:${lineOf(bytes, bad)}: not valid UTF-8 (byte ${hex} at offset ${bad}); save it as UTF-8`);
  }
}
