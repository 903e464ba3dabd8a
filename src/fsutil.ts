/** File helpers shared by checkpoints, exports and data: atomic writes so a kill never leaves half a file. */
import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { environmentError, UserError } from './errors.js';
import { faultPoint } from './faultPoints.js';

/**
 * The real cause of a failed `mkdir -p`: Node's recursive mkdir reports ENOENT when an ancestor cannot be created
 * (a read-only file system, no permission), so this finds the deepest existing ancestor and returns why `dir`
 * cannot be made under it: ENOTDIR when it is a file, else the error of `access(W_OK)` (EROFS, EACCES). Returns
 * `err` itself when it is anything else or no better cause is found.
 */
export async function explainMkdirError(err: unknown): Promise<unknown> {
  const e = err as NodeJS.ErrnoException;
  if (e?.code !== 'ENOENT' || e.syscall !== 'mkdir' || e.path === undefined) return err;
  let dir = path.resolve(e.path);
  for (;;) {
    const parent = path.dirname(dir);
    if (parent === dir) return err;
    dir = parent;
    const st = await fs.stat(dir).catch(() => null);
    if (st === null) continue;
    if (!st.isDirectory()) return Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${e.path}'`), { code: 'ENOTDIR', syscall: 'mkdir', path: e.path });
    return fs.access(dir, constants.W_OK).then(() => err, (denied: NodeJS.ErrnoException) =>
      Object.assign(new Error(`${denied.code}: mkdir '${e.path}'`), { code: denied.code, syscall: 'mkdir', path: e.path }));
  }
}

/**
 * What a failure prints and its exit code: a UserError's or an environment fault's one line (mkdir faults explained
 * by explainMkdirError) with 2, or for a bug its stack with 1 and `bug` set.
 */
export async function failureOf(err: unknown): Promise<{ message: string; exitCode: number; bug: boolean }> {
  const user = environmentError(await explainMkdirError(err));
  if (user !== null) return { message: user.message, exitCode: user.exitCode, bug: false };
  return { message: err instanceof Error ? (err.stack ?? err.message) : String(err), exitCode: 1, bug: true };
}

/**
 * `mkdir -p dir`; a fault of the environment (read-only, a file in the way) is a UserError naming `dir`, or
 * `shown` doing `action` where `dir` is a private step towards it (an export's staging folder names its output).
 */
export async function ensureDir(dir: string, shown = dir, action = 'create directory'): Promise<void> {
  try {
    await fs.mkdir(dir, { recursive: true });
  } catch (err) {
    const real = await explainMkdirError(err);
    throw environmentError(real, shown, action) ?? real;
  }
}

/**
 * Writes `file` through a temporary file in the same folder (filled by `write`, fsync'd, then renamed over
 * `file`). On any failure the temporary file is removed, and a fault of the environment (read-only, full disk,
 * `file` is a directory) is a UserError naming `file`.
 */
export async function writeAtomic(file: string, write: (fh: fs.FileHandle) => Promise<void>): Promise<void> {
  await ensureDir(path.dirname(file));
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  try {
    const fh = await fs.open(tmp, 'w');
    try {
      await write(fh);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw environmentError(err, file, 'write') ?? err;
  }
}

/** Writes `data` to `file` atomically (writeAtomic). */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await writeAtomic(file, (fh) => fh.writeFile(data));
}

/** Whether a path exists. */
export async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(() => true, () => false);
}

/** What a refusal to replace an output says to do: pass --force, or choose another `flag` (the option that chose it). */
function forceAdvice(flag: string): string {
  return `pass --force to replace it, or choose another ${flag}`;
}

/** A Node-style fs error (code, syscall, path), for faults found by looking before a call would meet them. */
export function fsFault(code: string, syscall: string, p: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${syscall} '${p}'`), { code, syscall, path: p });
}

/**
 * Checks, before a command does any work, that writing its output file `file` (chosen by `flag`, e.g. `--output`)
 * will succeed, and throws the UserError writeAtomic would throw when it will not: a directory in its place, or
 * a missing parent folder that cannot be created (a file in the way) or an existing one that cannot be written
 * (read-only, no permission). An existing file is refused unless `force`: "<file> exists; pass --force ...".
 */
export async function checkOutputFile(file: string, flag: string, force: boolean): Promise<void> {
  const st = await fs.stat(file).catch(() => null);
  if (st !== null && st.isDirectory()) throw environmentError(fsFault('EISDIR', 'open', file), file, 'write')!;
  if (st !== null && !force) throw new UserError(`${file} exists; ${forceAdvice(flag)}`);
  // The deepest folder on the way that exists: writeAtomic creates the missing ones below it (mkdir -p).
  const parent = path.dirname(file);
  let dir = path.resolve(parent);
  for (;;) {
    const found = await fs.stat(dir).catch(() => null);
    if (found !== null) {
      // As mkdir -p reports it: EEXIST when the parent itself is a file, ENOTDIR when a folder above it is.
      if (!found.isDirectory()) throw environmentError(fsFault(dir === path.resolve(parent) ? 'EEXIST' : 'ENOTDIR', 'mkdir', parent))!;
      break;
    }
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  const direct = dir === path.resolve(parent);
  await fs.access(dir, constants.W_OK).catch((err: unknown) => {
    throw environmentError(err, direct ? file : parent, direct ? 'write' : 'create directory') ?? err;
  });
}

/**
 * Throws a UserError when `dir` holds anything but the names `ignore` accepts (a missing `dir`, or a file in its
 * place, passes: creating it fails later with its own error). The message names `dir`, what it holds, `unlike` (why
 * it may not be reused, if anything more than not being empty) and `flag`, the option that chose it, and says
 * --force replaces it.
 */
export async function refuseNonEmptyDir(dir: string, flag: string, unlike = '', ignore: (name: string) => boolean = () => false): Promise<void> {
  const entries = (await fs.readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
    throw err;
  })).filter((name) => !ignore(name));
  if (entries.length > 0) {
    throw new UserError(`${dir}: not empty (${entries.length} ${entries.length === 1 ? 'entry' : 'entries'})${unlike}; ${forceAdvice(flag)}. Nothing was written`);
  }
}

/**
 * The siblings a `--force` replacement of the folder `output` makes beside it (an export's, `tag` 'export', or an
 * index build's, 'index'): its staging folder (`OUT.tmp-TAG-PID`), where the new content is written, and the
 * previous output moved aside (`OUT.old-TAG-PID`) between the two renames that publish it.
 */
export function replacementSibling(output: string, tag: string, kind: 'staging' | 'aside', pid: number): string {
  return `${output}.${kind === 'staging' ? 'tmp' : 'old'}-${tag}-${pid}`;
}

/** A sibling replacementSibling names, found beside its output. */
export interface ReplacementSibling {
  path: string;
  kind: 'staging' | 'aside';
  /** The process that made it. */
  pid: number;
}

/** The siblings replacements of `output` (see replacementSibling) with `tag` left or are making beside it. */
export async function replacementSiblings(output: string, tag: string): Promise<ReplacementSibling[]> {
  const parent = path.dirname(output);
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pattern = new RegExp(`^${escape(path.basename(output))}\\.(tmp|old)-${escape(tag)}-(\\d+)$`);
  const found: ReplacementSibling[] = [];
  for (const name of await fs.readdir(parent).catch(() => [] as string[])) {
    const m = pattern.exec(name);
    if (m !== null) found.push({ path: path.join(parent, name), kind: m[1] === 'tmp' ? 'staging' : 'aside', pid: Number(m[2]) });
  }
  return found;
}

/**
 * Repairs what killed replacements of `output` (see replacementSibling) left beside it: when `output` is missing and
 * a previous output was moved aside (the kill came between the two renames), it is moved back, so the last complete
 * output is what `output` holds; staging folders and moved-aside outputs of processes no longer running are
 * removed, except a staging folder and a moved-aside output of one process while `output` exists: a replacement
 * that found `output` made by someone else between its renames leaves both and names them in its error, so they
 * are the user's to sort out. Returns the paths restored or removed.
 */
export async function recoverReplacement(output: string, tag: string): Promise<string[]> {
  const found = (await replacementSiblings(output, tag)).filter((s) => !processAlive(s.pid));
  const outputThere = await exists(output);
  const done: string[] = [];
  for (const s of found) {
    if (outputThere && found.some((o) => o.pid === s.pid && o.kind !== s.kind)) continue;
    if (s.kind === 'aside' && !(await exists(output))) await fs.rename(s.path, output);
    else await fs.rm(s.path, { recursive: true, force: true });
    done.push(s.path);
  }
  return done;
}

/** `file` as an absolute path with its symlinks resolved where it exists (so two names of one file compare equal). */
async function canonicalPath(file: string): Promise<string> {
  return fs.realpath(file).catch(() => path.resolve(file));
}

/**
 * Throws unless `output` (named `what`, e.g. "--output x.tsv") is another file than `input`: writing a result over the
 * file it was read from loses the input.
 */
export async function refuseOverwritingInput(output: string, what: string, input: string): Promise<void> {
  if ((await canonicalPath(output)) === (await canonicalPath(input))) throw new UserError(`${what} would overwrite the input ${input}`);
}

/** Whether `inner` is `outer` or lies inside it (both absolute). */
function within(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/**
 * Throws a UserError unless replacing the existing folder `dir` (chosen by `flag`) whole removes only what the user
 * put there for it: it may not be the current folder or one above it (the shell's folder, and all beside it, would
 * go), nor overlap one of `inputs` (be one, lie inside one or hold one; `what` names it, e.g. "the corpus"). Run
 * before anything is read from or written to `dir`; the message names `dir` and why, and says to choose another
 * `flag`.
 */
export async function refuseReplacingDir(dir: string, flag: string, inputs: readonly { path: string; what: string }[]): Promise<void> {
  const d = await canonicalPath(dir);
  const cwd = await canonicalPath(process.cwd());
  const advice = `choose another ${flag}. Nothing was written`;
  if (within(cwd, d)) {
    throw new UserError(`${flag} ${dir} ${d === cwd ? 'is' : 'holds'} the current folder (${cwd}), which replacing it would remove; ${advice}`);
  }
  for (const input of inputs) {
    const i = await canonicalPath(input.path);
    if (within(i, d) || within(d, i)) throw new UserError(`${flag} ${dir} overlaps ${input.what} (${input.path}), which replacing it would remove; ${advice}`);
  }
}

/**
 * The bytes of `file` (its text, with `encoding`). A fault of the environment is a UserError naming `file`: a directory
 * in its place ("cannot read F: it is a directory (EISDIR)"), no permission, a missing file ("cannot open F: ...").
 * The reads of a checkpoint's files go through here (a training config's, config.ts readYamlFile, also names what
 * pointed at it).
 */
export async function readFileNamed(file: string): Promise<Buffer>;
export async function readFileNamed(file: string, encoding: BufferEncoding): Promise<string>;
export async function readFileNamed(file: string, encoding?: BufferEncoding): Promise<Buffer | string> {
  try {
    return encoding === undefined ? await fs.readFile(file) : await fs.readFile(file, encoding);
  } catch (err) {
    throw readFault(err, file);
  }
}

/**
 * The error to throw for a failed read of `file`: the UserError of a fault of the environment, naming `file` (a read
 * through a file handle or stream, EISDIR for a directory in the file's place, carries no path), else `err`.
 */
export function readFault(err: unknown, file: string): unknown {
  return environmentError(err, file, (err as NodeJS.ErrnoException).path === undefined ? 'read' : undefined) ?? err;
}

/** Parses a JSON file; a parse error or a fault of the environment (a directory in its place) is a UserError naming the file. */
export async function readJsonFile(file: string): Promise<unknown> {
  const text = await readFileNamed(file, 'utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new UserError(`${file}: invalid JSON (${(err as Error).message})`);
  }
}

/** True for a JSON object (a mapping: not null, not an array). */
export function isJsonObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** The value at a dotted key path (`model.fingerprint.sha256`) of parsed JSON; undefined where a step is missing or not an object. */
export function valueAtPath(v: unknown, keyPath: string): unknown {
  for (const part of keyPath.split('.')) v = isJsonObject(v) ? v[part] : undefined;
  return v;
}

/** Parses a JSON file that must hold an object. */
export async function readJsonObject(file: string): Promise<Record<string, unknown>> {
  const raw = await readJsonFile(file);
  if (!isJsonObject(raw)) throw new UserError(`${file}: not a JSON object`);
  return raw;
}

/** Whether process `pid` runs on this machine (one we may not signal counts as running). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The process id in a temporary name these helpers and their callers make (`NAME.tmp-PID` or `NAME.tmp-PID-N`), or
 * null when `name` is not one.
 */
export function temporaryOwner(name: string): number | null {
  const m = /\.tmp-(\d+)(?:-\d+)?$/.exec(name);
  return m === null ? null : Number(m[1]);
}

let lockAttempts = 0;

/**
 * For each lock file (a resolved path), how many PidLocks of this process hold it or are linking it into place: a
 * lock naming this pid that none of them does is a dead process's whose pid came back.
 */
const heldLocks = new Map<string, number>();

function countHeld(key: string, by: 1 | -1): void {
  const n = (heldLocks.get(key) ?? 0) + by;
  if (n > 0) heldLocks.set(key, n);
  else heldLocks.delete(key);
}

/** The takeover entries (see PidLock) this process holds or is moving into place, by path: heldLocks for them. */
const heldTakeovers = new Set<string>();

/** How long take waits for another running process's takeover of a stale lock before it refuses, naming that process. */
const TAKEOVER_WAIT_MS = 10_000;
/** How often it looks again meanwhile. */
const TAKEOVER_POLL_MS = 5;

/** The process that made a takeover entry named `name` (`PID-RANDOM`, 16 hex digits), or null when it is none. */
function takeoverOwner(name: string): number | null {
  const m = /^(\d+)-[0-9a-f]{16}$/.exec(name);
  return m === null ? null : Number(m[1]);
}

/** Whether `name` is the lock file `lockName` or one of the temporary files and folders PidLock makes beside it. */
export function isLockEntry(name: string, lockName: string): boolean {
  return name === lockName || name.startsWith(`${lockName}.tmp-`);
}

/**
 * The moments of PidLock.take a test may pause at (PidLockOptions.pause): 'stale-checked', the lock found stale
 * and not yet removed; 'takeover-busy', another running process found taking over the lock, before looking again.
 */
export type PidLockStep = 'stale-checked' | 'takeover-busy';

/** How a PidLock is made: `pause`, for tests of interleavings, is awaited at each PidLockStep. */
export interface PidLockOptions {
  pause?: (step: PidLockStep) => Promise<void>;
}

/**
 * An exclusive lock: a file holding the owner's pid, created whole (written under a temporary name, then
 * hard-linked to its name, which fails if it exists). A lock whose pid is no longer running is stale and taken
 * over; one held by a running process (this one included) is a UserError naming `what` and the pid.
 *
 * Taking over: no file-system call removes a file only if it is still the one read, so removals of a stale lock are
 * serialized by a second lock, the takeover lock `FILE.tmp-takeover`: a directory holding one entry named after its
 * holder, `PID-RANDOM` (64 random bits: a name is never made twice). It is taken by renaming a directory made with
 * that one entry (`FILE.tmp-takeover-PID-RANDOM`) to its name, which fails where the directory there holds an entry,
 * and released by removing the entry, then the directory where it is empty. Holding it, a taker reads the lock again
 * and removes it if it is stale, releases the takeover lock and links its own lock as before. A taker that finds the
 * takeover lock held by a running process looks again shortly; after TAKEOVER_WAIT_MS it is refused, naming that
 * process. An entry whose process no longer runs is removed by the next taker, by its name.
 *
 * Why at most one process holds the lock, whatever the interleaving:
 * - At most one running process holds the takeover lock. Its directory holds at most one entry: a rename puts one
 *   there only where it holds none, and nothing else writes into it. An entry goes only by its own name: removed by
 *   its holder, or by a process that found its maker no longer running; as no name is made twice, that removes no
 *   other entry, and its maker does nothing more.
 * - The lock file appears only where it is missing (a link; an index build's --force swap renames a folder holding
 *   a copy of it only onto a missing or empty folder). It goes only by its holder's release, which reads its own pid
 *   there first, or by the holder of the takeover lock after reading it stale. Between that read and the removal it
 *   is still the file read: it is there, so nothing replaces it; its pid no longer runs (for this process's own pid:
 *   no PidLock of this process holds it or is linking it), so no release of it comes; and no other process holds the
 *   takeover lock. So a removal takes only a stale lock, never a running holder's, and a process whose link
 *   succeeded holds the lock until it releases it.
 * A taker's first read only says that a takeover may be needed. Two takers that read the same stale lock both go
 * through the takeover lock, one after the other: the second reads there the lock the first one removed (gone) or
 * linked (held), and removes nothing.
 *
 * Crashes: a process killed holding the lock leaves it stale; killed holding the takeover lock, it leaves an entry
 * naming a process that no longer runs, which the next taker removes; killed before its directory moved into place,
 * or between removing its entry and the directory, it leaves a directory that stops nobody (an empty takeover
 * directory is replaced or removed by the next taker; a staged one is never used again). A take or removeStale
 * removes what processes that no longer run left beside the lock (clearDebris), so nothing blocks for ever. What
 * names a pid that came back to another running process counts as held until that process exits, as a lock does;
 * pids are this machine's, so processes of other machines sharing a network folder are not told apart.
 */
export class PidLock {
  private held = false;

  constructor(readonly file: string, private readonly what: string, private readonly options: PidLockOptions = {}) {}

  async take(): Promise<void> {
    if (this.held) return;
    const tmp = `${this.file}.tmp-${process.pid}-${++lockAttempts}`;
    const deadline = Date.now() + TAKEOVER_WAIT_MS;
    try {
      for (;;) {
        await fs.writeFile(tmp, `${process.pid}\n`);
        // Counted before the link, so that another PidLock of this process never finds the new lock unclaimed.
        countHeld(this.key, 1);
        try {
          await fs.link(tmp, this.file);
          this.held = true;
          break;
        } catch (err) {
          countHeld(this.key, -1);
          // ENOENT: the lock's holder, clearing the temporaries of dead processes, removed ours; write it again.
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') continue;
          if (code !== 'EEXIST') throw err;
        }
        const found = await this.read();
        if (!found.present) continue;
        if (this.running(found.owner)) throw this.refusal(found.owner!);
        const busy = await this.removeIfStale();
        if (busy !== null) {
          if (Date.now() > deadline) throw this.refusal(busy);
          await this.options.pause?.('takeover-busy');
          await sleep(TAKEOVER_POLL_MS);
        }
      }
    } finally {
      await fs.rm(tmp, { force: true });
    }
    await this.clearDebris().catch(() => undefined);
  }

  /** The pid of the running process that holds the lock (this one included), or null when there is none or it is stale. */
  async holder(): Promise<number | null> {
    const { owner } = await this.read();
    return this.running(owner) ? owner : null;
  }

  /**
   * Removes the lock when it is stale (its owner no longer runs), as take does before it tries again, unless another
   * running process is taking it over meanwhile, and what dead processes left beside it (clearDebris). A lock that
   * cannot be removed (a folder this process may only read) is left: it stops nobody.
   */
  async removeStale(): Promise<void> {
    try {
      const found = await this.read();
      if (found.present && !this.running(found.owner)) await this.removeIfStale();
      await this.clearDebris();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === undefined) throw err;
    }
  }

  /** Removes the lock if this process holds it. */
  async release(): Promise<void> {
    if (!this.held) return;
    this.held = false;
    try {
      if ((await this.read()).owner === process.pid) await fs.rm(this.file, { force: true });
    } finally {
      countHeld(this.key, -1);
    }
  }

  private get key(): string {
    return path.resolve(this.file);
  }

  private get takeoverDir(): string {
    return `${this.file}.tmp-takeover`;
  }

  private refusal(owner: number): UserError {
    return new UserError(`${path.dirname(this.file)}: in use by another ${this.what} (pid ${owner}, lock ${this.file}); ` +
      'wait for it to finish or stop it');
  }

  /** Whether a lock naming `owner` is held: by a running process, or by this one where one of its PidLocks took it. */
  private running(owner: number | null): boolean {
    return owner === process.pid ? heldLocks.has(this.key) : owner !== null && processAlive(owner);
  }

  /** Whether the lock file is there, and the pid it names (null where it names none). */
  private async read(): Promise<{ present: boolean; owner: number | null }> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return { present: code !== 'ENOENT' && code !== 'ENOTDIR', owner: null };
    }
    const pid = Number.parseInt(text, 10);
    return { present: true, owner: Number.isInteger(pid) && pid > 0 ? pid : null };
  }

  /**
   * Holding the takeover lock, removes the lock file if it is stale. Returns the pid of the running process that
   * holds the takeover lock, where one does (nothing was done), else null.
   */
  private async removeIfStale(): Promise<number | null> {
    const entry = await this.takeTakeover();
    if (typeof entry === 'number') return entry;
    try {
      const found = await this.read();
      if (found.present && !this.running(found.owner)) {
        faultPoint('lock:takeover-held');
        await this.options.pause?.('stale-checked');
        await fs.rm(this.file, { force: true });
        faultPoint('lock:stale-removed');
      }
    } finally {
      await this.releaseTakeover(entry);
    }
    return null;
  }

  /**
   * Takes the takeover lock: renames a new directory holding one new entry to its name. Returns the entry's path
   * (held until releaseTakeover), or the pid of the running process whose entry is there.
   */
  private async takeTakeover(): Promise<string | number> {
    const name = `${process.pid}-${randomBytes(8).toString('hex')}`;
    const staged = `${this.takeoverDir}-${name}`;
    const entry = path.join(path.resolve(this.takeoverDir), name);
    heldTakeovers.add(entry);
    let moved = false;
    try {
      await fs.mkdir(staged);
      await fs.writeFile(path.join(staged, name), '');
      faultPoint('lock:takeover-staged');
      for (;;) {
        try {
          await fs.rename(staged, this.takeoverDir);
          moved = true;
          return entry;
        } catch (err) {
          // Where the directory is there: it holds an entry (ENOTEMPTY, EEXIST), or it may not be replaced at all
          // (EPERM, EACCES: Windows).
          const code = (err as NodeJS.ErrnoException).code;
          const there = code === 'ENOTEMPTY' || code === 'EEXIST' || ((code === 'EPERM' || code === 'EACCES') && (await exists(this.takeoverDir)));
          if (!there) throw err;
        }
        const holder = await this.clearTakeover();
        if (holder !== null) return holder;
      }
    } finally {
      if (!moved) {
        heldTakeovers.delete(entry);
        await fs.rm(staged, { recursive: true, force: true });
      }
    }
  }

  /** Releases the takeover lock held by `entry`: removes the entry, then the directory where nobody took it meanwhile. */
  private async releaseTakeover(entry: string): Promise<void> {
    try {
      await fs.rm(entry, { force: true });
    } finally {
      heldTakeovers.delete(entry);
    }
    await fs.rmdir(path.dirname(entry)).catch(ignoreCodes('ENOENT', 'ENOTEMPTY', 'EEXIST'));
  }

  /**
   * Removes the takeover lock's entries whose process no longer runs (each by its own name, so no other entry) and
   * then its directory where it is empty. Returns the pid of the running process whose entry is there, else null.
   */
  private async clearTakeover(): Promise<number | null> {
    const dir = this.takeoverDir;
    const names = await fs.readdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [] as string[];
      throw err;
    });
    for (const name of names) {
      const pid = takeoverOwner(name);
      if (pid !== null && (pid === process.pid ? heldTakeovers.has(path.join(path.resolve(dir), name)) : processAlive(pid))) return pid;
      await fs.rm(path.join(dir, name), { recursive: true, force: true });
    }
    await fs.rmdir(dir).catch(ignoreCodes('ENOENT', 'ENOTEMPTY', 'EEXIST', 'ENOTDIR'));
    return null;
  }

  /**
   * Removes what processes that no longer run left beside the lock: the takeover lock's entries (clearTakeover),
   * staged takeover directories and temporary files. Each of these is used by its maker alone, so removing a dead
   * maker's is safe at any time (a temporary file of a process that took its pid meanwhile is written again, see take).
   */
  private async clearDebris(): Promise<void> {
    await this.clearTakeover();
    const parent = path.dirname(this.file);
    const temporary = `${path.basename(this.file)}.tmp-`;
    const staged = `${temporary}takeover-`;
    for (const name of await fs.readdir(parent)) {
      if (!name.startsWith(temporary)) continue;
      const pid = name.startsWith(staged) ? takeoverOwner(name.slice(staged.length)) : temporaryOwner(name);
      if (pid !== null && pid !== process.pid && !processAlive(pid)) await fs.rm(path.join(parent, name), { recursive: true, force: true });
    }
  }
}

/** A rejection handler that ignores fs errors of `codes` and throws the rest. */
function ignoreCodes(...codes: string[]): (err: NodeJS.ErrnoException) => void {
  return (err) => {
    if (!codes.includes(err.code ?? '')) throw err;
  };
}
