/**
 * An appendable float32 .npy file, so a corpus' vectors can be written chunk by chunk and a killed build resumes:
 * the header has a fixed size (`NPY_HEADER_BYTES`, padded with spaces as the format allows) and is rewritten
 * with the new row count after each append, so the file is a valid .npy of the rows completed so far (what
 * `np.load` and readNpyMatrix read; the format is src/model/npy.ts). Rows beyond a recorded count are cut off on resume.
 */
import { promises as fs } from 'node:fs';
import { environmentError, UserError } from '../errors.js';
import { NPY_HEADER_BYTES, npyHeader, parseNpyHeader } from '../model/npy.js';

/** Opens (creating when `rows` is 0) `file` for appending [n, cols] blocks after its first `rows` rows. */
export class NpyAppender {
  private constructor(
    private readonly fh: fs.FileHandle,
    readonly file: string,
    readonly cols: number,
    private count: number,
  ) {}

  /** Creates a fresh file, or reopens one and truncates it to `rows` complete rows (a resume). */
  static async open(file: string, cols: number, rows = 0): Promise<NpyAppender> {
    if (rows === 0) {
      const fh = await fs.open(file, 'w+');
      await fh.write(npyHeader(0, cols), 0, NPY_HEADER_BYTES, 0);
      return new NpyAppender(fh, file, cols, 0);
    }
    const fh = await fs.open(file, 'r+');
    const head = Buffer.alloc(NPY_HEADER_BYTES);
    await fh.read(head, 0, NPY_HEADER_BYTES, 0);
    const h = parseNpyHeader(head, file);
    const size = (await fh.stat()).size;
    if (h.offset !== NPY_HEADER_BYTES || h.cols !== cols || size < NPY_HEADER_BYTES + rows * cols * 4) {
      await fh.close();
      throw new UserError(`${file}: cannot resume: it holds ${Math.floor((size - h.offset) / 4 / Math.max(1, h.cols))} rows of ${h.cols}, expected at least ${rows} of ${cols}`);
    }
    await fh.truncate(NPY_HEADER_BYTES + rows * cols * 4);
    await fh.write(npyHeader(rows, cols), 0, NPY_HEADER_BYTES, 0);
    return new NpyAppender(fh, file, cols, rows);
  }

  get rows(): number {
    return this.count;
  }

  /** Appends row-major float32 rows [n, cols], fsyncs, then rewrites the header with the new count. */
  async append(data: Float32Array): Promise<void> {
    if (data.length % this.cols !== 0) throw new Error(`append: ${data.length} values is not a multiple of ${this.cols}`);
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    try {
      // Little-endian hosts only (every platform Node ships for); the header says '<f4'.
      await this.fh.write(bytes, 0, bytes.length, NPY_HEADER_BYTES + this.count * this.cols * 4);
      await this.fh.sync();
      await this.fh.write(npyHeader(this.count + data.length / this.cols, this.cols), 0, NPY_HEADER_BYTES, 0);
      await this.fh.sync();
    } catch (err) {
      throw environmentError(err, this.file, 'write') ?? err;
    }
    this.count += data.length / this.cols;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Reads a whole float32 2-D .npy into memory (one copy, no per-element decode). */
export async function readNpyMatrix(file: string): Promise<{ data: Float32Array; rows: number; cols: number }> {
  const buf = await fs.readFile(file);
  const h = parseNpyHeader(buf, file);
  const n = h.rows * h.cols;
  if (buf.length < h.offset + n * 4) throw new UserError(`${file}: truncated (${buf.length} bytes, header says ${h.rows} x ${h.cols})`);
  const data = new Float32Array(n);
  new Uint8Array(data.buffer).set(buf.subarray(h.offset, h.offset + n * 4));
  return { data, rows: h.rows, cols: h.cols };
}

/** Reads rows [from, from + count) of a float32 .npy written by NpyAppender (for streaming large files). */
export async function readNpyRows(fh: fs.FileHandle, cols: number, from: number, count: number): Promise<Float32Array> {
  const data = new Float32Array(count * cols);
  const view = new Uint8Array(data.buffer);
  const { bytesRead } = await fh.read(view, 0, view.length, NPY_HEADER_BYTES + from * cols * 4);
  if (bytesRead !== view.length) throw new UserError(`vectors file ends before row ${from + count}`);
  return data;
}
