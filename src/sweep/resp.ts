/**
 * A small Redis client (RESP2 over one TCP socket) that implements BullMQ's `IRedisClient` interface.
 *
 * Why it exists: bullmq 6 made every Redis driver an optional peer dependency and this project installs none
 * (no ioredis, no node-redis); BullMQ accepts any object implementing `IRedisClient`. This is that object, limited
 * to what BullMQ calls: plain commands, Lua scripts (EVALSHA with an EVAL fallback), MULTI/pipelines, blocking
 * BZPOPMIN on a dedicated duplicate, SCAN streams.
 *
 * Failure policy (sweeps must fail fast, not hang): connecting gives up after `connectTimeoutMs`; there is NO
 * reconnect. When the socket closes, every pending command is rejected, status becomes 'end', and `onLost` is
 * called (workers use it to exit with a clear message).
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { Readable } from 'node:stream';
import { UserError } from '../errors.js';

/** A command argument: Buffers pass through unchanged (BullMQ packs script arguments with msgpack). */
export type RespArg = string | number | Buffer;
/** A decoded reply: bulk and simple strings as UTF-8 strings, integers as numbers, nil as null. */
export type RespReply = string | number | null | Error | RespReply[];

export interface RespClientOptions {
  host: string;
  port: number;
  /** Database index (SELECT) after connecting. */
  db?: number;
  password?: string | null;
  /** Give up connecting after this long. */
  connectTimeoutMs?: number;
  /** Called once if an established connection closes without disconnect()/quit(). */
  onLost?: (err: Error) => void;
}

/** Default connect timeout: long enough for a loaded LAN, short enough that a wrong URL fails in seconds. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 3000;

/** Parses `redis://[user:password@]host[:port][/db]` (the only scheme). A bad URL is a UserError. */
export function parseRedisUrl(url: string): RespClientOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UserError(`--queue ${url}: not a URL; expected redis://HOST:PORT`);
  }
  if (u.protocol !== 'redis:') throw new UserError(`--queue ${url}: scheme must be redis:// (got ${u.protocol})`);
  if (u.hostname === '') throw new UserError(`--queue ${url}: no host; expected redis://HOST:PORT`);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new UserError(`--queue ${url}: database must be a non-negative integer (got '${u.pathname.slice(1)}')`);
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: u.port === '' ? 6379 : Number(u.port),
    db,
    password: u.password === '' ? null : decodeURIComponent(u.password),
  };
}

function encodeCommand(args: readonly RespArg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    // ioredis conventions: Buffers and byte arrays verbatim, null/undefined as the empty string.
    const v = a as unknown;
    const b = Buffer.isBuffer(v) ? v : v instanceof Uint8Array ? Buffer.from(v.buffer, v.byteOffset, v.byteLength)
      : Buffer.from(v === undefined || v === null ? '' : String(v));
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** Incremental RESP2 decoder: feed chunks, take complete replies. */
class ReplyParser {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): RespReply[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: RespReply[] = [];
    let pos = 0;
    for (;;) {
      const r = this.parse(pos);
      if (r === null) break;
      out.push(r.value);
      pos = r.next;
    }
    this.buf = this.buf.subarray(pos);
    return out;
  }

  private parse(pos: number): { value: RespReply; next: number } | null {
    if (pos >= this.buf.length) return null;
    const eol = this.buf.indexOf('\r\n', pos);
    if (eol < 0) return null;
    const type = String.fromCharCode(this.buf[pos]!);
    const line = this.buf.toString('utf8', pos + 1, eol);
    const next = eol + 2;
    switch (type) {
      case '+':
        return { value: line, next };
      case '-':
        return { value: new Error(line), next };
      case ':':
        return { value: Number(line), next };
      case '$': {
        const len = Number(line);
        if (len < 0) return { value: null, next };
        if (this.buf.length < next + len + 2) return null;
        return { value: this.buf.toString('utf8', next, next + len), next: next + len + 2 };
      }
      case '*': {
        const n = Number(line);
        if (n < 0) return { value: null, next };
        const items: RespReply[] = [];
        let p = next;
        for (let i = 0; i < n; i++) {
          const r = this.parse(p);
          if (r === null) return null;
          items.push(r.value);
          p = r.next;
        }
        return { value: items, next: p };
      }
      default:
        throw new Error(`RESP: unexpected reply type '${type}'`);
    }
  }
}

interface Script {
  numberOfKeys: number;
  lua: string;
  sha: string;
}

/** Flattens `runCommand` arguments the way ioredis does (one array level). */
function flat(args: readonly unknown[]): RespArg[] {
  return args.flatMap((a) => (Array.isArray(a) ? a : [a])) as RespArg[];
}

/** Queues commands for MULTI/EXEC or a plain pipeline; `exec` gives ioredis' `[err, result][]`. */
class RespTransaction {
  private readonly cmds: RespArg[][] = [];

  constructor(private readonly client: RespClient, private readonly atomic: boolean) {}

  private add(...args: RespArg[]): this {
    this.cmds.push(args);
    return this;
  }

  hgetall(key: string): this { return this.add('HGETALL', key); }
  hset(key: string, data: Record<string, string | number>): this { return this.add('HSET', key, ...Object.entries(data).flat()); }
  hscan(key: string, cursor: string | number, o?: { COUNT?: number }): this {
    return this.add('HSCAN', key, cursor, ...(o?.COUNT !== undefined ? ['COUNT', o.COUNT] : []));
  }
  smembers(key: string): this { return this.add('SMEMBERS', key); }
  sscan(key: string, cursor: string | number, o?: { COUNT?: number }): this {
    return this.add('SSCAN', key, cursor, ...(o?.COUNT !== undefined ? ['COUNT', o.COUNT] : []));
  }
  zrange(key: string, start: number, end: number): this { return this.add('ZRANGE', key, start, end); }
  lrange(key: string, start: number, end: number): this { return this.add('LRANGE', key, start, end); }
  llen(key: string): this { return this.add('LLEN', key); }
  del(...keys: string[]): this { return this.add('DEL', ...keys); }
  runCommand(name: string, args: unknown[]): this {
    // Inside a transaction a NOSCRIPT cannot be retried, so scripts go as EVAL (full source).
    const s = this.client.script(name);
    return this.add('EVAL', s.lua, s.numberOfKeys, ...flat(args));
  }

  async exec(): Promise<[Error | null, unknown][] | null> {
    if (this.cmds.length === 0) return [];
    if (!this.atomic) {
      const settled = await Promise.allSettled(this.cmds.map((c) => this.client.call(...c)));
      return settled.map((s) => (s.status === 'fulfilled' ? [null, s.value] : [s.reason as Error, null]));
    }
    const sent = [this.client.call('MULTI'), ...this.cmds.map((c) => this.client.call(...c)), this.client.call('EXEC')];
    const settled = await Promise.allSettled(sent);
    const queueErr = settled.slice(1, -1).find((s) => s.status === 'rejected');
    const last = settled[settled.length - 1]!;
    if (last.status === 'rejected') throw (queueErr?.status === 'rejected' ? queueErr.reason : last.reason) as Error;
    const results = last.value as RespReply[] | null;
    if (results === null) return null;
    return results.map((r) => (r instanceof Error ? [r, null] : [null, r]));
  }
}

/** One Redis connection implementing the parts of BullMQ's IRedisClient that BullMQ uses. */
export class RespClient extends EventEmitter {
  /** 'wait' (not yet connected), 'connecting', 'ready', 'end'. */
  status = 'wait';
  readonly isCluster = false;
  /** BullMQ reads `keyPrefix` and `maxRetriesPerRequest` (must be null for blocking connections). */
  readonly options: RespClientOptions & { maxRetriesPerRequest: null; keyPrefix: undefined };
  private socket: net.Socket | null = null;
  private readonly pending: { resolve: (v: RespReply) => void; reject: (e: Error) => void }[] = [];
  private readonly parser = new ReplyParser();
  private readonly scripts = new Map<string, Script>();
  private connecting: Promise<void> | null = null;
  private closing = false;

  constructor(opts: RespClientOptions) {
    super();
    this.options = { ...opts, maxRetriesPerRequest: null, keyPrefix: undefined };
  }

  private get where(): string {
    return `redis://${this.options.host}:${this.options.port}`;
  }

  /** Connects (once); rejects with a UserError naming the address when nothing answers in time. */
  connect(): Promise<void> {
    if (this.status === 'ready') return Promise.resolve();
    if (this.status === 'end') return Promise.reject(new Error('Connection is closed.'));
    this.connecting ??= this.open();
    return this.connecting;
  }

  private open(): Promise<void> {
    this.status = 'connecting';
    const timeoutMs = this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    return new Promise<void>((resolve, reject) => {
      const sock = net.connect({ host: this.options.host, port: this.options.port });
      sock.setNoDelay(true);
      const fail = (why: string) => {
        clearTimeout(timer);
        sock.destroy();
        this.status = 'end';
        const err = new UserError(`${this.where}: Redis does not answer (${why}); start redis-server there or fix --queue`);
        if (this.listenerCount('error') > 0) this.emit('error', err);
        this.emit('end');
        reject(err);
      };
      const timer = setTimeout(() => fail(`no connection within ${timeoutMs} ms`), timeoutMs);
      sock.once('error', (e: NodeJS.ErrnoException) => fail(e.code ?? e.message));
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        this.socket = sock;
        sock.on('data', (chunk: Buffer) => this.onData(chunk));
        sock.on('error', (e) => this.lost(e));
        sock.on('close', () => this.lost(new Error(`${this.where}: connection closed`)));
        const hello = async () => {
          if (this.options.password) await this.send(['AUTH', this.options.password]);
          if (this.options.db) await this.send(['SELECT', this.options.db]);
          await this.send(['PING']);
        };
        hello().then(() => {
          this.status = 'ready';
          this.emit('connect');
          this.emit('ready');
          resolve();
        }, (e: Error) => fail(e.message));
      });
    });
  }

  private onData(chunk: Buffer): void {
    for (const reply of this.parser.push(chunk)) {
      const p = this.pending.shift();
      if (p === undefined) continue;
      if (reply instanceof Error) p.reject(reply);
      else p.resolve(reply);
    }
  }

  private lost(err: Error): void {
    if (this.status === 'end') return;
    this.status = 'end';
    for (const p of this.pending.splice(0)) p.reject(new Error('Connection is closed.'));
    if (!this.closing) {
      if (this.listenerCount('error') > 0) this.emit('error', err);
      this.options.onLost?.(err);
    }
    this.emit('close');
    this.emit('end');
  }

  private send(args: readonly RespArg[]): Promise<RespReply> {
    return new Promise<RespReply>((resolve, reject) => {
      if (this.socket === null || this.status === 'end') {
        reject(new Error('Connection is closed.'));
        return;
      }
      this.pending.push({ resolve, reject });
      this.socket.write(encodeCommand(args));
    });
  }

  /** Sends one command; an error reply rejects. */
  async call(...args: RespArg[]): Promise<RespReply> {
    if (this.status !== 'ready') await this.connect();
    return this.send(args);
  }

  disconnect(): void {
    this.closing = true;
    if (this.socket === null) {
      this.status = 'end';
      this.emit('end');
      return;
    }
    this.socket.destroy();
    this.lost(new Error('disconnected'));
  }

  async quit(): Promise<string> {
    this.closing = true;
    if (this.status === 'ready') await this.send(['QUIT']).catch(() => 'OK');
    this.disconnect();
    return 'OK';
  }

  duplicate(overrides: Partial<RespClientOptions> = {}): RespClient {
    return new RespClient({ ...this.options, ...overrides });
  }

  // --- Lua scripts ---------------------------------------------------------------------------------------------
  defineCommand(name: string, def: { numberOfKeys: number; lua: string }): void {
    this.scripts.set(name, { ...def, sha: createHash('sha1').update(def.lua).digest('hex') });
  }

  /** The script registered as `name`. */
  script(name: string): Script {
    const s = this.scripts.get(name);
    if (s === undefined) throw new Error(`RespClient: no script defined as '${name}'`);
    return s;
  }

  async runCommand(name: string, args: unknown[]): Promise<RespReply> {
    const s = this.script(name);
    const rest = flat(args);
    try {
      return await this.call('EVALSHA', s.sha, s.numberOfKeys, ...rest);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return this.call('EVAL', s.lua, s.numberOfKeys, ...rest);
    }
  }

  multi(): RespTransaction {
    return new RespTransaction(this, true);
  }

  pipeline(): RespTransaction {
    return new RespTransaction(this, false);
  }

  // --- commands ------------------------------------------------------------------------------------------------
  async hgetall(key: string): Promise<Record<string, string>> {
    const r = (await this.call('HGETALL', key)) as string[];
    const out: Record<string, string> = {};
    for (let i = 0; i + 1 < r.length; i += 2) out[r[i]!] = r[i + 1]!;
    return out;
  }
  hget(key: string, field: string) { return this.call('HGET', key, field) as Promise<string | null>; }
  hmget(key: string, ...fields: string[]) { return this.call('HMGET', key, ...fields) as Promise<(string | null)[]>; }
  hset(key: string, data: Record<string, string | number>) { return this.call('HSET', key, ...Object.entries(data).flat()) as Promise<number>; }
  hdel(key: string, ...fields: string[]) { return this.call('HDEL', key, ...fields) as Promise<number>; }
  hexists(key: string, field: string) { return this.call('HEXISTS', key, field) as Promise<number>; }
  get(key: string) { return this.call('GET', key) as Promise<string | null>; }
  set(key: string, value: string | number, o?: { PX?: number; EX?: number }) {
    const extra: RespArg[] = o?.PX !== undefined ? ['PX', o.PX] : o?.EX !== undefined ? ['EX', o.EX] : [];
    return this.call('SET', key, value, ...extra) as Promise<string | null>;
  }
  del(...keys: string[]) { return this.call('DEL', ...keys) as Promise<number>; }
  zrange(key: string, start: number, end: number, o?: { WITHSCORES?: boolean }) {
    return this.call('ZRANGE', key, start, end, ...(o?.WITHSCORES === true ? ['WITHSCORES'] : [])) as Promise<string[]>;
  }
  zrevrange(key: string, start: number, end: number, o?: { WITHSCORES?: boolean }) {
    return this.call('ZREVRANGE', key, start, end, ...(o?.WITHSCORES === true ? ['WITHSCORES'] : [])) as Promise<string[]>;
  }
  zcard(key: string) { return this.call('ZCARD', key) as Promise<number>; }
  zscore(key: string, member: string) { return this.call('ZSCORE', key, member) as Promise<string | null>; }
  lrange(key: string, start: number, end: number) { return this.call('LRANGE', key, start, end) as Promise<string[]>; }
  llen(key: string) { return this.call('LLEN', key) as Promise<number>; }
  ltrim(key: string, start: number, end: number) { return this.call('LTRIM', key, start, end) as Promise<string>; }
  lpos(key: string, value: string) { return this.call('LPOS', key, value) as Promise<number | null>; }
  smembers(key: string) { return this.call('SMEMBERS', key) as Promise<string[]>; }
  xadd(key: string, id: string, fields: Record<string, string | number>, o?: { MAXLEN?: number; approximate?: boolean }) {
    const trim: RespArg[] = o?.MAXLEN !== undefined ? ['MAXLEN', ...(o.approximate !== false ? ['~'] : []), o.MAXLEN] : [];
    return this.call('XADD', key, ...trim, id, ...Object.entries(fields).flat()) as Promise<string>;
  }
  xread(streams: { key: string; id: string }[], o?: { BLOCK?: number; COUNT?: number }) {
    return this.call('XREAD', ...(o?.BLOCK !== undefined ? ['BLOCK', o.BLOCK] : []), ...(o?.COUNT !== undefined ? ['COUNT', o.COUNT] : []),
      'STREAMS', ...streams.map((s) => s.key), ...streams.map((s) => s.id));
  }
  xtrim(key: string, strategy: 'MAXLEN', threshold: number, o?: { approximate?: boolean }) {
    return this.call('XTRIM', key, strategy, ...(o?.approximate !== false ? ['~'] : []), threshold) as Promise<number>;
  }
  bzpopmin(key: string, timeout: number) {
    return this.call('BZPOPMIN', key, timeout) as Promise<[string, string, string] | null>;
  }
  info() { return this.call('INFO') as Promise<string>; }
  client(...args: RespArg[]) { return this.call('CLIENT', ...args); }
  clientSetName(name: string) { return this.call('CLIENT', 'SETNAME', name); }
  clientList() { return this.call('CLIENT', 'LIST') as Promise<string>; }
  clientInfo() { return this.call('CLIENT', 'INFO') as Promise<string>; }
  scan(cursor: string | number, o: { MATCH?: string; COUNT?: number } = {}) {
    return this.call('SCAN', cursor, ...(o.MATCH !== undefined ? ['MATCH', o.MATCH] : []), ...(o.COUNT !== undefined ? ['COUNT', o.COUNT] : [])) as
      Promise<[string, string[]]>;
  }
  scanStream(o: { match: string; count?: number }): Readable {
    let cursor = '0';
    let started = false;
    const stream: Readable = new Readable({
      objectMode: true,
      read: () => {
        if (started && cursor === '0') {
          stream.push(null);
          return;
        }
        started = true;
        this.scan(cursor, { MATCH: o.match, ...(o.count !== undefined ? { COUNT: o.count } : {}) }).then(([next, keys]) => {
          cursor = next;
          stream.push(keys);
        }, (e: Error) => stream.destroy(e));
      },
    });
    return stream;
  }
}
