/**
 * When the trainer evaluates STS-B dev, which evaluations may become the best checkpoint, and when it writes a
 * checkpoint (`train.selection`):
 * - `every-eval`: every `evalSteps` steps and at the last step; every evaluation is a candidate.
 * - `hf-save-steps`: transformers 4.22's Trainer as the miCSE and SimCSE code drive it. Its DefaultFlowCallback
 *   sets should_evaluate at multiples of eval_steps and should_save at multiples of save_steps (nothing at the last
 *   step; saving there came in 2024, transformers PR #30160); `_maybe_log_save_evaluate` evaluates first and passes that
 *   evaluation's metrics to `_save_checkpoint`, or none when the step evaluated nothing, and the authors'
 *   CLTrainer._save_checkpoint updates the best model only when it has metrics. So a candidate is an evaluation
 *   at a multiple of both evalSteps and saveSteps; other evaluations are logged only. The last step writes a
 *   checkpoint (`last`, for resume and export) without evaluating, unless it is an evaluation step.
 */

/** Optimisation steps: train.maxSteps, else epochs x steps per epoch (transformers: ceil(epochs x steps per epoch)). */
export function totalStepsOf(c: { train: { maxSteps: number | null; epochs: number } }, perEpoch: number): number {
  return c.train.maxSteps ?? c.train.epochs * perEpoch;
}

/** How the best checkpoint is chosen. */
export const SELECTIONS = ['every-eval', 'hf-save-steps'] as const;
export type Selection = (typeof SELECTIONS)[number];

/** The train.* keys the schedule depends on. */
export interface ScheduleKeys {
  evalSteps: number;
  selection: Selection;
  saveSteps: number;
}

/** What happens after optimisation step `step` (1-based). */
export interface StepActions {
  /** Score STS-B dev. */
  evaluate: boolean;
  /** The evaluation may become the best checkpoint. */
  candidate: boolean;
  /** Write a checkpoint (`last`). */
  checkpoint: boolean;
}

export function actionsAt(step: number, totalSteps: number, k: ScheduleKeys): StepActions {
  const last = step === totalSteps;
  if (k.selection === 'every-eval') {
    const evaluate = step % k.evalSteps === 0 || last;
    return { evaluate, candidate: evaluate, checkpoint: evaluate };
  }
  const evaluate = step % k.evalSteps === 0;
  return { evaluate, candidate: evaluate && step % k.saveSteps === 0, checkpoint: evaluate || last };
}

/** The steps of 1..totalSteps where `actionsAt` evaluates, and those where it selects. */
export function scheduleOf(totalSteps: number, k: ScheduleKeys): { evaluations: number[]; candidates: number[] } {
  const evaluations: number[] = [];
  const candidates: number[] = [];
  const visit = (step: number) => {
    const a = actionsAt(step, totalSteps, k);
    if (a.evaluate) evaluations.push(step);
    if (a.candidate) candidates.push(step);
  };
  for (let s = k.evalSteps; s <= totalSteps; s += k.evalSteps) visit(s);
  if (totalSteps % k.evalSteps !== 0) visit(totalSteps);
  return { evaluations, candidates };
}
