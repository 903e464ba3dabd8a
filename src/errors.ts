/**
 * An error caused by the user's input (a missing file, a bad config key, a corrupt checkpoint). The CLI prints
 * its one-line message without a stack trace and exits with code 2; anything else is a bug and exits 1.
 */
export class UserError extends Error {
  override readonly name = 'UserError';
  readonly exitCode = 2;
}

/** Throws a UserError unless `cond` holds. */
export function check(cond: unknown, msg: string | (() => string)): asserts cond {
  if (!cond) throw new UserError(typeof msg === 'string' ? msg : msg());
}
