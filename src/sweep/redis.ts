/**
 * Redis connections for the sweep queue (ioredis, which BullMQ is built on), configured to fail fast: a URL that
 * does not answer is a UserError within `connectTimeoutMs`, and a connection that drops is not retried (the
 * worker exits with a message; its point is taken again by the other workers once its lock expires).
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

/** Checks the URL's form (scheme, host, database number); a bad URL is a UserError. */
export function parseRedisUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UserError(`--queue ${url}: not a URL; expected redis://HOST:PORT`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new UserError(`--queue ${url}: scheme must be redis:// or rediss:// (got ${u.protocol})`);
  if (u.hostname === '') throw new UserError(`--queue ${url}: no host; expected redis://HOST:PORT`);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new UserError(`--queue ${url}: database must be a non-negative integer (got '${u.pathname.slice(1)}')`);
  return u;
}

/**
 * A connection (not yet connected) that never reconnects. `onLost` is called once when an established
 * connection ends without `disconnect()`.
 */
export function createRedis(t: RedisTarget, onLost?: (err: Error) => void): Redis {
  parseRedisUrl(t.url);
  const r = new Redis(t.url, {
    lazyConnect: true,
    connectTimeout: t.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: null, // BullMQ workers require it; with no reconnect, commands still fail when the link is gone
    retryStrategy: () => null,
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

/** Connects and PINGs once; a Redis that does not answer is a UserError within the connect timeout. */
export async function checkRedis(t: RedisTarget): Promise<void> {
  const r = createRedis(t);
  let socketError: NodeJS.ErrnoException | null = null;
  r.on('error', (err: NodeJS.ErrnoException) => (socketError ??= err));
  try {
    await r.connect();
    await r.ping();
  } catch (err) {
    const e = socketError ?? (err as NodeJS.ErrnoException);
    throw new UserError(`${t.url}: Redis does not answer (${e.code ?? e.message}); is redis-server running and reachable?`);
  } finally {
    r.disconnect();
  }
}
