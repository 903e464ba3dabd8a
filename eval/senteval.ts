/**
 * Readers for the SentEval data layout, reproducing what SentEval's `senteval/sts.py` (as forked by SimCSE) reads
 * and what SimCSE's batcher then embeds.
 *
 * Layout under the data root (`data/senteval` by default; a parent folder of it, such as SentEval's `data/`, also
 * works: see `resolveSentevalRoot`):
 * - `STS/STS1X-en-test/STS.input.<subset>.txt` (sentence 1 TAB sentence 2) and `STS.gs.<subset>.txt` (gold, one a
 *   line; an empty gold line drops the pair). Both files are split into lines with Python's `str.splitlines`.
 * - `STS/STSBenchmark/sts-{train,dev,test}.csv`: every line `strip()`ped and split on TAB (no quoting: the
 *   sentences contain quote characters), 1-based column 5 = score, 6 and 7 = sentences; extra columns ignored.
 * - `SICK/SICK_{train,trial,test_annotated}.txt`: a header line, then TAB-separated rows whose 0-based columns 1, 2,
 *   3 are sentence_A, sentence_B, relatedness_score.
 *
 * Sentence text: SentEval splits every sentence with Python's `str.split()` (any Unicode whitespace) and SimCSE's
 * batcher rejoins the tokens with single spaces; `normalizeSentence` does the same, so we embed exactly the strings
 * the reference embedded. No lowercasing or tokenization happens here (the files are already processed).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { decodeTextBytes } from '../src/data/textCheck.js';
import { UserError } from '../src/errors.js';

/** The STS years of SentEval's unsupervised STS tasks. */
export const STS_YEARS = ['STS12', 'STS13', 'STS14', 'STS15', 'STS16'] as const;
export type StsYear = (typeof STS_YEARS)[number];

/**
 * Subsets per year, in SentEval's order (STS13 has no SMT subset: SentEval drops it for licensing reasons, even
 * when its gold file is present).
 */
export const STS_YEAR_SUBSETS: Readonly<Record<StsYear, readonly string[]>> = {
  STS12: ['MSRpar', 'MSRvid', 'SMTeuroparl', 'surprise.OnWN', 'surprise.SMTnews'],
  STS13: ['FNWN', 'headlines', 'OnWN'],
  STS14: ['deft-forum', 'deft-news', 'headlines', 'images', 'OnWN', 'tweet-news'],
  STS15: ['answers-forums', 'answers-students', 'belief', 'headlines', 'images'],
  STS16: ['answer-answer', 'headlines', 'plagiarism', 'postediting', 'question-question'],
};

export const STSB_SPLITS = ['train', 'dev', 'test'] as const;
export type StsbSplit = (typeof STSB_SPLITS)[number];
export const SICK_SPLITS = ['train', 'trial', 'test'] as const;
export type SickSplit = (typeof SICK_SPLITS)[number];

/** 0-based columns of an STS-Benchmark row (SentEval's `text[4]`, `text[5]`, `text[6]`). */
const STSB_COLUMNS = { score: 4, s1: 5, s2: 6 } as const;
/** 0-based columns of a SICK row (after the header line). */
const SICK_COLUMNS = { s1: 1, s2: 2, score: 3 } as const;
const SICK_FILES: Readonly<Record<SickSplit, string>> = {
  train: 'SICK_train.txt',
  trial: 'SICK_trial.txt',
  test: 'SICK_test_annotated.txt',
};

/** Paired sentences and their gold similarity, in file order. */
export interface StsPairs {
  s1: string[];
  s2: string[];
  gold: number[];
}

/** One subset of an STS task (a year's source, or the single split of STS-B / SICK). */
export interface StsSubsetData extends StsPairs {
  name: string;
  /** The file the sentences came from. */
  file: string;
}

// ---------------------------------------------------------------------------------------------------------------
// Python string semantics the SentEval readers rely on.

/** Characters for which Python's `str.isspace()` is true (what `str.split()` and `str.strip()` split on / strip). */
const PY_WHITESPACE = '\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_WS_RUN = new RegExp(`[${PY_WHITESPACE}]+`, 'u');
const PY_STRIP = new RegExp(`^[${PY_WHITESPACE}]+|[${PY_WHITESPACE}]+$`, 'gu');
/** Line boundaries of Python's `str.splitlines()`. */
const PY_LINE_BREAK = /\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]/u;
/** Line boundaries of Python's text-mode file iteration (universal newlines). */
const UNIVERSAL_NEWLINE = /\r\n|\r|\n/;
/** What Python's `float()` accepts after stripping, restricted to plain decimal numbers. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Python's `s.split()`: split on runs of whitespace, no empty fields. */
export function pySplitWhitespace(s: string): string[] {
  return s.split(PY_WS_RUN).filter((t) => t !== '');
}

/** Python's `s.strip()` with no argument. */
export function pyStrip(s: string): string {
  return s.replace(PY_STRIP, '');
}

/** `s` split at `lineBreak`: no trailing empty line for a final line break; '' gives []. */
function splitLinesAt(s: string, lineBreak: RegExp): string[] {
  if (s === '') return [];
  const lines = s.split(lineBreak);
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** Python's `s.splitlines()`. */
export function pySplitlines(s: string): string[] {
  return splitLinesAt(s, PY_LINE_BREAK);
}

/** Lines as `for line in open(f)` yields them (terminators removed). */
function fileLines(s: string): string[] {
  return splitLinesAt(s, UNIVERSAL_NEWLINE);
}

/**
 * The text SentEval + SimCSE embed for a sentence: `' '.join(sentence.split())`.
 */
export function normalizeSentence(s: string): string {
  return pySplitWhitespace(s).join(' ');
}

/** Python's `float(text)` for decimal numbers; a UserError naming `where` otherwise. */
function parseScore(text: string, where: string): number {
  const t = pyStrip(text);
  if (!DECIMAL.test(t)) throw new UserError(`${where}: expected a number, found '${text.slice(0, 40)}'`);
  return Number(t);
}

// ---------------------------------------------------------------------------------------------------------------
// Files and directories.

/** How deep `resolveSentevalRoot` looks below the given directory for the one holding `STS/`. */
export const SENTEVAL_ROOT_SEARCH_DEPTH = 3;

/**
 * The directory holding `STS/` and `SICK/`: `dataDir` itself, else the first (sorted, breadth-first) directory at
 * most `SENTEVAL_ROOT_SEARCH_DEPTH` levels below it that holds `STS/` (SentEval's `data/downstream`, or the folder
 * `micse data download senteval` extracted the archive into). Returns `dataDir` when there is none, so the error
 * names the file expected there.
 */
export function resolveSentevalRoot(dataDir: string): string {
  const hasTasks = (d: string): boolean => isDirectory(path.join(d, 'STS')) || isDirectory(path.join(d, 'SICK'));
  if (hasTasks(dataDir)) return dataDir;
  let level = [dataDir];
  for (let depth = 0; depth < SENTEVAL_ROOT_SEARCH_DEPTH && level.length > 0; depth++) {
    const next: string[] = [];
    for (const dir of level) {
      let entries: string[];
      try {
        entries = readdirSync(dir).sort();
      } catch {
        continue;
      }
      for (const e of entries) {
        const sub = path.join(dir, e);
        if (!isDirectory(sub)) continue;
        if (isDirectory(path.join(sub, 'STS'))) return sub;
        next.push(sub);
      }
    }
    level = next;
  }
  return dataDir;
}

/** True when `dir` is an existing directory. */
export function isDirectory(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** Where a missing SentEval file's message points, in parentheses at its end (a sweep's input check drops it). */
export const SENTEVAL_DATA_HINT = "the SentEval data root is `micse eval --data DIR` and a training config's data.senteval; " +
  '`npx micse data download senteval` fetches it';

/**
 * Reads a UTF-8 task file; a missing file is a UserError naming its path, and so is one with a UTF-16/UTF-32
 * byte-order mark, a NUL byte or bytes that are not valid UTF-8 (naming the line too; SentEval's
 * `io.open(f, encoding='utf8')` raises on them, where a lenient decoder would put replacement characters in the
 * sentences), by src/data/textCheck.ts's decodeTextBytes. A UTF-8 byte-order mark is kept, as Python's
 * `open(f, encoding='utf8')` keeps it.
 */
function readTaskFile(file: string): string {
  if (!existsSync(file)) throw new UserError(`SentEval task file not found: ${file} (${SENTEVAL_DATA_HINT})`);
  return decodeTextBytes(file, readFileSync(file));
}

/**
 * `data`, a task file's pairs as read, once it is checked to hold the 2 pairs a correlation needs: an empty (or
 * one-pair) file is a UserError naming it when it is read, not a RangeError when it is scored, after a trainer
 * has set up its run.
 */
function enoughPairs(data: StsSubsetData): StsSubsetData {
  const n = data.gold.length;
  if (n < 2) throw new UserError(`${data.file}: ${n} pair${n === 1 ? '' : 's'} (a correlation needs at least 2)`);
  return data;
}

/** Directory of an STS year: `STS/STS12-en-test`. */
export function stsYearDir(root: string, year: StsYear): string {
  return path.join(root, 'STS', `${year}-en-test`);
}

/** One STS12-16 subset, as SentEval's `STSEval.loadFile` reads it (pairs whose gold line is empty dropped). */
export function readStsSubset(yearDir: string, subset: string): StsSubsetData {
  const inputFile = path.join(yearDir, `STS.input.${subset}.txt`);
  const goldFile = path.join(yearDir, `STS.gs.${subset}.txt`);
  const input = pySplitlines(readTaskFile(inputFile));
  const gold = pySplitlines(readTaskFile(goldFile));
  if (input.length !== gold.length) {
    throw new UserError(`${inputFile} has ${input.length} lines but ${goldFile} has ${gold.length}; they must pair up`);
  }
  const out: StsSubsetData = { name: subset, file: inputFile, s1: [], s2: [], gold: [] };
  for (let i = 0; i < input.length; i++) {
    if (gold[i] === '') continue;
    const fields = input[i]!.split('\t');
    if (fields.length < 2) throw new UserError(`${inputFile}:${i + 1}: expected two TAB-separated sentences`);
    out.s1.push(normalizeSentence(fields[0]!));
    out.s2.push(normalizeSentence(fields[1]!));
    out.gold.push(parseScore(gold[i]!, `${goldFile}:${i + 1}`));
  }
  return enoughPairs(out);
}

/** All subsets of an STS year, in SentEval's order. */
export function readStsYear(dataDir: string, year: StsYear): StsSubsetData[] {
  const dir = stsYearDir(resolveSentevalRoot(dataDir), year);
  return STS_YEAR_SUBSETS[year].map((subset) => readStsSubset(dir, subset));
}

/** Path of an STS-Benchmark split file. */
export function stsbFile(dataDir: string, split: StsbSplit): string {
  return path.join(resolveSentevalRoot(dataDir), 'STS', 'STSBenchmark', `sts-${split}.csv`);
}

/** One STS-Benchmark split, as SentEval's `STSBenchmarkEval.loadFile` reads it (every line is a pair). */
export function readStsBenchmark(dataDir: string, split: StsbSplit): StsSubsetData {
  const file = stsbFile(dataDir, split);
  return parseStsBenchmark(readTaskFile(file), file, split);
}

/** An STS-Benchmark split file's text (`file` names it in errors), read as `readStsBenchmark` reads the file. */
export function parseStsBenchmark(text: string, file: string, split: StsbSplit): StsSubsetData {
  const out: StsSubsetData = { name: split, file, s1: [], s2: [], gold: [] };
  const lines = fileLines(text);
  const need = Math.max(STSB_COLUMNS.score, STSB_COLUMNS.s1, STSB_COLUMNS.s2) + 1;
  lines.forEach((line, i) => {
    const cols = pyStrip(line).split('\t');
    if (cols.length < need) throw new UserError(`${file}:${i + 1}: expected at least ${need} TAB-separated columns, found ${cols.length}`);
    out.s1.push(normalizeSentence(cols[STSB_COLUMNS.s1]!));
    out.s2.push(normalizeSentence(cols[STSB_COLUMNS.s2]!));
    out.gold.push(parseScore(cols[STSB_COLUMNS.score]!, `${file}:${i + 1}`));
  });
  return enoughPairs(out);
}

/** Path of a SICK split file. */
export function sickFile(dataDir: string, split: SickSplit): string {
  return path.join(resolveSentevalRoot(dataDir), 'SICK', SICK_FILES[split]);
}

/** One SICK split for relatedness, as SentEval's `SICKRelatednessEval.loadFile` reads it (header skipped). */
export function readSickRelatedness(dataDir: string, split: SickSplit): StsSubsetData {
  const file = sickFile(dataDir, split);
  const out: StsSubsetData = { name: split, file, s1: [], s2: [], gold: [] };
  const lines = fileLines(readTaskFile(file));
  const need = Math.max(SICK_COLUMNS.s1, SICK_COLUMNS.s2, SICK_COLUMNS.score) + 1;
  for (let i = 1; i < lines.length; i++) {
    const cols = pyStrip(lines[i]!).split('\t');
    if (cols.length < need) throw new UserError(`${file}:${i + 1}: expected at least ${need} TAB-separated columns, found ${cols.length}`);
    out.s1.push(normalizeSentence(cols[SICK_COLUMNS.s1]!));
    out.s2.push(normalizeSentence(cols[SICK_COLUMNS.s2]!));
    out.gold.push(parseScore(cols[SICK_COLUMNS.score]!, `${file}:${i + 1}`));
  }
  return enoughPairs(out);
}
