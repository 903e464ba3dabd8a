/**
 * Run checkpoints. Each is a Hugging Face directory (config.json, model.safetensors, tokenizer files) that
 * `loadPretrained` and `micse embed` read as is, plus our training files beside it:
 *   mlp_head.safetensors  the training-only MLP head (mlp.dense.weight [out, in], mlp.dense.bias)
 *   optimizer.safetensors AdamW moments, `m/<param>` and `v/<param>`, by trainable variable (a layer's query, key
 *                         and value packed: `encoder.layer.N.attention.self.qkv.weight` [H, 3H], see bert.ts)
 *   trainer_state.json    step, epoch, data-iterator state, best score, counters
 * Writing is atomic: the directory is built under a temporary name and renamed, then the `last` (or `best`) link is
 * swapped by renaming a new symlink over it, so a kill at any moment leaves the previous checkpoint whole.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { BertTokenizer } from '../data/tokenizer.js';
import { ensureDir, exists, readJsonObject, writeFileAtomic } from '../fsutil.js';
import type { BertModel } from '../model/bert.js';
import { toHfConfig } from '../model/config.js';
import { readSafetensors, writeSafetensors, type HostTensor } from '../model/safetensors.js';
import { tf } from '../model/tf.js';
import type { AdamW } from './adamw.js';

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

/** Writes checkpoint `step-NNNNNN`, then moves the links; removes checkpoints no link points to. */
export async function saveCheckpoint(a: SaveArgs): Promise<string> {
  const name = `step-${String(a.state.step).padStart(6, '0')}`;
  const rel = path.join(CHECKPOINTS_DIR, name);
  const final = path.join(a.runDir, rel);
  if (!(await exists(final))) {
    const tmp = `${final}.tmp-${process.pid}`;
    await fs.rm(tmp, { recursive: true, force: true });
    await ensureDir(tmp);
    try {
      await writeFileAtomic(path.join(tmp, 'config.json'), JSON.stringify(toHfConfig(a.model.config), null, 2) + '\n');
      await writeSafetensors(path.join(tmp, 'model.safetensors'), await a.model.exportTensors());
      await a.tokenizer.saveTo(tmp);
      await writeSafetensors(path.join(tmp, HEAD_FILE), await hostTensors(Object.entries(a.head.namedWeights())));
      const moments: [string, tf.Variable][] = [
        ...[...a.optimizer.m.entries()].map(([k, v]): [string, tf.Variable] => [`m/${k}`, v]),
        ...[...a.optimizer.v.entries()].map(([k, v]): [string, tf.Variable] => [`v/${k}`, v]),
      ];
      await writeSafetensors(path.join(tmp, OPTIMIZER_FILE), await hostTensors(moments), { format: 'micse-adamw', step: String(a.optimizer.step) });
      await writeFileAtomic(path.join(tmp, STATE_FILE), JSON.stringify(a.state, null, 2) + '\n');
      await fs.rename(tmp, final);
    } catch (err) {
      // A full disk must not stay full of a half-written checkpoint.
      await fs.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }
  for (const link of a.links) await swapLink(path.join(a.runDir, link), rel);
  await pruneCheckpoints(a.runDir);
  return final;
}

/** Removes checkpoint folders (and stale temporaries) that neither `last` nor `best` points to. */
async function pruneCheckpoints(runDir: string): Promise<void> {
  const keep = new Set<string>();
  for (const link of ['last', 'best']) {
    const target = await fs.readlink(path.join(runDir, link)).catch(() => null);
    if (target !== null) keep.add(path.basename(target));
  }
  const dir = path.join(runDir, CHECKPOINTS_DIR);
  for (const entry of await fs.readdir(dir).catch(() => [] as string[])) {
    if (!keep.has(entry)) await fs.rm(path.join(dir, entry), { recursive: true, force: true });
  }
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
