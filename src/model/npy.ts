/**
 * NumPy .npy (format 1.0) for float32 C-order matrices, what `np.load` reads: the one codec of the project (whole
 * files here; src/use/npyAppend.ts appends rows to a file with this header).
 */
import { UserError } from '../errors.js';

/** Magic + version + length + header, a multiple of 64 as format 1.0 asks; room for any 64-bit row count. */
export const NPY_HEADER_BYTES = 128;

/** The fixed-size .npy header for a [rows, cols] little-endian float32 C-order matrix. */
export function npyHeader(rows: number, cols: number): Buffer {
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
  const room = NPY_HEADER_BYTES - 10 - 1;
  if (dict.length > room) throw new Error(`npy header too long for ${rows} x ${cols}`);
  const out = Buffer.alloc(NPY_HEADER_BYTES, 0x20);
  out.write('\x93NUMPY', 0, 'latin1');
  out.writeUInt8(1, 6);
  out.writeUInt8(0, 7);
  out.writeUInt16LE(NPY_HEADER_BYTES - 10, 8);
  out.write(dict, 10, 'latin1');
  out.write('\n', NPY_HEADER_BYTES - 1, 'latin1');
  return out;
}

/** Parses the header of a float32 C-order 2-D .npy; returns its shape and the byte offset of the data. */
export function parseNpyHeader(buf: Buffer, file: string): { rows: number; cols: number; offset: number } {
  if (buf.length < 10 || buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new UserError(`${file}: not a .npy file`);
  const major = buf.readUInt8(6);
  const hstart = major === 1 ? 10 : 12;
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const header = buf.toString('latin1', hstart, hstart + hlen);
  const m = /'shape': \((\d+), (\d+)\)/.exec(header);
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True") || m === null) {
    throw new UserError(`${file}: expected a float32 C-order 2-D .npy, header is ${header.trim()}`);
  }
  return { rows: Number(m[1]), cols: Number(m[2]), offset: hstart + hlen };
}


/** Serialises a [rows, cols] float32 matrix as .npy bytes. */
export function encodeNpy(rows: number[][] | Float32Array[], cols: number): Buffer {
  const header = npyHeader(rows.length, cols);
  const out = Buffer.alloc(header.length + rows.length * cols * 4);
  header.copy(out);
  let pos = header.length;
  for (const r of rows) {
    for (let j = 0; j < cols; j++) {
      out.writeFloatLE(r[j] ?? 0, pos);
      pos += 4;
    }
  }
  return out;
}
