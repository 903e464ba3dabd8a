/**
 * Resumable HTTP(S) download with a progress bar: bytes go to `<dest>.part`; a rerun continues it with a Range
 * request; the finished file is checked against `sha256` when given, then renamed to `dest`. Used for Hub
 * checkpoints and for the data sets. Errors are UserErrors naming the URL and the target path.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from './errors.js';
import { createProgress } from './progress.js';

export interface DownloadOptions {
  /** Expected sha256 (hex) of the whole file. */
  sha256?: string;
  /** Label for the progress line. */
  label?: string;
  /** Extra request headers (e.g. authorization for gated models). */
  headers?: Record<string, string>;
  silent?: boolean;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Downloads `url` to `dest` (resuming `dest.part`); returns the file's sha256. An existing `dest` is kept if its hash matches. */
export async function downloadFile(url: string, dest: string, opts: DownloadOptions = {}): Promise<string> {
  if (opts.sha256 !== undefined && (await fs.access(dest).then(() => true, () => false))) {
    if ((await sha256File(dest)) === opts.sha256) return opts.sha256;
  }
  await fs.mkdir(path.dirname(dest), { recursive: true });
  const part = `${dest}.part`;
  const have = await fs.stat(part).then((s) => s.size, () => 0);
  const headers: Record<string, string> = { ...opts.headers };
  if (process.env['HF_TOKEN'] !== undefined && /huggingface\.co/.test(url)) headers['authorization'] = `Bearer ${process.env['HF_TOKEN']}`;
  if (have > 0) headers['range'] = `bytes=${have}-`;
  let res: Response;
  try {
    res = await fetch(url, { headers, redirect: 'follow' });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new UserError(`cannot reach ${url} to write ${dest} (${cause?.code ?? cause?.message ?? (err as Error).message}); ` +
      `are you offline? Download it by other means and place it at ${dest}`);
  }
  if (res.status === 416 && have > 0) {
    // The .part already holds the whole file.
  } else if (!res.ok) {
    throw new UserError(`HTTP ${res.status} for ${url} (target ${dest})`);
  }
  const append = res.status === 206;
  const total = Number(res.headers.get('content-length') ?? NaN) + (append ? have : 0);
  const fh = await fs.open(part, append ? 'a' : 'w');
  const progress = createProgress({ label: opts.label ?? path.basename(dest), total: Number.isFinite(total) ? total : undefined, unit: 'B', silent: opts.silent });
  if (append) progress.tick(have);
  try {
    if (res.status !== 416 && res.body !== null) {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        await fh.write(chunk);
        progress.tick(chunk.length);
      }
    }
  } finally {
    await fh.close();
  }
  progress.done();
  const digest = await sha256File(part);
  if (opts.sha256 !== undefined && digest !== opts.sha256) {
    await fs.rm(part, { force: true });
    throw new UserError(`${url}: sha256 ${digest} does not match the expected ${opts.sha256}; the partial file was removed, rerun to download again`);
  }
  await fs.rename(part, dest);
  return digest;
}
