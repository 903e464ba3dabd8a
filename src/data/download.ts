/**
 * Downloads of the public corpora for users with internet: resumable (HTTP Range into `<target>.part`),
 * checksummed (sha256 verified when known, otherwise computed, printed and recorded in `<target>.sha256` and
 * verified on later runs), with a progress line. Offline or unreachable: a UserError naming the URL and the target.
 * The resumable fetch itself (fetchResumable) also fetches the Hub cache's blobs (model/hub.ts).
 *
 * Sources (see data/README.md for who documents each URL):
 * - wiki1m: SimCSE's data/download_wiki.sh (princeton-nlp/SimCSE).
 * - senteval: SimCSE's SentEval/data/downstream/download_dataset.sh (a tar with the STS/SICK data).
 * - fewshot-subsets: miCSE's data/download.sh (SAP-samples/acl2023-micse), 36 files on the Hugging Face hub.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { UserError } from '../errors.js';
import { createProgress } from '../progress.js';

/** One file to fetch. */
export interface DownloadSpec {
  url: string;
  target: string;
  /** Expected sha256 (hex) when published; null = record the one we get. */
  sha256: string | null;
}

export interface DownloadOptions {
  /** Print a progress line on stderr. Default true. */
  progress?: boolean;
  /** Re-download even if the target exists. Default false. */
  force?: boolean;
  /** Where messages go (progress, recorded checksums). Default process.stderr. */
  stream?: NodeJS.WriteStream;
  /** Abort a request that sends nothing for this long. Default DEFAULT_IDLE_TIMEOUT_MS. */
  idleTimeoutMs?: number;
}

export interface DownloadResult {
  target: string;
  sha256: string;
  bytes: number;
  /** `present`: the target existed and matched its checksum; `resumed`: continued a .part file. */
  status: 'downloaded' | 'resumed' | 'present';
}

/** The dataset names `micse data download` accepts. */
export const DATASET_NAMES = ['wiki1m', 'senteval', 'fewshot-subsets'] as const;
export type DatasetName = (typeof DATASET_NAMES)[number];

/** Default download directory (relative to the working directory). */
export const DEFAULT_DATA_DIR = 'data';
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

const HF_SIMCSE = 'https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main';
const HF_MICSE = 'https://huggingface.co/datasets/sap-ai-research/datasets-for-micse';
/** Split labels as they appear in the official file names (wiki_subset_1M_<label>percent_seed<seed>.txt). */
export const FEWSHOT_SPLIT_LABELS = ['000.0064', '000.01', '000.05', '000.10', '000.50', '001.00', '010.00'] as const;
export const FEWSHOT_SEEDS = [48, 49, 50, 51, 52] as const;

/**
 * Known sha256 values, by file name. None of the sources publishes checksums, so this starts empty; the first
 * download records what it got in `<target>.sha256`, and later runs verify against that.
 */
export const KNOWN_SHA256: Readonly<Record<string, string>> = {};

/** The files of a dataset, downloaded under `dir`. */
export function datasetFiles(name: DatasetName, dir = DEFAULT_DATA_DIR): DownloadSpec[] {
  const spec = (url: string, file: string): DownloadSpec => ({ url, target: path.join(dir, file), sha256: KNOWN_SHA256[path.basename(file)] ?? null });
  switch (name) {
    case 'wiki1m':
      return [spec(`${HF_SIMCSE}/wiki1m_for_simcse.txt`, 'wiki1m_for_simcse.txt')];
    case 'senteval':
      return [spec(`${HF_SIMCSE}/senteval.tar`, 'senteval.tar')];
    case 'fewshot-subsets': {
      const out: DownloadSpec[] = [];
      for (const label of FEWSHOT_SPLIT_LABELS) {
        for (const seed of FEWSHOT_SEEDS) {
          const file = `wiki_subset_1M_${label}percent_seed${seed}.txt`;
          // download.sh uses /raw/ for the small files and /resolve/ for the 10% files (git-LFS sized).
          const kind = label === '010.00' ? 'resolve' : 'raw';
          out.push(spec(`${HF_MICSE}/${kind}/main/${file}`, path.join('fewshot', file)));
        }
      }
      const full = 'wiki_subset_1M_100.00percent.txt';
      out.push(spec(`${HF_MICSE}/resolve/main/${full}`, path.join('fewshot', full)));
      return out;
    }
  }
}

/** `npx micse data download NAME [--dir DIR]` (no --dir for the default data directory). */
export function downloadCommand(name: DatasetName, dir: string): string {
  return `npx micse data download ${name}${path.normalize(dir) === path.normalize(DEFAULT_DATA_DIR) ? '' : ` --dir ${dir}`}`;
}

/**
 * The `micse data download` command that writes `file`, when its name is one of the datasets' files (the
 * download directory follows from where `file` expects it), or null.
 */
export function downloadCommandFor(file: string): string | null {
  const want = path.normalize(file);
  for (const name of DATASET_NAMES) {
    for (const spec of datasetFiles(name, DEFAULT_DATA_DIR)) {
      const rel = path.relative(DEFAULT_DATA_DIR, spec.target); // e.g. fewshot/wiki_subset_1M_000.10percent_seed48.txt
      if (path.basename(rel) !== path.basename(want)) continue;
      const dir = want === rel ? '.' : want.endsWith(`${path.sep}${rel}`) ? want.slice(0, -rel.length - 1) : null;
      if (dir === null) return `npx micse data download ${name} (it writes ${spec.target}; move it to ${file} or point the config there)`;
      return downloadCommand(name, dir);
    }
  }
  return null;
}

/** sha256 (hex) of a file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(file), h);
  return h.digest('hex');
}

async function sizeOf(file: string): Promise<number | null> {
  try {
    return (await stat(file)).size;
  } catch {
    return null;
  }
}

/** Why a request failed before any HTTP status, in a few words: the system error code (ECONNREFUSED), or the message. */
export function fetchFailure(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? (e instanceof Error ? e.message : String(err));
}

function networkError(url: string, target: string, err: FetchError): UserError {
  const kept = err.kept > 0 ? ` ${err.kept} bytes are kept in ${target}.part; rerun to resume.` : '';
  return new UserError(
    `cannot download ${url} to ${target}: ${err.message} (offline or the host is unreachable?).${kept} ` +
      `With internet elsewhere: curl -L -C - -o ${target} ${url}`,
  );
}

/** Writes `<hex>  <name>` (sha256sum format) beside the target. */
async function recordChecksum(target: string, hex: string): Promise<void> {
  await writeFile(`${target}.sha256`, `${hex}  ${path.basename(target)}\n`, 'utf8');
}

async function recordedChecksum(target: string): Promise<string | null> {
  try {
    const m = /^([0-9a-f]{64})\b/.exec(await readFile(`${target}.sha256`, 'utf8'));
    return m?.[1] ?? null;
  } catch {
    return null;
  }
}

/** Why fetchResumable stopped: the HTTP status the server answered (null for a network fault), and the bytes kept. */
export class FetchError extends Error {
  constructor(message: string, readonly status: number | null, readonly kept: number) {
    super(message);
  }
}

export interface ResumableFetch {
  url: string;
  /** The file the bytes go to; the bytes already in it are continued with an HTTP Range request. */
  part: string;
  /** Request headers (an Authorization). */
  headers?: Record<string, string>;
  /** Names the file on the progress line. */
  label: string;
  /** Print a progress line on `stream`. */
  progress: boolean;
  stream: NodeJS.WriteStream;
  idleTimeoutMs: number;
}

/**
 * Fetches `f.url` into `f.part`, continuing a part file that is there: `Range: bytes=<size>-`, appended on 206. A
 * server that ignores Range (200) restarts the part; 416 with the part's exact size means it is complete. Returns
 * the size it continued from (0: started over). An HTTP error status or a network fault throws a FetchError (the
 * part keeps what arrived); a range answer that does not continue the part throws a UserError.
 */
export async function fetchResumable(f: ResumableFetch): Promise<number> {
  const { url, part } = f;
  let have = (await sizeOf(part)) ?? 0;
  const controller = new AbortController();
  const idle = setTimeout(() => controller.abort(new Error(`no data for ${f.idleTimeoutMs} ms`)), f.idleTimeoutMs);
  const failed = async (err: unknown) => new FetchError(fetchFailure(err), null, (await sizeOf(part)) ?? 0);
  try {
    let res: Response;
    try {
      res = await fetch(url, { headers: { ...f.headers, ...(have > 0 ? { Range: `bytes=${have}-` } : {}) }, redirect: 'follow', signal: controller.signal });
    } catch (err) {
      throw await failed(err);
    }
    let append = false;
    if (res.status === 206 && have > 0) {
      const m = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
      append = m !== null && Number(m[1]) === have;
      if (!append) {
        await res.body?.cancel();
        throw new UserError(`cannot resume ${url}: the server answered range ${res.headers.get('content-range')} for bytes=${have}-; delete ${part} and retry`);
      }
    } else if (res.status === 416 && have > 0) {
      await res.body?.cancel();
      const m = /^bytes \*\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
      if (m === null || Number(m[1]) !== have) {
        throw new UserError(`cannot resume ${url}: the server refused bytes=${have}- (416); delete ${part} and retry`);
      }
      return have;
    } else if (res.status !== 200) {
      await res.body?.cancel();
      throw new FetchError(`HTTP ${res.status} ${res.statusText}`, res.status, have);
    } else {
      have = 0; // full body: start the part over
    }

    const length = Number(res.headers.get('content-length') ?? NaN);
    const total = Number.isFinite(length) ? length + have : undefined;
    const progress = createProgress({ label: f.label, unit: 'B', total, stream: f.stream, silent: !f.progress });
    if (append) progress.tick(have);
    const file = createWriteStream(part, { flags: append ? 'a' : 'w' });
    let received = 0;
    try {
      const body = res.body === null ? Readable.from([]) : Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
      body.on('data', (chunk: Buffer) => {
        received += chunk.length;
        idle.refresh(); // restart the idle countdown
        progress.tick(chunk.length);
      });
      await pipeline(body, file);
    } catch (err) {
      throw await failed(err);
    }
    if (Number.isFinite(length) && received !== length) throw await failed(new Error(`connection closed after ${received} of ${length} bytes`));
    progress.done();
    return have;
  } finally {
    clearTimeout(idle);
  }
}

/**
 * Downloads `spec.url` to `spec.target` through `<target>.part` (fetchResumable: a part left by an interrupted run
 * is continued). Verifies or records the sha256, then renames the part into place.
 */
export async function downloadFile(spec: DownloadSpec, opts: DownloadOptions = {}): Promise<DownloadResult> {
  const { url, target } = spec;
  const out = opts.stream ?? process.stderr;
  const part = `${target}.part`;
  await mkdir(path.dirname(path.resolve(target)), { recursive: true });

  const present = await sizeOf(target);
  if (present !== null && opts.force !== true) {
    const expected = spec.sha256 ?? (await recordedChecksum(target));
    const hex = await sha256File(target);
    if (expected !== null && hex !== expected) {
      throw new UserError(`${target} exists but its sha256 is ${hex}, expected ${expected}; delete it or pass --force to download again`);
    }
    if (expected === null) await recordChecksum(target, hex);
    return { target, sha256: hex, bytes: present, status: 'present' };
  }

  if (opts.force === true) await rm(part, { force: true });
  let resumedFrom: number;
  try {
    resumedFrom = await fetchResumable({
      url, part, label: path.basename(target), progress: opts.progress !== false, stream: out, idleTimeoutMs: opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    });
  } catch (err) {
    if (!(err instanceof FetchError)) throw err;
    throw err.status !== null ? new UserError(`cannot download ${url} to ${target}: ${err.message}`) : networkError(url, target, err);
  }

  const hex = await sha256File(part);
  const bytes = (await sizeOf(part)) ?? 0;
  if (spec.sha256 !== null && hex !== spec.sha256) {
    await rm(part, { force: true });
    throw new UserError(`${url}: sha256 of the download is ${hex}, expected ${spec.sha256}; the partial file was deleted, retry`);
  }
  await rename(part, target);
  await recordChecksum(target, hex);
  if (spec.sha256 === null) out.write(`${target}: sha256 ${hex} (no published checksum; recorded in ${target}.sha256)\n`);
  return { target, sha256: hex, bytes, status: resumedFrom > 0 ? 'resumed' : 'downloaded' };
}

/** Extracts a tar with the system `tar` (present on Linux, macOS and Windows 10+). */
async function extractTar(archive: string, into: string): Promise<void> {
  await mkdir(into, { recursive: true });
  await new Promise<void>((resolve, reject) => {
    const child = spawn('tar', ['-xf', archive, '-C', into], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => reject(new UserError(`cannot run tar to extract ${archive} (${(e as NodeJS.ErrnoException).code}); extract it by hand into ${into}`)));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new UserError(`tar -xf ${archive} -C ${into} failed (${code}): ${err.trim()}`))));
  });
}

/** The directory under `root` (depth <= 3) that holds STS/ (what `data.senteval` should name), or null. */
async function findSentEvalRoot(root: string, depth = 3): Promise<string | null> {
  let entries: string[];
  try {
    entries = await readdir(root);
  } catch {
    return null;
  }
  if (entries.includes('STS')) return root;
  if (depth === 0) return null;
  for (const e of entries.sort()) {
    const full = path.join(root, e);
    if ((await stat(full)).isDirectory()) {
      const found = await findSentEvalRoot(full, depth - 1);
      if (found !== null) return found;
    }
  }
  return null;
}

/**
 * Downloads every file of a dataset under `dir` (senteval is also extracted into `<dir>/senteval`). Returns the
 * results and, for senteval, the directory to use as `data.senteval`.
 */
export async function downloadDataset(
  name: DatasetName,
  opts: DownloadOptions & { dir?: string } = {},
): Promise<{ results: DownloadResult[]; sentevalDir?: string }> {
  if (!DATASET_NAMES.includes(name)) throw new UserError(`unknown dataset ${String(name)}; choose one of ${DATASET_NAMES.join(', ')}`);
  const dir = opts.dir ?? DEFAULT_DATA_DIR;
  const results: DownloadResult[] = [];
  for (const spec of datasetFiles(name, dir)) results.push(await downloadFile(spec, opts));
  if (name !== 'senteval') return { results };
  const into = path.join(dir, 'senteval');
  if ((await findSentEvalRoot(into)) === null || opts.force === true) await extractTar(results[0]!.target, into);
  const root = await findSentEvalRoot(into);
  if (root === null) throw new UserError(`extracted ${results[0]!.target} into ${into} but found no STS/ folder in it`);
  return { results, sentevalDir: root };
}
