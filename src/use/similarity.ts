/**
 * `similarity`: cosine similarity of sentence pairs under one model. The pair readers the CLI uses (positional
 * sentences taken two by two, or a TSV file of pairs) are in pairs.ts, which loads neither TF.js nor the tokenizer.
 */
import { kindOf, UserError } from '../errors.js';
import { checkText, type BertTokenizer } from '../data/tokenizer.js';
import type { BertModel } from '../model/bert.js';
import { embed, type EmbedOptions } from '../model/embed.js';
import type { SentencePair } from './pairs.js';
import { cosine } from './vectors.js';

export interface ScoredPair {
  a: string;
  b: string;
  score: number;
}

/**
 * Scores each pair by the cosine of its two embeddings; each distinct sentence is embedded once. A pair that is not
 * two strings is a UserError naming it, before anything is embedded.
 */
export async function similarity(model: BertModel, tokenizer: BertTokenizer, pairs: readonly SentencePair[],
  opts: Omit<EmbedOptions, 'onBatch'> = {}): Promise<ScoredPair[]> {
  if (!Array.isArray(pairs)) throw new UserError(`pairs must be an array of [string, string] pairs, got ${kindOf(pairs)}`);
  pairs.forEach((p: unknown, i) => {
    if (!Array.isArray(p) || p.length !== 2) {
      throw new UserError(`pairs[${i}] must be a [string, string] pair, got ${Array.isArray(p) ? `array of length ${p.length}` : kindOf(p)}`);
    }
    checkText(p[0], `pairs[${i}][0]`);
    checkText(p[1], `pairs[${i}][1]`);
  });
  const unique = [...new Set(pairs.flatMap(([a, b]) => [a, b]))];
  const vecs = await embed(model, tokenizer, unique, opts);
  const at = new Map(unique.map((s, i) => [s, vecs[i]!]));
  return pairs.map(([a, b]) => ({ a, b, score: cosine(at.get(a)!, at.get(b)!) }));
}
