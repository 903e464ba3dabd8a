/**
 * An error caused by the user's input (a missing file, a bad config key, a corrupt checkpoint) or environment (a
 * read-only or full disk, an output path that is a file). The CLI prints its one-line message without a stack
 * trace and exits with code 2; anything else is a bug and exits 1.
 */
export class UserError extends Error {
  override readonly name = 'UserError';
  readonly exitCode = 2;
}

/** Throws a UserError unless `cond` holds. */
export function check(cond: unknown, msg: string | (() => string)): asserts cond {
  if (!cond) throw new UserError(typeof msg === 'string' ? msg : msg());
}

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

/** The first line of what `err` says (an Error's message, else the value as text), for one-line reports. */
export function firstLineOf(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}

/**
 * A value of a config file, a `--set` or a config.json as an error message shows it: JSON, except the non-finite
 * numbers JSON has no words for (which JSON.stringify turns into null), written as YAML writes them: .nan, .inf, -.inf.
 */
export function shownValue(v: unknown): string {
  if (typeof v === 'number' && !Number.isFinite(v)) return Number.isNaN(v) ? '.nan' : v > 0 ? '.inf' : '-.inf';
  return JSON.stringify(v) ?? String(v);
}

/** An argument of a JavaScript call as a message shows it: a string quoted (so "8" is not read as 8), else as String(). */
export function shownArgument(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/** A value's kind as a message names it ("must be a string, got number"): null, array, else its typeof. */
export function kindOf(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/**
 * Throws a UserError naming `name` unless `v` is an integer >= `min` (1: "a positive integer"); `note` follows the
 * requirement in the message (what 0 means, say). The one check of every count, size and index argument.
 */
export function checkInteger(name: string, v: unknown, min = 1, note = ''): asserts v is number {
  if (!Number.isInteger(v) || (v as number) < min) {
    throw new UserError(`${name} must be ${min === 1 ? 'a positive integer' : `an integer >= ${min}`}${note}, got ${shownArgument(v)}`);
  }
}

/** The option nearest `word` by edit distance (case-insensitive), or undefined when none is near enough. */
export function closest(word: string, options: readonly string[]): string | undefined {
  const best = options.map((o) => ({ o, d: levenshtein(word, o) })).sort((x, y) => x.d - y.d)[0];
  return best !== undefined && best.d <= Math.max(2, Math.floor(word.length / 3)) ? best.o : undefined;
}

/** ` (did you mean 'x'?)`, or '' when no option is near `word`. */
export function didYouMean(word: string, options: readonly string[]): string {
  const best = closest(word, options);
  return best !== undefined ? ` (did you mean '${best}'?)` : '';
}

/** Node's error codes of file-system faults that come from the environment, not from a bug, in words. */
const FS_CAUSES: Readonly<Record<string, string>> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large',
  ENOTDIR: 'a component of the path is a file, not a directory',
  EEXIST: 'a file is in the way',
  EISDIR: 'it is a directory',
  ENOENT: 'no such file or directory',
};

/** What the system call of a Node fs error was doing, as a verb for "cannot VERB PATH". */
function fsAction(syscall: string | undefined): string {
  if (syscall?.startsWith('spawn') === true) return 'run';
  switch (syscall) {
    case 'mkdir': return 'create directory';
    case 'open': return 'open';
    case 'read': case 'scandir': case 'opendir': case 'stat': case 'lstat': case 'access': case 'readlink': return 'read';
    case 'unlink': case 'rmdir': case 'rm': return 'remove';
    default: return 'write';
  }
}

/**
 * The one-line UserError for a file-system fault of the environment (read-only, full disk, permissions, a path of
 * the wrong kind), e.g. "cannot write checkpoints/x: read-only file system (EROFS)"; null for any other error.
 * `file` and `action` name what was being done where the error itself says less (a write through a file handle
 * carries no path; an atomic write fails on its temporary file but the user asked for `file`).
 */
export function environmentError(err: unknown, file?: string, action?: string): UserError | null {
  if (err instanceof UserError) return err;
  if (!(err instanceof Error)) return null;
  const e = err as NodeJS.ErrnoException & { dest?: string };
  const cause = e.code !== undefined ? FS_CAUSES[e.code] : undefined;
  if (cause === undefined) return null;
  const where = file ?? e.path;
  // Without a path, only a write or read through a file handle is a file-system fault (not, say, kill's EPERM).
  if (where === undefined && !['write', 'read', 'fsync', 'fdatasync', 'ftruncate', 'close'].includes(e.syscall ?? '')) return null;
  const what = file === undefined && e.syscall === 'rename' && e.dest !== undefined
    ? `rename ${e.path} to ${e.dest}`
    : `${action ?? fsAction(e.syscall)}${where !== undefined ? ` ${where}` : ''}`;
  return new UserError(`cannot ${what}: ${cause} (${e.code})`, { cause: err });
}
