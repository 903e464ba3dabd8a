/**
 * Model names (`bert-base-uncased`, `org/name`) resolve to the Hugging Face cache (`$HF_HUB_CACHE` or
 * `$HF_HOME/hub` or `~/.cache/huggingface/hub`), in the layout transformers, sentence-transformers and huggingface_hub
 * share: `models--org--name/refs/<revision>` holds a commit sha, `snapshots/<sha>/<file>` links into `blobs/`.
 * A cached snapshot is used without contacting the Hub. Otherwise the missing files are downloaded
 * (`$HF_ENDPOINT`, default https://huggingface.co; `$HF_TOKEN` or `$HUGGING_FACE_HUB_TOKEN` for gated and private
 * models); offline, the error says which files to put where.
 *
 * `@huggingface/hub` resolves the revision, lists the files (with the hash that names each blob) and writes the
 * snapshot links. Its downloadFileToCacheDir cannot resume and reports no progress (it rewrites
 * `blobs/<hash>.incomplete` from byte 0 and streams the body straight to it), so the bytes of a blob are fetched
 * here first, with download.ts's fetchResumable: into that same `.incomplete` file, continued with an HTTP Range
 * request when an interrupted run (or huggingface_hub in Python) left one, with a progress line on a terminal, and
 * checked against the sha256 the Hub publishes for LFS files. downloadFileToCacheDir then finds the blob and only
 * links it.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FetchError, fetchFailure, fetchResumable, DEFAULT_IDLE_TIMEOUT_MS, sha256File } from '../data/download.js';
import { UserError } from '../errors.js';
import { exists, readFileNamed } from '../fsutil.js';
import { hasSafetensorsWeights } from './safetensors.js';

/** Files a BERT checkpoint directory needs (one weight file and one tokenizer file of each pair). */
export const MODEL_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'vocab.txt', 'tokenizer_config.json'] as const;
const REQUIRED: readonly string[] = ['config.json', 'model.safetensors'];
const DEFAULT_ENDPOINT = 'https://huggingface.co';

export function hubCacheDir(): string {
  const env = process.env;
  if (env['HF_HUB_CACHE'] !== undefined && env['HF_HUB_CACHE'] !== '') return env['HF_HUB_CACHE'];
  if (env['HF_HOME'] !== undefined && env['HF_HOME'] !== '') return path.join(env['HF_HOME'], 'hub');
  return path.join(os.homedir(), '.cache', 'huggingface', 'hub');
}

/** The Hub's base URL: `$HF_ENDPOINT`, default https://huggingface.co. */
export function hubEndpoint(): string {
  const e = process.env['HF_ENDPOINT'];
  return e !== undefined && e !== '' ? e.replace(/\/+$/, '') : DEFAULT_ENDPOINT;
}

/** The access token for gated and private models: `$HF_TOKEN`, else `$HUGGING_FACE_HUB_TOKEN`, else none. */
export function hubToken(): string | undefined {
  for (const key of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN']) {
    const t = process.env[key];
    if (t !== undefined && t !== '') return t;
  }
  return undefined;
}

/** `org/name` or `name`: what the Hub accepts as a model id. */
export function looksLikeModelId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/.test(s) && !s.startsWith('.') && !s.endsWith('.json');
}

/** The Hub URL of one file of a model. */
export function hubFileUrl(modelId: string, revision: string, file: string): string {
  return `${hubEndpoint()}/${modelId}/resolve/${encodeURIComponent(revision)}/${file}`;
}

export function repoFolder(modelId: string, cache = hubCacheDir()): string {
  return path.join(cache, `models--${modelId.replace(/\//g, '--')}`);
}

/**
 * The cached snapshot directory for `revision` that has a config.json, or null: `snapshots/<sha>` where
 * `refs/<revision>` holds the sha, else `snapshots/<revision>` (a commit sha, or the layout this project wrote before,
 * `snapshots/main`).
 */
async function cachedSnapshot(modelId: string, revision: string, cache: string): Promise<string | null> {
  const repo = repoFolder(modelId, cache);
  const ref = path.join(repo, 'refs', revision);
  const candidates = (await exists(ref)) ? [(await readFileNamed(ref, 'utf8')).trim(), revision] : [revision];
  for (const commit of candidates) {
    const snap = path.join(repo, 'snapshots', commit);
    if (commit !== '' && (await exists(path.join(snap, 'config.json')))) return snap;
  }
  return null;
}

export interface ResolveOptions {
  revision?: string;
  cacheDir?: string;
  /** Never touch the network (also set by HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** A progress line on stderr while a file of PROGRESS_MIN_BYTES or more downloads (default: when stderr is a terminal). */
  progress?: boolean;
}

/** Files smaller than this download without a progress line. */
export const PROGRESS_MIN_BYTES = 1 << 20;

/** Whether the Hub must not be contacted: `opts.offline`, or HF_HUB_OFFLINE=1. */
export function hubOffline(opts: ResolveOptions = {}): boolean {
  return opts.offline === true || process.env['HF_HUB_OFFLINE'] === '1';
}

/** What an HTTP error status from the Hub means for reading a model, in a few words. */
export function hubStatusReason(status: number): string {
  if (status === 401 || status === 403) {
    return hubToken() === undefined
      ? `HTTP ${status}: the model is gated or private, or does not exist; a token is needed: set HF_TOKEN to one that can read it`
      : `HTTP ${status}: the token in HF_TOKEN cannot read it (request access on the model page, or use another token)`;
  }
  if (status === 404) return 'HTTP 404: no such model or revision on the Hub';
  return `HTTP ${status}`;
}

/** One file of a snapshot to fetch into its blob. */
interface BlobFetch {
  /** The file's sha256 when the Hub publishes it (LFS files), to check the bytes against. */
  sha256: string | null;
  /** Bytes, as the Hub lists them (a progress line from PROGRESS_MIN_BYTES on). */
  size: number;
  progress: boolean;
  fail: (what: string, reason: string) => never;
}

/**
 * Fetches the bytes of `file` at commit `sha` into `blob` (continuing its `.incomplete` file when there) unless the
 * blob is there already.
 */
async function fetchBlob(modelId: string, sha: string, file: string, blob: string, o: BlobFetch): Promise<void> {
  if (await exists(blob)) return;
  process.stderr.write(`${modelId}: downloading ${file} (${sha.slice(0, 12)})\n`);
  const part = `${blob}.incomplete`;
  await fs.mkdir(path.dirname(blob), { recursive: true });
  const token = hubToken();
  try {
    await fetchResumable({
      url: hubFileUrl(modelId, sha, file), part, headers: token !== undefined ? { Authorization: `Bearer ${token}` } : {}, label: `${modelId} ${file}`,
      progress: o.progress && o.size >= PROGRESS_MIN_BYTES, stream: process.stderr, idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
    });
  } catch (err) {
    if (!(err instanceof FetchError)) throw err;
    const reason = err.status !== null ? hubStatusReason(err.status) : err.message;
    o.fail(`download ${file}`, err.kept > 0 ? `${reason}; ${err.kept} bytes are kept in ${part}, run again to resume` : reason);
  }
  if (o.sha256 !== null) {
    const hex = await sha256File(part);
    if (hex !== o.sha256) {
      await fs.rm(part, { force: true });
      o.fail(`download ${file}`, `its sha256 is ${hex}, the Hub says ${o.sha256}; the partial file was deleted, run again`);
    }
  }
  await fs.rename(part, blob);
}

/**
 * Downloads the checkpoint files of `modelId` at `revision` into the cache and returns the snapshot directory.
 * The revision is resolved to its commit first, so every file lands in one `snapshots/<sha>/`; `refs/<revision>` is
 * written last, once the files are there.
 */
async function downloadSnapshot(modelId: string, revision: string, cache: string, help: string, progress: boolean): Promise<string> {
  // Loaded here, not at the top: the browser bundle (which reads the Hub through pretrained.ts's hubSource) stubs it
  // as a Node-only package that throws only when loaded.
  const { downloadFileToCacheDir, HubApiError, modelInfo, pathsInfo } = await import('@huggingface/hub');
  const hub = { hubUrl: hubEndpoint(), accessToken: hubToken() };
  const fail = (what: string, reason: string): never => {
    throw new UserError(`${modelId}: could not ${what} from ${hub.hubUrl} (${reason}); ${help}`);
  };
  const failure = (err: unknown) => (err instanceof HubApiError ? hubStatusReason(err.statusCode) : fetchFailure(err));
  const info = await modelInfo({ ...hub, name: modelId, revision, additionalFields: ['sha', 'filePaths'] })
    .catch((err: unknown) => fail(`look up revision ${revision}`, failure(err)));
  const lacking = REQUIRED.filter((f) => !info.filePaths.includes(f));
  if (lacking.length > 0) {
    throw new UserError(`${modelId}: the Hub has no ${lacking.join(' or ')} at revision ${revision} (this loader reads safetensors BERT checkpoints); ${help}`);
  }
  const files = MODEL_FILES.filter((f) => info.filePaths.includes(f));
  const repo = { type: 'model' as const, name: modelId };
  const listed = await pathsInfo({ ...hub, repo, paths: files, revision: info.sha })
    .catch((err: unknown) => fail('list the files', failure(err)));
  for (const file of files) {
    const entry = listed.find((p) => p.path === file);
    // The blob's name, as downloadFileToCacheDir and huggingface_hub give it: the LFS sha256, else the xet hash, else the git oid.
    const hash = entry?.lfs?.oid ?? entry?.xetHash ?? entry?.oid;
    if (entry === undefined || hash === undefined) return fail(`list ${file}`, 'the Hub gave no hash for it');
    await fetchBlob(modelId, info.sha, file, path.join(repoFolder(modelId, cache), 'blobs', hash), { sha256: entry.lfs?.oid ?? null, size: entry.size, progress, fail });
    await downloadFileToCacheDir({ ...hub, repo, path: file, revision: info.sha, cacheDir: cache })
      .catch((err: unknown) => fail(`link ${file}`, failure(err)));
  }
  if (revision !== info.sha) {
    const ref = path.join(repoFolder(modelId, cache), 'refs', revision);
    await fs.mkdir(path.dirname(ref), { recursive: true });
    await fs.writeFile(ref, info.sha);
  }
  return path.join(repoFolder(modelId, cache), 'snapshots', info.sha);
}

/**
 * Where `dirOrName` is on this machine, as resolveModelDir would find it without a download: a local directory as is,
 * a model id's cached snapshot that holds its weights; null when a model id must be downloaded first. A path that is
 * a file, or neither a directory nor a model id, is a UserError.
 */
export async function localModelDir(dirOrName: string, opts: ResolveOptions = {}): Promise<string | null> {
  if (await exists(dirOrName)) {
    const stat = await fs.stat(dirOrName);
    if (!stat.isDirectory()) throw new UserError(`${dirOrName}: is a file; pass the checkpoint's directory`);
    return dirOrName;
  }
  if (!looksLikeModelId(dirOrName)) throw new UserError(`${dirOrName}: no such directory`);
  const snap = await cachedSnapshot(dirOrName, opts.revision ?? 'main', opts.cacheDir ?? hubCacheDir());
  return snap !== null && (await hasSafetensorsWeights(snap)) ? snap : null;
}

/**
 * A local directory is returned as is. A model id is looked up in the Hugging Face cache, and downloaded there when
 * missing and online.
 */
export async function resolveModelDir(dirOrName: string, opts: ResolveOptions = {}): Promise<string> {
  const local = await localModelDir(dirOrName, opts);
  if (local !== null) return local;
  const cache = opts.cacheDir ?? hubCacheDir();
  const revision = opts.revision ?? 'main';
  const snap = await cachedSnapshot(dirOrName, revision, cache);
  const target = snap ?? path.join(repoFolder(dirOrName, cache), 'snapshots', revision);
  const help = `put ${REQUIRED.join(' and ')} plus tokenizer.json or vocab.txt in ${target} (or pass a local checkpoint directory)`;
  if (hubOffline(opts)) throw new UserError(`${dirOrName}: not in the Hugging Face cache and offline mode is on; ${help}`);
  return downloadSnapshot(dirOrName, revision, cache, help, opts.progress ?? process.stderr.isTTY === true);
}
