/**
 * The project's own seeded pseudo-random number generator, so that subsets, shuffles and sampling are the same
 * bytes on every run and machine (never `Math.random`).
 *
 * Algorithm: xoshiro128** 1.1 (Blackman & Vigna, https://prng.di.unimi.it/xoshiro128starstar.c), a 32-bit
 * generator with 128 bits of state, computed with 32-bit integer operations only (`Math.imul`, shifts), so the
 * output does not depend on floating point. The four state words are filled from the seed with splitmix64
 * (https://prng.di.unimi.it/splitmix64.c, computed with BigInt, used only while seeding), as the xoshiro authors
 * recommend. The state is a plain JSON object (`RngState`) that can be saved in a checkpoint and restored exactly.
 */
import { UserError } from '../errors.js';

/** Name written into serialised states; a state of another algorithm is refused on restore. */
export const RNG_ALGORITHM = 'xoshiro128**/splitmix64';

/** A serialisable generator state: four unsigned 32-bit words. */
export interface RngState {
  algorithm: typeof RNG_ALGORITHM;
  s: [number, number, number, number];
}

const MASK64 = (1n << 64n) - 1n;
const TWO_POW_32 = 0x1_0000_0000;
const TWO_POW_53 = 2 ** 53;

/**
 * splitmix64: returns the next 64-bit output and the advanced 64-bit state. Exported for tests against the
 * published reference values.
 */
export function splitmix64(state: bigint): { value: bigint; state: bigint } {
  const next = (state + 0x9e3779b97f4a7c15n) & MASK64;
  let z = next;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  z = z ^ (z >> 31n);
  return { value: z, state: next };
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Checks that `seed` is a non-negative safe integer (what YAML configs and CLI flags give). */
export function checkSeed(seed: unknown, what = 'seed'): number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw new UserError(`${what} must be a non-negative integer, got ${JSON.stringify(seed)}`);
  }
  return seed;
}

/** A seeded xoshiro128** generator. Not thread-shared; copy with `clone()`. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  private constructor(s: readonly [number, number, number, number]) {
    [this.s0, this.s1, this.s2, this.s3] = s;
  }

  /** A generator seeded from a non-negative safe integer. */
  static fromSeed(seed: number): Rng {
    checkSeed(seed);
    let st = BigInt(seed);
    const words: number[] = [];
    for (let i = 0; i < 2; i++) {
      const r = splitmix64(st);
      st = r.state;
      words.push(Number(r.value & 0xffffffffn), Number(r.value >> 32n));
    }
    // The forbidden all-zero state cannot occur: splitmix64's output is a bijection of its state, so two
    // consecutive outputs (distinct states) are never both zero.
    return new Rng(words as [number, number, number, number]);
  }

  /** Restores a generator from `state()`; a malformed state is a UserError (e.g. a corrupt checkpoint). */
  static fromState(state: RngState): Rng {
    const s: unknown = state?.s;
    if (
      state?.algorithm !== RNG_ALGORITHM ||
      !Array.isArray(s) ||
      s.length !== 4 ||
      !s.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_POW_32) ||
      s.every((w) => w === 0)
    ) {
      throw new UserError(`invalid RNG state ${JSON.stringify(state)}: expected {algorithm: "${RNG_ALGORITHM}", s: [4 uint32]}`);
    }
    return new Rng(s as [number, number, number, number]);
  }

  /** The current state as a plain JSON object; `Rng.fromState(r.state())` continues the same sequence. */
  state(): RngState {
    return { algorithm: RNG_ALGORITHM, s: [this.s0, this.s1, this.s2, this.s3] };
  }

  /** An independent copy at the same position. */
  clone(): Rng {
    return new Rng([this.s0, this.s1, this.s2, this.s3]);
  }

  /** The next unsigned 32-bit integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A float in [0, 1) with 53 random bits (two draws). */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 2 ** 26 + lo) / TWO_POW_53;
  }

  /**
   * A uniform integer in [0, n), unbiased (rejection sampling). `n` is a positive safe integer; n <= 2^32 uses one
   * 32-bit draw per try, larger n uses 53-bit draws.
   */
  nextInt(n: number): number {
    if (!Number.isSafeInteger(n) || n <= 0) throw new RangeError(`nextInt: n must be a positive safe integer, got ${n}`);
    if (n <= TWO_POW_32) {
      const limit = TWO_POW_32 - (TWO_POW_32 % n); // largest multiple of n that fits
      for (;;) {
        const x = this.nextUint32();
        if (x < limit) return x % n;
      }
    }
    const limit = TWO_POW_53 - (TWO_POW_53 % n);
    for (;;) {
      const x = (this.nextUint32() >>> 5) * 2 ** 26 + (this.nextUint32() >>> 6);
      if (x < limit) return x % n;
    }
  }

  /** Shuffles `arr` in place (Fisher-Yates, from the end) and returns it. */
  shuffle<T>(arr: T[]): T[] {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = arr[i] as T;
      arr[i] = arr[j] as T;
      arr[j] = tmp;
    }
    return arr;
  }

  /** The permutation [0, n) shuffled with `shuffle`. */
  permutation(n: number): number[] {
    const p = new Array<number>(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }

  /**
   * `k` distinct integers drawn uniformly from [0, n) without replacement, in draw order: a partial Fisher-Yates
   * shuffle over a virtual identity array (O(k) memory): step i swaps position i with i + nextInt(n - i).
   */
  sampleWithoutReplacement(n: number, k: number): number[] {
    if (!Number.isSafeInteger(k) || k < 0 || k > n) throw new RangeError(`cannot draw ${k} of ${n} without replacement`);
    const swapped = new Map<number, number>();
    const out = new Array<number>(k);
    for (let i = 0; i < k; i++) {
      const j = i + this.nextInt(n - i);
      const vj = swapped.get(j) ?? j;
      const vi = swapped.get(i) ?? i;
      swapped.set(j, vi);
      swapped.delete(i);
      out[i] = vj;
    }
    return out;
  }
}
