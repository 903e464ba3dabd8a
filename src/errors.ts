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
  const what = file === undefined && e.syscall === 'rename' && e.dest !== undefined
    ? `rename ${e.path} to ${e.dest}`
    : `${action ?? fsAction(e.syscall)}${where !== undefined ? ` ${where}` : ''}`;
  return new UserError(`cannot ${what}: ${cause} (${e.code})`, { cause: err });
}
