/**
 * How src/data/readers.ts reads a corpus: the formats, the longest line, what becomes of invalid and blank lines, and
 * the defaults, in a module that loads no parser: the training config's data.* keys and `micse data subset`'s flags
 * name them, and delimited.ts (in the browser bundle too) takes the line limit from here.
 */

/** A corpus file's format; 'auto' goes by the file's extension. */
export const CORPUS_FORMATS = ['auto', 'txt', 'csv', 'tsv'] as const;
export type CorpusFormatChoice = (typeof CORPUS_FORMATS)[number];
export const DEFAULT_CORPUS_FORMAT: CorpusFormatChoice = 'auto';

/**
 * The longest line a corpus may have, in bytes without its line end; a longer one is a UserError naming its line, as
 * soon as this many bytes have come without a line break, whatever `onInvalid` says (a CSV/TSV record, which may span
 * lines, is held to it too: csv-parse's max_record_size). The model sees a line's first tokens only (data.maxSeqLen, at
 * most 512, in training; the model's positions, 512 for BERT, when embedding), a few KB of ordinary text. 4 MiB leaves
 * room for any sentence, record or document-per-line corpus (a long Wikipedia article is a few hundred KB), while a
 * file that is no corpus (a minified JSON dump, a compressed or binary file with no 0x0A byte) is refused after 4 MiB
 * and one read chunk instead of being held whole. Not skipped under `onInvalid: skip`: such a line is nearly always a
 * wrong file (a multi-gigabyte one would be read to its end only to report no sentences), and HF datasets' `text`
 * loader (the authors' scripts) or a sentence-transformers script's `open()` has no limit and would train on the line,
 * truncated; skipping it would drop, without a word, data those tools keep.
 */
export const MAX_LINE_BYTES = 4 << 20;

/** A line that is not valid UTF-8 or holds a NUL byte: skipped and counted, or an error naming the file and line. */
export const ON_INVALID_CHOICES = ['skip', 'fail'] as const;
export type OnInvalid = (typeof ON_INVALID_CHOICES)[number];
export const DEFAULT_ON_INVALID: OnInvalid = 'skip';

/** A blank line of a .txt corpus: skipped, or kept as an empty sentence (as HF datasets' `text` loader does). */
export const BLANK_LINES_CHOICES = ['skip', 'keep'] as const;
export type BlankLines = (typeof BLANK_LINES_CHOICES)[number];
export const DEFAULT_BLANK_LINES: BlankLines = 'skip';
