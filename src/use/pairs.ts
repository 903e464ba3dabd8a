/**
 * The sentence pairs `micse similarity` scores: positional sentences taken two by two, or a TSV file of pairs. Apart
 * from similarity.ts (which embeds them) so that the CLI refuses its arguments and a bad pairs file having loaded the
 * readers alone, not TF.js nor the tokenizer.
 */
import { cannotReadError, readLines } from '../data/readers.js';
import { UserError } from '../errors.js';

export type SentencePair = readonly [string, string];

/** Positional sentences A B C D ... -> pairs (A, B), (C, D), ...; an odd count is an error. */
export function pairsFromArgs(sentences: readonly string[]): SentencePair[] {
  if (sentences.length === 0) throw new UserError('no sentences given: pass pairs as "A" "B" ["C" "D" ...] or --pairs FILE.tsv');
  if (sentences.length % 2 !== 0) {
    throw new UserError(`${sentences.length} sentences given: they are read two by two as pairs (A B, C D, ...), so pass an even number`);
  }
  const out: SentencePair[] = [];
  for (let i = 0; i < sentences.length; i += 2) out.push([sentences[i]!, sentences[i + 1]!]);
  return out;
}

/** What a pairs file is and what one line of it holds, for the error on a line past MAX_LINE_BYTES. */
const PAIRS_LINES = 'a pairs file holds one TAB-separated sentence pair per line (is this a JSON dump, or a compressed or binary file?)';

/**
 * Reads pairs from a TAB-separated file, streamed line by line (readLines: a UTF-8 BOM removed, `\r\n` or `\n`, a
 * line longer than MAX_LINE_BYTES a UserError naming it): one pair per line, sentences in 0-based columns `columns`
 * (default 0 and 1; STS-B files use 5 and 6). Blank lines are skipped; a line lacking a column is an error naming it.
 */
export async function readPairsFile(file: string, columns: readonly [number, number] = [0, 1]): Promise<SentencePair[]> {
  const out: SentencePair[] = [];
  const need = Math.max(...columns) + 1;
  try {
    for await (const { text, line } of readLines(file, PAIRS_LINES)) {
      if (text.trim() === '') continue;
      const cols = text.split('\t');
      if (cols.length < need) throw new UserError(`${file}:${line}: ${cols.length} TAB-separated column(s), need column ${need - 1} (0-based)`);
      out.push([cols[columns[0]]!, cols[columns[1]]!]);
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (err instanceof UserError || typeof code !== 'string') throw err;
    throw cannotReadError('pairs file', file, err);
  }
  if (out.length === 0) throw new UserError(`${file}: no pairs (the file is empty)`);
  return out;
}
