/**
 * How src/data/readers.ts reads a corpus: the formats, what becomes of invalid and blank lines, and the defaults, in
 * a module that loads no parser: the training config's data.* keys and `micse data subset`'s flags name them.
 */

/** A corpus file's format; 'auto' goes by the file's extension. */
export const CORPUS_FORMATS = ['auto', 'txt', 'csv', 'tsv'] as const;
export type CorpusFormatChoice = (typeof CORPUS_FORMATS)[number];
export const DEFAULT_CORPUS_FORMAT: CorpusFormatChoice = 'auto';

/** A line that is not valid UTF-8 or holds a NUL byte: skipped and counted, or an error naming the file and line. */
export const ON_INVALID_CHOICES = ['skip', 'fail'] as const;
export type OnInvalid = (typeof ON_INVALID_CHOICES)[number];
export const DEFAULT_ON_INVALID: OnInvalid = 'skip';

/** A blank line of a .txt corpus: skipped, or kept as an empty sentence (as HF datasets' `text` loader does). */
export const BLANK_LINES_CHOICES = ['skip', 'keep'] as const;
export type BlankLines = (typeof BLANK_LINES_CHOICES)[number];
export const DEFAULT_BLANK_LINES: BlankLines = 'skip';
