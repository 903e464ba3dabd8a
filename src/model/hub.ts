/**
 * Model names (`bert-base-uncased`, `org/name`) resolve to the standard Hugging Face cache layout
 * (`$HF_HUB_CACHE` or `$HF_HOME/hub` or `~/.cache/huggingface/hub`, then `models--org--name/snapshots/<rev>/`),
 * shared with transformers and sentence-transformers. When a file is missing there it is downloaded from the Hub
 * (`$HF_ENDPOINT`, default https://huggingface.co) into that layout, resumably, with a progress bar; offline, the
 * error says which files to put where.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../errors.js';
import { downloadFile } from '../data/download.js';
import { exists } from '../fsutil.js';
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

/** `org/name` or `name`: what the Hub accepts as a model id. */
export function looksLikeModelId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/.test(s) && !s.startsWith('.') && !s.endsWith('.json');
}

/** The Hub URL of one file of a model (`$HF_ENDPOINT`, default https://huggingface.co). */
export function hubFileUrl(modelId: string, revision: string, file: string): string {
  return `${process.env['HF_ENDPOINT'] ?? DEFAULT_ENDPOINT}/${modelId}/resolve/${encodeURIComponent(revision)}/${file}`;
}

export function repoFolder(modelId: string, cache = hubCacheDir()): string {
  return path.join(cache, `models--${modelId.replace(/\//g, '--')}`);
}

/** The snapshot directory for `revision` if the cache has one with a config.json. */
async function cachedSnapshot(modelId: string, revision: string, cache: string): Promise<string | null> {
  const repo = repoFolder(modelId, cache);
  let commit = revision;
  const ref = path.join(repo, 'refs', revision);
  if (await exists(ref)) commit = (await fs.readFile(ref, 'utf8')).trim();
  const snap = path.join(repo, 'snapshots', commit);
  return (await exists(path.join(snap, 'config.json'))) ? snap : null;
}

export interface ResolveOptions {
  revision?: string;
  cacheDir?: string;
  /** Never touch the network (also set by HF_HUB_OFFLINE=1). */
  offline?: boolean;
}

/** Whether the Hub must not be contacted: `opts.offline`, or HF_HUB_OFFLINE=1. */
export function hubOffline(opts: ResolveOptions = {}): boolean {
  return opts.offline === true || process.env['HF_HUB_OFFLINE'] === '1';
}

/**
 * A local directory is returned as is. A model id is looked up in the Hugging Face cache, and downloaded there when
 * missing and online.
 */
export async function resolveModelDir(dirOrName: string, opts: ResolveOptions = {}): Promise<string> {
  if (await exists(dirOrName)) {
    const stat = await fs.stat(dirOrName);
    if (!stat.isDirectory()) throw new UserError(`${dirOrName}: is a file; pass the checkpoint's directory`);
    return dirOrName;
  }
  if (!looksLikeModelId(dirOrName)) throw new UserError(`${dirOrName}: no such directory`);
  const cache = opts.cacheDir ?? hubCacheDir();
  const revision = opts.revision ?? 'main';
  const snap = await cachedSnapshot(dirOrName, revision, cache);
  if (snap !== null && (await hasSafetensorsWeights(snap))) return snap;
  const offline = hubOffline(opts);
  const target = snap ?? path.join(repoFolder(dirOrName, cache), 'snapshots', revision);
  const help = `put ${REQUIRED.join(' and ')} plus tokenizer.json or vocab.txt in ${target} (or pass a local checkpoint directory)`;
  if (offline) throw new UserError(`${dirOrName}: not in the Hugging Face cache and offline mode is on; ${help}`);
  await fs.mkdir(target, { recursive: true });
  for (const file of MODEL_FILES) {
    const url = hubFileUrl(dirOrName, revision, file);
    try {
      await downloadFile({ url, target: path.join(target, file), sha256: null });
    } catch (err) {
      const notFound = err instanceof UserError && /HTTP 404/.test(err.message);
      if (notFound && !REQUIRED.includes(file)) continue; // e.g. no tokenizer.json: vocab.txt serves
      throw new UserError(`${dirOrName}: could not download ${url} (${(err as Error).message}); ${help}`);
    }
  }
  await fs.mkdir(path.join(repoFolder(dirOrName, cache), 'refs'), { recursive: true });
  if (!(await exists(path.join(repoFolder(dirOrName, cache), 'refs', revision)))) {
    await fs.writeFile(path.join(repoFolder(dirOrName, cache), 'refs', revision), revision);
  }
  return target;
}
