/** File helpers shared by checkpoints, exports and data: atomic writes so a kill never leaves half a file. */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from './errors.js';

/** Writes `data` to `file` through a temporary file in the same folder, fsync'd, then renamed over `file`. */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  const fh = await fs.open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
}

/** Whether a path exists. */
export async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(() => true, () => false);
}

/** Parses a JSON file; a parse error is a UserError naming the file. */
export async function readJsonFile(file: string): Promise<unknown> {
  const text = await fs.readFile(file, 'utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new UserError(`${file}: invalid JSON (${(err as Error).message})`);
  }
}

/** Parses a JSON file that must hold an object. */
export async function readJsonObject(file: string): Promise<Record<string, unknown>> {
  const raw = await readJsonFile(file);
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new UserError(`${file}: not a JSON object`);
  return raw as Record<string, unknown>;
}
