/**
 * The values of a training step that change from step to step, each with how it is computed from the step's roots,
 * logged while a step is recorded for replay (webgpu.ts beside).
 *
 * A step's GPU commands are the same every step of one batch shape but for a few numbers: the batch itself and what
 * the host computes from the step's roots (dropout and AMI seeds, learning rate, AdamW's step count) and writes into
 * uniform buffers: the dropout generator's round keys (kernels/dropout seedKeys, from site seeds that model/bert.ts
 * siteSeed mixes from the step's seeds), AdamW's step size, bias correction and decay (train/adamw.ts), and with a
 * loss scaler the scale and its reciprocal, uploaded as scalars (train/step.ts). Those
 * places note each value here with a formula from the roots and a key naming the derivation (`k1(s(dropoutSeed,3))`),
 * so that a replay can compute the next step's words without running the step's JavaScript. A value derived from
 * one that is not logged (a seed the caller gave, not a root) is not noted: its words then differ between steps
 * without an explanation, and the step is not replayed.
 */

/** What a step's per-step values are computed from. */
export interface StepRoots {
  dropoutSeed: number;
  amiSeed: number;
  lr: number;
  /** AdamW's step count after this step's update (1 at the first update). */
  t: number;
  /** The loss scale the step differentiates loss x lossScale at (train/lossScale.ts; 1 without a loss scaler). */
  lossScale: number;
}

/** How a value reaches the GPU: as a 32-bit unsigned integer or a float32 word; null: only as the source of others. */
export type WordKind = 'u32' | 'f32' | null;

export interface StepValue {
  /** Names the derivation, so that two steps' logs pair their values and one value reached two ways is told apart. */
  key: string;
  value: number;
  kind: WordKind;
  formula: (r: StepRoots) => number;
}

let log: StepValue[] | null = null;

/** Starts a log of the step whose roots are `roots` (its root seeds noted first). */
export function beginStepValues(roots: StepRoots): void {
  log = [
    { key: 'dropoutSeed', value: roots.dropoutSeed, kind: null, formula: (r) => r.dropoutSeed },
    { key: 'amiSeed', value: roots.amiSeed, kind: null, formula: (r) => r.amiSeed },
  ];
}

/** Ends the log and returns it (empty when none was begun). */
export function endStepValues(): StepValue[] {
  const l = log ?? [];
  log = null;
  return l;
}

/** True while a step is being logged (the noting places skip their work otherwise). */
export function loggingStepValues(): boolean {
  return log !== null;
}

/** Notes a per-step value; a no-op when no step is being logged. */
export function noteStepValue(key: string, value: number, kind: WordKind, formula: (r: StepRoots) => number): void {
  if (log !== null) log.push({ key, value, kind, formula });
}

/** The logged value equal to `value` when all such values share one key (one derivation), else undefined. */
export function stepValueOf(value: number): StepValue | undefined {
  if (log === null) return undefined;
  let found: StepValue | undefined;
  for (const e of log) {
    if (e.value !== value) continue;
    if (found !== undefined && found.key !== e.key) return undefined;
    found ??= e;
  }
  return found;
}

/** A value's word as a replay compares and writes it. */
export function wordOf(kind: 'u32' | 'f32', value: number): number {
  if (kind === 'u32') return value >>> 0;
  F32[0] = value;
  return U32[0]!;
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);
