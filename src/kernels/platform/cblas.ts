/**
 * Dense float32 products on the system's CBLAS (OpenBLAS, the BLAS PyTorch's CPU step runs on; MKL or BLIS where
 * those are what is installed), called synchronously through koffi, an FFI whose npm package ships prebuilt
 * binaries (an optional dependency: without it, or without a library, `Cblas.load` throws and the host backends
 * fall back to onnxruntime-node's MLAS, src/kernels/stock/host.ts).
 *
 * Why: per core OpenBLAS's SGEMM runs faster than MLAS through NativeGemm (figures: bench/README.md), and
 * `cblas_sgemm` reads each operand transposed in place (its Trans flags) and writes the product straight into the
 * caller's array: no transposed operand, no output copy (onnxruntime-node's binding returns every output as a fresh
 * copy). A batch is one call per entry on views of the operands (a broadcast operand is read again for each entry);
 * `[batch, M, K] @ [K, N]` is one `[batch * M, K] @ [K, N]` call, and a single row `[1, K] @ [K, N]` one `cblas_sgemv`.
 *
 * Which library: `MICSE_CBLAS=<path or file name>` loads that one and no other; else the first of LIBRARY_NAMES (for
 * the platform) that the dynamic loader finds and that exports `cblas_sgemm`. Threads: each Cblas has its count and
 * sets it with the library's setter (openblas_set_num_threads, MKL_Set_Num_Threads, bli_thread_set_num_threads)
 * before a product when the library's current count differs (the count is the library's, process-wide); a library
 * without a setter keeps its own. The default count is `defaultCblasThreads()`, the host threads (MICSE_HOST_THREADS,
 * else the cores), as the SIMD loops'. A grid of small products (gemmGrid:
 * the attention's heads, which the library would run on the calling thread alone) is cut among that many threads
 * instead, worker threads calling the library themselves (simdThreads.ts nativeThreads).
 */
import { createRequire } from 'node:module';
import { uninitialized } from './hostBackend.js';
import { hostThreads, jobCallsMax, nativeThreads, sharedParts, splitRuns, type SimdThreads, type ThreadCall } from './simdThreads.js';
import { productDims, type HostGemm, type Shape3 } from './nativeGemm.js';
import { firstLineOf } from '../../errors.js';

/** Environment variable naming the CBLAS library to load (a path, or a file name the dynamic loader resolves). */
export const CBLAS_ENV = 'MICSE_CBLAS';

/**
 * The libraries searched, in order, when CBLAS_ENV is unset: OpenBLAS (Debian's libopenblas0-*, Homebrew's openblas,
 * the Windows release's DLL), then Intel's MKL single dynamic library and BLIS. Debian's generic libblas.so.3 is left
 * out: where OpenBLAS is not installed it is the reference BLAS, slower than MLAS.
 */
export const LIBRARY_NAMES: Readonly<Partial<Record<NodeJS.Platform, readonly string[]>>> = {
  linux: ['libopenblas.so.0', 'libopenblas.so', 'libmkl_rt.so.2', 'libmkl_rt.so', 'libblis.so.4', 'libblis.so'],
  darwin: ['libopenblas.dylib', '/opt/homebrew/opt/openblas/lib/libopenblas.dylib', '/usr/local/opt/openblas/lib/libopenblas.dylib'],
  win32: ['libopenblas.dll', 'openblas.dll'],
};

/**
 * The host threads (hostThreads(): MICSE_HOST_THREADS, else the cores this process may use, its CPU affinity, which
 * `taskset` limits, and its cgroup's CPU quota), the count the SIMD loops' threads take too, so that one variable
 * keeps the whole library on N cores; throws on a MICSE_HOST_THREADS that is no thread count. All cores, as
 * onnxruntime-node's pool and PyTorch take: on a quiet 2-core machine two threads took a small wasm step from 1,140
 * to 842 ms and a BERT-base cpu step from 20.8 to 17.1 s; under other processes' load, the workers' spinning after
 * each product (OpenBLAS's THREAD_TIMEOUT) costs more CPU than it saves (bench/README.md, "OpenBLAS through koffi").
 */
export function defaultCblasThreads(): number {
  return hostThreads();
}

/** CBLAS enum values (cblas.h). */
const ROW_MAJOR = 101;
const NO_TRANS = 111;
const TRANS = 112;

/** The pieces of koffi's API used here (koffi's index.d.ts: IKoffiLib). */
interface KoffiLib {
  func(declaration: string): (...args: unknown[]) => unknown;
}
interface Koffi {
  load(path: string): KoffiLib;
  /** The address of a typed array's first element (a BigInt). */
  address(value: unknown): bigint;
}

type Sgemm = (order: number, transA: number, transB: number, m: number, n: number, k: number, alpha: number,
  a: Float32Array, lda: number, b: Float32Array, ldb: number, beta: number, c: Float32Array, ldc: number) => void;
/** cblas_sgemm with the three arrays passed as byte addresses (numbers), for Cblas.gemmGrid. */
const SGEMM_AT = 'void cblas_sgemm(int, int, int, int, int, int, float, uintptr_t, int, uintptr_t, int, float, uintptr_t, int)';
type SgemmAt = (order: number, transA: number, transB: number, m: number, n: number, k: number, alpha: number,
  a: number, lda: number, b: number, ldb: number, beta: number, c: number, ldc: number) => void;
type Sgemv = (order: number, trans: number, m: number, n: number, alpha: number, a: Float32Array, lda: number,
  x: Float32Array, incx: number, beta: number, y: Float32Array, incy: number) => void;
type Sger = (order: number, m: number, n: number, alpha: number, x: Float32Array, incx: number, y: Float32Array, incy: number,
  a: Float32Array, lda: number) => void;
type Saxpy = (n: number, alpha: number, x: Float32Array, incx: number, y: Float32Array, incy: number) => void;

/** A loaded library: its sgemm, its thread setter, and the thread count last set (process-wide, shared by every Cblas). */
interface Library {
  /** As loaded: the CBLAS_ENV value or the LIBRARY_NAMES entry. */
  readonly file: string;
  /** The library's own description (openblas_get_config, bli_info_get_version_str), or its file name. */
  readonly version: string;
  readonly sgemm: Sgemm;
  readonly sgemmAt: SgemmAt;
  readonly sgemv: Sgemv;
  readonly sger: Sger;
  readonly saxpy: Saxpy;
  /** The byte address of a typed array's first element (koffi.address). */
  readonly address: (a: Float32Array) => number;
  /** Runs a list of sgemmAt calls in turn on this thread (gemmGrid's part). */
  readonly runSgemmAt: (calls: ThreadCall<'sgemm'>[]) => void;
  /** Where the koffi package that loaded it is (for the grid's worker threads, which load it again). */
  readonly koffiPath: string;
  readonly setThreads: ((n: number) => void) | null;
  threads: number | undefined;
  /** Whether two threads may call it at once (concurrentCallsSafe). */
  readonly concurrent: boolean;
}

/** Loaded libraries by file, so that two Cblas on one library share its thread count. */
const libraries = new Map<string, Library>();

/** The function `declaration` declares, or null where the library does not export it. */
function optionalFunc(lib: KoffiLib, declaration: string): ((...args: unknown[]) => unknown) | null {
  try {
    return lib.func(declaration);
  } catch {
    return null;
  }
}

/**
 * OpenBLAS's THREAD_TIMEOUT (2^n cycles its idle workers spin before they sleep), read once when the library loads:
 * the least, where the environment names none. OpenBLAS's default (n = 28, ~0.1 s) keeps its workers spinning on
 * the other cores through the element-wise loops that follow a product, which is where the host SIMD loops' own
 * threads (simdThreads.ts) run.
 */
const OPENBLAS_THREAD_TIMEOUT = '4';
const OPENBLAS_THREAD_TIMEOUT_ENV = 'OPENBLAS_THREAD_TIMEOUT';

/** Runs `load` with OPENBLAS_THREAD_TIMEOUT_ENV set where it is unset, unset again after (child processes never see it). */
function withOpenblasThreadTimeout<T>(load: () => T): T {
  if (process.env[OPENBLAS_THREAD_TIMEOUT_ENV] !== undefined) return load();
  process.env[OPENBLAS_THREAD_TIMEOUT_ENV] = OPENBLAS_THREAD_TIMEOUT;
  try {
    return load();
  } finally {
    delete process.env[OPENBLAS_THREAD_TIMEOUT_ENV];
  }
}

/**
 * Whether a library may be called from two threads at once, from OpenBLAS's openblas_get_parallel() (null: not
 * OpenBLAS; MKL and BLIS are thread-safe): only OpenBLAS's pthreads build (1) is taken as safe. Its sequential build
 * (0) shares one buffer pool without locks unless built with USE_LOCKING, and its OpenMP build (2) is meant to be
 * called from one thread's parallel regions.
 */
export function concurrentCallsSafe(openblasParallel: number | null): boolean {
  return openblasParallel === null || openblasParallel === 1;
}

function openLibrary(koffi: Koffi, koffiPath: string, file: string): Library {
  const known = libraries.get(file);
  if (known !== undefined) return known;
  const lib = withOpenblasThreadTimeout(() => koffi.load(file));
  const sgemm = lib.func('void cblas_sgemm(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int)') as Sgemm;
  const sgemmAt = lib.func(SGEMM_AT) as SgemmAt;
  const sgemv = lib.func('void cblas_sgemv(int, int, int, int, float, const float *, int, const float *, int, float, float *, int)') as Sgemv;
  const sger = lib.func('void cblas_sger(int, int, int, float, const float *, int, const float *, int, float *, int)') as Sger;
  const saxpy = lib.func('void cblas_saxpy(int, float, const float *, int, float *, int)') as Saxpy;
  const openblasThreads = optionalFunc(lib, 'void openblas_set_num_threads(int)');
  const mklThreads = optionalFunc(lib, 'void MKL_Set_Num_Threads(int)');
  const blisThreads = optionalFunc(lib, 'void bli_thread_set_num_threads(int64_t)');
  const setThreads = openblasThreads ?? mklThreads ?? blisThreads;
  const openblasConfig = optionalFunc(lib, 'const char *openblas_get_config()');
  const openblasParallel = optionalFunc(lib, 'int openblas_get_parallel()');
  const blisVersion = optionalFunc(lib, 'const char *bli_info_get_version_str()');
  const version = openblasConfig !== null ? String(openblasConfig()) : blisVersion !== null ? `BLIS ${String(blisVersion())}` : file;
  const address = (a: Float32Array) => Number(koffi.address(a));
  const runSgemmAt = (calls: ThreadCall<'sgemm'>[]): void => {
    for (const call of calls) (sgemmAt as (...args: number[]) => void)(...call.args);
  };
  const loaded: Library = {
    file, version, sgemm, sgemmAt, sgemv, sger, saxpy, address, runSgemmAt, koffiPath, setThreads: setThreads === null ? null : (n) => void setThreads(n), threads: undefined,
    concurrent: concurrentCallsSafe(openblasParallel === null ? null : Number(openblasParallel())),
  };
  libraries.set(file, loaded);
  return loaded;
}

/**
 * One operand of `Cblas.gemmGrid`: its block of grid entry (i, j) starts at element `offset + i * step[0] + j *
 * step[1]` of `data`, its rows `ld` elements apart (a head's rows inside a packed [B, T, 3H] array: ld = 3H).
 */
export interface GridOperand {
  data: Float32Array;
  offset: number;
  ld: number;
  step: readonly [number, number];
}

/** Throws unless every `rows` x `cols` block of `o` over `grid` lies inside its array (checked at the last entry). */
function checkInside(grid: readonly [number, number], o: GridOperand, rows: number, cols: number, name: string): void {
  const [n0, n1] = grid;
  const last = o.offset + (n0 - 1) * o.step[0] + (n1 - 1) * o.step[1] + (rows - 1) * o.ld + cols;
  if (o.offset < 0 || o.step[0] < 0 || o.step[1] < 0 || o.ld < cols || last > o.data.length) {
    throw new Error(`Cblas.gemmGrid: ${name}'s ${rows} x ${cols} blocks (offset ${o.offset}, ld ${o.ld}, steps ${o.step}) over a ${n0} x ${n1} grid end past its ${o.data.length} elements`);
  }
}

/** c = op(a) @ op(b) over a broadcast batch, and the element-wise adds of the host kernels (addRowVector, axpy), on the system's CBLAS. */
export class Cblas implements HostGemm {
  /** A row of ones for addRowVector, grown to the most rows asked. */
  private ones = new Float32Array(0);

  private constructor(private readonly lib: Library, readonly threads: number) {}

  /**
   * Loads koffi and the library (CBLAS_ENV's, else the first of LIBRARY_NAMES found); throws one line saying why
   * when either is missing. `threads` defaults to `defaultCblasThreads()`.
   */
  static load(threads: number = defaultCblasThreads()): Cblas {
    let koffi: Koffi;
    let koffiPath: string;
    try {
      const require = createRequire(import.meta.url);
      koffiPath = require.resolve('koffi');
      koffi = require(koffiPath) as Koffi;
    } catch (err) {
      throw new Error(`koffi did not load: ${firstLineOf(err)}`);
    }
    const count = Math.max(1, Math.floor(threads));
    const named = process.env[CBLAS_ENV];
    if (named !== undefined && named !== '') {
      try {
        return new Cblas(openLibrary(koffi, koffiPath, named), count);
      } catch (err) {
        throw new Error(`${CBLAS_ENV}=${named} did not load: ${firstLineOf(err)}`);
      }
    }
    const names = LIBRARY_NAMES[process.platform] ?? [];
    for (const name of names) {
      try {
        return new Cblas(openLibrary(koffi, koffiPath, name), count);
      } catch {
        // not installed, or no cblas_sgemm in it: try the next
      }
    }
    throw new Error(`no CBLAS library found (tried ${names.join(', ') || `none on ${process.platform}`}; ${CBLAS_ENV} names one)`);
  }

  get library(): string {
    return `CBLAS ${this.lib.version} (${this.lib.file})`;
  }

  /**
   * The thread count last set on the library (process-wide: by this Cblas or another on the same library), or
   * undefined before the first product, or where the library has no setter.
   */
  get librarySetThreads(): number | undefined {
    return this.lib.threads;
  }

  matMul(a: Float32Array, aShape: Shape3, transA: boolean, b: Float32Array, bShape: Shape3, transB: boolean, out: Float32Array): void {
    const [batch, M, N] = productDims(aShape, transA, bShape, transB);
    const [ba, ra, ca] = aShape;
    const [bb, rb, cb] = bShape;
    // The library reads and writes raw memory: every view must hold exactly its shape.
    if (a.length !== ba * ra * ca || b.length !== bb * rb * cb || out.length !== batch * M * N) {
      throw new Error(`Cblas: views of ${a.length}, ${b.length}, ${out.length} elements for [${aShape}] @ [${bShape}] -> [${batch}, ${M}, ${N}]`);
    }
    if (out.length === 0) return;
    const K = transA ? ra : ca;
    if (K === 0) {
      out.fill(0);
      return;
    }
    const lib = this.libraryWithThreads();
    const ta = transA ? TRANS : NO_TRANS;
    const tb = transB ? TRANS : NO_TRANS;
    if (batch === 1 && M === 1) {
      // a row (the leading-axis Sum's ones): out = op(b)^T a, a matrix-vector product (sgemm would pack all of b)
      lib.sgemv(ROW_MAJOR, transB ? NO_TRANS : TRANS, rb, cb, 1, b, cb, a, 1, 0, out, 1);
      return;
    }
    if (bb === 1 && !transA) {
      // a's entries are consecutive row blocks: [ba * M, K] @ [K, N] in one call
      lib.sgemm(ROW_MAJOR, ta, tb, ba * M, N, K, 1, a, ca, b, cb, 0, out, N);
      return;
    }
    const aStep = ba === 1 ? 0 : ra * ca;
    const bStep = bb === 1 ? 0 : rb * cb;
    for (let i = 0; i < batch; i++) {
      lib.sgemm(ROW_MAJOR, ta, tb, M, N, K, 1, a.subarray(i * aStep, i * aStep + ra * ca), ca,
        b.subarray(i * bStep, i * bStep + rb * cb), cb, 0, out.subarray(i * M * N, (i + 1) * M * N), N);
    }
  }

  /**
   * `out [rows, v.length] += v` on every row, in place: one `cblas_sger` (out += ones v^T) on the library's threads.
   * Each element gets v[c] * 1 (exact) added once in float32: the bits of `out[r * C + c] += v[c]`.
   */
  addRowVector(out: Float32Array, v: Float32Array): void {
    const C = v.length;
    const rows = C === 0 ? 0 : out.length / C;
    if (!Number.isInteger(rows)) throw new Error(`Cblas.addRowVector: ${out.length} elements are not rows of ${C}`);
    if (rows === 0) return;
    if (this.ones.length < rows) this.ones = new Float32Array(rows).fill(1);
    this.libraryWithThreads().sger(ROW_MAJOR, rows, C, 1, this.ones, 1, v, 1, out, C);
  }

  /**
   * `y += alpha x` in place (`cblas_saxpy`, on the library's threads for long arrays). With alpha 1 or -1 the
   * product is exact, so each element is one float32 add or subtract: the bits of y + x or y - x.
   */
  axpy(alpha: number, x: Float32Array, y: Float32Array): void {
    if (x.length !== y.length) throw new Error(`Cblas.axpy: x has ${x.length} elements, y ${y.length}`);
    if (x.length > 0) this.libraryWithThreads().saxpy(x.length, alpha, x, 1, y, 1);
  }

  /** The library, its thread count set to this Cblas's. */
  private libraryWithThreads(): Library {
    const lib = this.lib;
    if (lib.threads !== this.threads && lib.setThreads !== null) {
      lib.setThreads(this.threads);
      lib.threads = this.threads;
    }
    return lib;
  }

  /**
   * c(i, j) = alpha op(a(i, j)) op(b(i, j)) + beta c(i, j) for every entry (i, j) of a `grid` of strided blocks
   * (GridOperand), one sgemm each (beta 0: c is only written): op(a) is M x K (stored K x M where transA), op(b) K x N, c M x N, each block row-major with its
   * operand's ld. The blocks are read and written where they are, passed to the library as byte addresses (no view
   * object per call); every block of every entry must lie inside its array, checked once for the grid's last entry.
   * The entries are cut among this Cblas's threads (the caller and nativeThreads workers) where the library may be
   * called from two threads at once (concurrentCallsSafe), each product one single-threaded call: the bits do not
   * depend on the thread count.
   */
  gemmGrid(grid: readonly [number, number], transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    a: GridOperand, b: GridOperand, c: GridOperand, beta = 0): void {
    const [n0, n1] = grid;
    if (n0 * n1 * M * N === 0) return;
    checkInside(grid, a, transA ? K : M, transA ? M : K, 'a');
    checkInside(grid, b, transB ? N : K, transB ? K : N, 'b');
    checkInside(grid, c, M, N, 'c');
    if (K === 0) {
      for (let i = 0; i < n0; i++) for (let j = 0; j < n1; j++) for (let r = 0; r < M; r++) {
        const at = c.offset + i * c.step[0] + j * c.step[1] + r * c.ld;
        if (beta === 0) c.data.fill(0, at, at + N);
        else for (let e = at; e < at + N; e++) c.data[e] = Math.fround(c.data[e]! * beta);
      }
      return;
    }
    const lib = this.lib;
    const ta = transA ? TRANS : NO_TRANS;
    const tb = transB ? TRANS : NO_TRANS;
    // Byte addresses of the blocks: the arrays' memory stays put meanwhile (an ArrayBuffer's backing store does not
    // move; a small array V8 kept on its heap is moved off it when its address is taken), and nothing between the
    // calls allocates on the wasm heap.
    const bytes = Float32Array.BYTES_PER_ELEMENT;
    const [pa, pb, pc] = [a, b, c].map((o) => lib.address(o.data) + o.offset * bytes) as [number, number, number];
    const [a0, a1, b0, b1, c0, c1] = [a.step[0], a.step[1], b.step[0], b.step[1], c.step[0], c.step[1]].map((x) => x * bytes) as
      [number, number, number, number, number, number];
    const calls: ThreadCall<'sgemm'>[] = [];
    for (let i = 0; i < n0; i++) {
      for (let j = 0; j < n1; j++) {
        calls.push({ fn: 'sgemm', args: [ROW_MAJOR, ta, tb, M, N, K, alpha, pa + i * a0 + j * a1, a.ld, pb + i * b0 + j * b1, b.ld, beta, pc + i * c0 + j * c1, c.ld] });
      }
    }
    const run = lib.runSgemmAt;
    // Each product on the one thread that calls it (the library set to one thread; the next product sets it back), the
    // entries cut among this Cblas's threads: so the bits do not depend on the cut, and small products (the attention's
    // heads, which the library runs on one thread anyway) run on all cores.
    if (lib.setThreads !== null && lib.threads !== 1) {
      lib.setThreads(1);
      lib.threads = 1;
    }
    const threads = Math.min(this.threads, calls.length);
    const pool = threads > 1 && lib.concurrent ? this.gridThreads() : null;
    if (pool === null) {
      run(calls);
      return;
    }
    // runs of entries that the threads share (simdThreads.ts), as many rounds as a worker's job holds where there are
    // no more runs than threads
    const parts = sharedParts(Math.min(threads, pool.count));
    const round = parts > pool.count ? calls.length : parts * jobCallsMax(calls[0]!.args.length);
    for (let r = 0; r < calls.length; r += round) {
      const some = calls.slice(r, r + round);
      pool.run(splitRuns(some.length, parts).map(([s, e]) => some.slice(s, e)), run);
    }
  }

  /** Threads calling the library's cblas_sgemm (nativeThreads), or null where they did not start. */
  private gridThreads(): SimdThreads<'sgemm'> | null {
    return nativeThreads(this.lib.koffiPath, this.lib.file, { sgemm: SGEMM_AT });
  }

  /** A new array ([max(ba, bb), M, N]) with the product written straight into it. */
  matMulToArray(a: Float32Array, aShape: Shape3, transA: boolean, b: Float32Array, bShape: Shape3, transB: boolean): Float32Array {
    const [batch, M, N] = productDims(aShape, transA, bShape, transB);
    const out = uninitialized(Float32Array, batch * M * N); // every element written (beta 0; zeros where K is 0)
    this.matMul(a, aShape, transA, b, bShape, transB, out);
    return out;
  }

  /** Nothing to release: the library stays loaded for the process (a dynamic library is not unloaded safely). */
  dispose(): void {}
}
