/** File helpers shared by checkpoints, exports and data: atomic writes so a kill never leaves half a file. */
import { promises as fs } from 'node:fs';
import path from 'node:path';

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
