/** NumPy .npy (format 1.0) for float32 matrices: what `np.load` reads. */

/** Serialises a [rows, cols] float32 matrix as .npy bytes. */
export function encodeNpy(rows: number[][] | Float32Array[], cols: number): Buffer {
  const n = rows.length;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${n}, ${cols}), }`;
  // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in \n
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const out = Buffer.alloc(10 + header.length + n * cols * 4);
  out.write('\x93NUMPY', 0, 'latin1');
  out.writeUInt8(1, 6);
  out.writeUInt8(0, 7);
  out.writeUInt16LE(header.length, 8);
  out.write(header, 10, 'latin1');
  let pos = 10 + header.length;
  for (const r of rows) {
    for (let j = 0; j < cols; j++) {
      out.writeFloatLE(r[j] ?? 0, pos);
      pos += 4;
    }
  }
  return out;
}

/** Parses a float32 2-D .npy written by `encodeNpy` (or NumPy, C order, '<f4'). */
export function decodeNpy(buf: Buffer): { shape: [number, number]; data: Float32Array } {
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error('not a .npy file');
  const major = buf.readUInt8(6);
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', hstart, hstart + hlen);
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True")) throw new Error(`unsupported .npy header ${header.trim()}`);
  const m = /'shape': \((\d+), (\d+)\)/.exec(header);
  if (m === null) throw new Error(`unsupported .npy shape in ${header.trim()}`);
  const shape: [number, number] = [Number(m[1]), Number(m[2])];
  const start = hstart + hlen;
  const data = new Float32Array(shape[0] * shape[1]);
  for (let i = 0; i < data.length; i++) data[i] = buf.readFloatLE(start + i * 4);
  return { shape, data };
}
