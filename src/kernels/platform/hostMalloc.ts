/**
 * The C heap under the cpu backend's arrays. Node allocates a typed array's memory with calloc (this project's
 * kernel outputs with malloc: hostBackend.ts `uninitialized`), and glibc serves a
 * block above its mmap threshold (128 KB, raised as large blocks are freed, at most 32 MB) with a fresh mmap: the
 * kernel zero-fills each 4 KB page at its first touch (a page fault) and unmaps the block when it is freed. A
 * BERT-base cpu step makes and frees gigabytes of such arrays ([4096, 3072] floats are 50 MB): about 2 million
 * page faults, ~3.6 s of system time a step on one core (bench/README.md). With mmap off (M_MMAP_MAX 0) and the
 * heap's free top kept up to 2 GB (M_TRIM_THRESHOLD), freed blocks stay in the process and are reused (calloc
 * zeroing them with memset, far cheaper than faulting fresh pages).
 * The cost: memory freed is kept for reuse instead of going back to the system, so the resident size stays near its
 * peak (a BERT-base step's ~10 GB) until `releaseFreedHostMemory`; the bench calls it before starting PyTorch beside
 * it (without, the pair ran out of memory on a 24 GB machine). Set for the whole process, when the cpu backend is
 * selected, through libc.ts (glibc through koffi); elsewhere (musl, macOS, Windows, a browser, koffi missing) nothing
 * changes. `MICSE_HOST_MALLOC=0` leaves glibc's defaults.
 */
import { firstLineOf } from '../../errors.js';
import { libcFunction } from './libc.js';

export const HOST_MALLOC_ENV = 'MICSE_HOST_MALLOC';

/** glibc's mallopt parameters (malloc.h). */
const M_TRIM_THRESHOLD = -1;
const M_MMAP_MAX = -4;
/** The largest value mallopt takes (a C int): 2 GB of free heap top kept. */
const TRIM_KEEP_BYTES = 2 ** 31 - 1;

let outcome: string | undefined;
/** glibc's malloc_trim, where keepFreedHostMemory set the heap up. */
let mallocTrim: ((pad: number) => number) | undefined;

/**
 * Keeps freed blocks of the C heap in the process (see the module comment), once per process; returns what the heap
 * does, for logs.
 */
export function keepFreedHostMemory(): string {
  if (outcome !== undefined) return outcome;
  if (process.env[HOST_MALLOC_ENV] === '0') return (outcome = `the C library's defaults (${HOST_MALLOC_ENV}=0)`);
  try {
    const mallopt = libcFunction('int mallopt(int param, int value)');
    const trim = libcFunction('int malloc_trim(size_t pad)');
    if (mallopt(M_MMAP_MAX, 0) !== 1 || mallopt(M_TRIM_THRESHOLD, TRIM_KEEP_BYTES) !== 1) throw new Error('mallopt refused');
    mallocTrim = trim;
    return (outcome = `freed blocks kept for reuse (glibc mallopt: no mmap, 2 GB trim threshold; ${HOST_MALLOC_ENV}=0 to leave)`);
  } catch (err) {
    return (outcome = `the C library's defaults (${firstLineOf(err)})`);
  }
}

/** What keepFreedHostMemory did, or null before it ran. */
export function hostMallocState(): string | null {
  return outcome ?? null;
}

/**
 * Gives the C heap's free memory back to the system now (glibc malloc_trim), where keepFreedHostMemory kept it;
 * arrays not yet collected by V8 stay. Nothing elsewhere.
 */
export function releaseFreedHostMemory(): void {
  mallocTrim?.(0);
}
