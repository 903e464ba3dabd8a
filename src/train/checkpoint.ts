/**
 * Run checkpoints. Each is a Hugging Face directory (config.json, model.safetensors, tokenizer files) that
 * `loadPretrained` and `micse embed` read as is, plus our training files beside it:
 *   mlp_head.safetensors  the training-only MLP head (mlp.dense.weight [out, in], mlp.dense.bias)
 *   optimizer.safetensors AdamW moments, `m/<param>` and `v/<param>`, by trainable variable (a layer's query, key
 *                         and value packed: `encoder.layer.N.attention.self.qkv.weight` [H, 3H], see bert.ts)
 *   trainer_state.json    step, epoch, data-iterator state, best score, counters
 * Writing is atomic: the directory is built under a temporary name and renamed, then the `last` (and `best`) link
 * is swapped by renaming a new symlink over it, so a kill at any moment leaves the previous checkpoint whole. `last`
 * moves first, and its trainer_state.json names the best step, so a kill between the two link renames is repaired
 * on resume (`recoverRunDir`) before anything is pruned.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { BertTokenizer } from '../data/tokenizer.js';
import { UserError } from '../errors.js';
import { faultPoint } from '../faultPoints.js';
import { ensureDir, exists, readJsonObject, temporaryOwner, writeFileAtomic } from '../fsutil.js';
import type { BertModel } from '../model/bert.js';
import { toHfConfig } from '../model/config.js';
import { readSafetensors, writeSafetensors, type HostTensor } from '../model/safetensors.js';
import { tf } from '../model/tf.js';
import type { AdamW } from './adamw.js';
import type { LossScalerState } from './lossScale.js';

export const CHECKPOINTS_DIR = 'checkpoints';
export const HEAD_FILE = 'mlp_head.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'trainer_state.json';

export interface TrainerState {
  step: number;
  totalSteps: number;
  epoch: number;
  /** Opaque, JSON-serialisable state of the data iterator. */
  data: unknown;
  bestScore: number | null;
  bestStep: number | null;
  badStepsInRow: number;
  badStepsTotal: number;
  /** Wall-clock seconds of training so far (for throughput across resumes). */
  elapsedSeconds: number;
  /** train.precision mixed: the loss scaler's state (lossScale.ts); absent otherwise. */
  lossScale?: LossScalerState;
}

async function hostTensors(vars: Iterable<[string, tf.Variable]>): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, v] of vars) out.set(name, { shape: v.shape, data: Float32Array.from((await v.data()) as Float32Array) });
  return out;
}

/** Points `link` at `target` (relative) by renaming a fresh symlink over it: atomic on POSIX. */
async function swapLink(link: string, target: string): Promise<void> {
  const tmp = `${link}.tmp-${process.pid}`;
  await fs.rm(tmp, { force: true });
  await fs.symlink(target, tmp, 'dir');
  faultPoint('link:before-rename');
  await fs.rename(tmp, link);
}

export interface SaveArgs {
  runDir: string;
  model: BertModel;
  tokenizer: BertTokenizer;
  head: { namedWeights(): Record<string, tf.Variable> };
  optimizer: AdamW;
  state: TrainerState;
  /** Which links point here afterwards. */
  links: ('last' | 'best')[];
}

/** The checkpoint folder of `step`, relative to the run directory. */
export function checkpointPath(step: number): string {
  return path.join(CHECKPOINTS_DIR, `step-${String(step).padStart(6, '0')}`);
}

/**
 * Writes checkpoint `step-NNNNNN`, then moves the links (`last` before `best`); removes checkpoints no link points
 * to. A folder of that step that a link already points to is kept as published; one no link points to was left by
 * a killed process and is replaced.
 */
export async function saveCheckpoint(a: SaveArgs): Promise<string> {
  const rel = checkpointPath(a.state.step);
  const final = path.join(a.runDir, rel);
  if (!(await linkedCheckpoints(a.runDir)).has(path.basename(rel))) {
    const tmp = `${final}.tmp-${process.pid}`;
    await fs.rm(tmp, { recursive: true, force: true });
    await ensureDir(tmp);
    faultPoint('checkpoint:dir-created');
    try {
      await writeFileAtomic(path.join(tmp, 'config.json'), JSON.stringify(toHfConfig(a.model.config), null, 2) + '\n');
      await writeSafetensors(path.join(tmp, 'model.safetensors'), await a.model.exportTensors());
      faultPoint('checkpoint:model-written');
      await a.tokenizer.saveTo(tmp);
      await writeSafetensors(path.join(tmp, HEAD_FILE), await hostTensors(Object.entries(a.head.namedWeights())));
      faultPoint('checkpoint:head-written');
      const moments: [string, tf.Variable][] = [
        ...[...a.optimizer.m.entries()].map(([k, v]): [string, tf.Variable] => [`m/${k}`, v]),
        ...[...a.optimizer.v.entries()].map(([k, v]): [string, tf.Variable] => [`v/${k}`, v]),
      ];
      await writeSafetensors(path.join(tmp, OPTIMIZER_FILE), await hostTensors(moments), { format: 'micse-adamw', step: String(a.optimizer.step) });
      faultPoint('checkpoint:optimizer-written');
      await writeFileAtomic(path.join(tmp, STATE_FILE), JSON.stringify(a.state, null, 2) + '\n');
      faultPoint('checkpoint:before-rename');
      await fs.rm(final, { recursive: true, force: true });
      await fs.rename(tmp, final);
    } catch (err) {
      // A full disk must not stay full of a half-written checkpoint.
      await fs.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
    faultPoint('checkpoint:after-rename');
  }
  for (const [i, link] of a.links.entries()) {
    if (i > 0) faultPoint('checkpoint:between-links');
    await swapLink(path.join(a.runDir, link), rel);
  }
  faultPoint('checkpoint:before-prune');
  await pruneCheckpoints(a.runDir);
  return final;
}

/** The checkpoint folder names `last` and `best` point to. */
async function linkedCheckpoints(runDir: string): Promise<Set<string>> {
  const linked = new Set<string>();
  for (const link of ['last', 'best']) {
    const target = await fs.readlink(path.join(runDir, link)).catch(() => null);
    if (target !== null) linked.add(path.basename(target));
  }
  return linked;
}

/** Removes checkpoint folders (and stale temporaries) that neither `last` nor `best` points to. */
async function pruneCheckpoints(runDir: string): Promise<void> {
  const keep = await linkedCheckpoints(runDir);
  const dir = path.join(runDir, CHECKPOINTS_DIR);
  for (const entry of await fs.readdir(dir).catch(() => [] as string[])) {
    if (!keep.has(entry)) await fs.rm(path.join(dir, entry), { recursive: true, force: true });
  }
}

/** Removes the temporaries (`*.tmp-PID...`: link and file swaps) a killed process left in the run directory. */
async function removeTemporaries(runDir: string): Promise<void> {
  for (const entry of await fs.readdir(runDir)) {
    if (temporaryOwner(entry) !== null) await fs.rm(path.join(runDir, entry), { recursive: true, force: true });
  }
}

/**
 * Makes a run directory consistent after a kill, before a resumed run writes anything: points `best` at the step
 * that `state` (read from `last`) names as best, removes temporaries, then prunes checkpoints neither link points
 * to. The caller holds the run's lock, so every temporary there belongs to a dead process.
 */
export async function recoverRunDir(runDir: string, state: TrainerState): Promise<void> {
  if (state.bestStep !== null) {
    const rel = checkpointPath(state.bestStep);
    const current = await fs.readlink(path.join(runDir, 'best')).catch(() => null);
    if (current !== rel) {
      if (!(await exists(path.join(runDir, rel, STATE_FILE)))) {
        throw new UserError(`${path.join(runDir, rel)}: missing, but ${path.join(runDir, 'last', STATE_FILE)} names step ${state.bestStep} ` +
          'as the best checkpoint; the run cannot be resumed without it');
      }
      await swapLink(path.join(runDir, 'best'), rel);
    }
  }
  await removeTemporaries(runDir);
  await pruneCheckpoints(runDir);
}

/**
 * Clears what a fresh run replaces in its directory: checkpoints, temporaries and `files` (metrics) a run that died
 * before its first published checkpoint left behind. The caller has checked that no `last` or `best` exists.
 */
export async function clearUnpublishedRun(runDir: string, files: readonly string[]): Promise<void> {
  await removeTemporaries(runDir);
  for (const f of [CHECKPOINTS_DIR, ...files]) await fs.rm(path.join(runDir, f), { recursive: true, force: true });
}

export interface LoadedTrainingState {
  dir: string;
  state: TrainerState;
  head: Map<string, HostTensor>;
  moments: Map<string, HostTensor>;
  optimizerStep: number;
}

/** Reads the training files of the checkpoint `runDir/last` (the model itself is read by loadPretrained). */
export async function readTrainingState(runDir: string): Promise<LoadedTrainingState | null> {
  const dir = path.join(runDir, 'last');
  if (!(await exists(path.join(dir, STATE_FILE)))) return null;
  const state = (await readJsonObject(path.join(dir, STATE_FILE))) as unknown as TrainerState;
  const head = (await readSafetensors(path.join(dir, HEAD_FILE))).tensors;
  const opt = await readSafetensors(path.join(dir, OPTIMIZER_FILE));
  return { dir, state, head, moments: opt.tensors, optimizerStep: Number(opt.metadata['step'] ?? state.step) };
}
