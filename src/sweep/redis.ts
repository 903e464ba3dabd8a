/**
 * Redis connections for the sweep queue (ioredis, which BullMQ is built on), configured to fail fast: a URL that
 * does not answer (refused, unreachable, or connected but silent) is a UserError within `connectTimeoutMs`, and a
 * connection that drops is not retried (the worker exits with a message; its point is taken again by the other
 * workers once its lock expires).
 *
 * A URL may carry a password (`redis://:PASSWORD@HOST`, `redis://USER:PASSWORD@HOST`): everything printed or
 * thrown goes through `maskRedisUrl` / `withMaskedErrors`, so the password never reaches a log or a terminal.
 */
import { Redis } from 'ioredis';
import { UserError } from '../errors.js';

/** Long enough for a loaded LAN, short enough that a wrong URL fails in seconds. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 3000;

export interface RedisTarget {
  /** redis://[user:password@]HOST[:PORT][/DB] */
  url: string;
  connectTimeoutMs?: number;
}

/** What replaces the password in printed URLs and messages. */
export const PASSWORD_MASK = '***';

/** `[prefix up to the password, password]` of `scheme://[user]:password@...`, or null when the URL has none. */
function passwordPart(url: string): [string, string] | null {
  const m = /^([^:/?#]+:\/\/[^:@/?#]*:)([^@]*)@/.exec(url);
  return m === null || m[2] === '' ? null : [m[1]!, m[2]!];
}

/** The URL with its password (if any) replaced by PASSWORD_MASK: the form every print and message uses. */
export function maskRedisUrl(url: string): string {
  const p = passwordPart(url);
  return p === null ? url : `${p[0]}${PASSWORD_MASK}@${url.slice(p[0].length + p[1].length + 1)}`;
}

/** `text` with the password of `url` (as written and percent-decoded) replaced by PASSWORD_MASK wherever it occurs. */
export function maskSecrets(text: string, url: string): string {
  const p = passwordPart(url);
  if (p === null) return text;
  let decoded = p[1];
  try {
    decoded = decodeURIComponent(p[1]);
  } catch {
    // not percent-encoded: the written form is the password
  }
  return [p[1], decoded].reduce((t, secret) => t.split(secret).join(PASSWORD_MASK), text);
}

/**
 * Runs `fn`; an error it throws (ours, ioredis's or BullMQ's) is rethrown with the password of `url` masked in
 * its message and stack.
 */
export async function withMaskedErrors<T>(url: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof UserError) throw new UserError(maskSecrets(err.message, url));
    if (err instanceof Error) {
      err.message = maskSecrets(err.message, url);
      if (err.stack !== undefined) err.stack = maskSecrets(err.stack, url);
    }
    throw err;
  }
}

/** Checks the URL's form (scheme, host, database number); a bad URL is a UserError. */
export function parseRedisUrl(url: string): URL {
  const shown = maskRedisUrl(url);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UserError(`--queue ${shown}: not a URL; expected redis://HOST:PORT`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new UserError(`--queue ${shown}: scheme must be redis:// or rediss:// (got ${u.protocol})`);
  if (u.hostname === '') throw new UserError(`--queue ${shown}: no host; expected redis://HOST:PORT`);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new UserError(`--queue ${shown}: database must be a non-negative integer (got '${u.pathname.slice(1)}')`);
  return u;
}

/**
 * A connection (not yet connected) that never reconnects, and whose `disconnect()` drops the socket at once.
 * `onLost` is called once when an established connection ends without `disconnect()`.
 */
export function createRedis(t: RedisTarget, onLost?: (err: Error) => void): Redis {
  parseRedisUrl(t.url);
  const r = new Redis(t.url, {
    lazyConnect: true,
    connectTimeout: t.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: null, // BullMQ workers require it; with no reconnect, commands still fail when the link is gone
    retryStrategy: () => null,
    // disconnect() half-closes the socket and destroys it after this many ms: at once, so a peer that never
    // answers cannot hold this process open.
    disconnectTimeout: 0,
    enableReadyCheck: true,
  });
  let closing = false;
  const disconnect = r.disconnect.bind(r);
  r.disconnect = (reconnect?: boolean) => {
    closing = true;
    disconnect(reconnect);
  };
  let lastError: Error | null = null;
  r.on('error', (err: Error) => (lastError = err));
  r.on('end', () => {
    if (!closing) onLost?.(lastError ?? new Error('connection closed'));
  });
  return r;
}

/**
 * Connects and PINGs once; a Redis that refuses, is unreachable, or accepts the connection and never answers is a
 * UserError within the connect timeout, and one that rejects the password says so.
 */
export async function checkRedis(t: RedisTarget): Promise<void> {
  const timeoutMs = t.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const r = createRedis(t);
  let socketError: NodeJS.ErrnoException | null = null;
  r.on('error', (err: NodeJS.ErrnoException) => (socketError ??= err));
  let timer: NodeJS.Timeout | undefined;
  const silent = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no reply within ${timeoutMs / 1000} s`)), timeoutMs);
  });
  const answered = (async () => {
    await r.connect();
    await r.ping();
  })();
  answered.catch(() => undefined); // when `silent` wins, disconnecting rejects it
  try {
    await Promise.race([answered, silent]);
  } catch (err) {
    const e = socketError ?? (err as NodeJS.ErrnoException);
    const why = maskSecrets(e.code ?? e.message, t.url);
    if (/NOAUTH|WRONGPASS|\bAUTH\b/.test(e.message)) throw new UserError(`${maskRedisUrl(t.url)}: Redis refused the credentials (${why}); check the password in the URL`);
    throw new UserError(`${maskRedisUrl(t.url)}: Redis does not answer (${why}); is redis-server running and reachable?`);
  } finally {
    clearTimeout(timer);
    r.disconnect();
  }
}
