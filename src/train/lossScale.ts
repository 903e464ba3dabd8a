/**
 * Dynamic loss scaling for `train.precision: mixed`, as PyTorch's GradScaler (torch/amp/grad_scaler.py, its
 * update rule `_amp_update_scale_`): the step differentiates loss x scale, so that gradients too small for float16
 * do not flush to zero in the float16 products, then multiplies every gradient by 1 / scale before clipping and
 * the update. A step whose gradients hold an infinity or NaN (the scaled values overflowed float16) makes no update,
 * and the scale is multiplied by `backoffFactor`; after `growthInterval` steps in a row without one it is multiplied
 * by `growthFactor`. GradScaler's defaults: initial scale 2^16, growth 2, backoff 0.5, interval 2000 (the first
 * and the last are train.lossScale and train.lossScaleGrowthInterval, src/train/config.ts).
 *
 * With the scale a power of two (the factors keep it one), scaling and unscaling are exact in floating point wherever
 * no value overflows or falls below float32's normal range, so with float32 products the update is the one an
 * unscaled step makes, bit for bit (test/loss-scale.test.ts).
 */

/** GradScaler's growth and backoff factors. */
export const GROWTH_FACTOR = 2;
export const BACKOFF_FACTOR = 0.5;

/** What a resumed run restores. */
export interface LossScalerState {
  scale: number;
  /** Steps without an overflow since the scale last changed. */
  goodSteps: number;
}

export class LossScaler {
  scale: number;
  goodSteps = 0;

  constructor(readonly growthInterval: number, initialScale: number, state?: LossScalerState) {
    this.scale = state?.scale ?? initialScale;
    if (state !== undefined) this.goodSteps = state.goodSteps;
  }

  /** After a step: `finite` is whether its unscaled gradients (and so the update) were all finite. */
  update(finite: boolean): void {
    if (!finite) {
      this.scale *= BACKOFF_FACTOR;
      this.goodSteps = 0;
      return;
    }
    this.goodSteps += 1;
    if (this.goodSteps >= this.growthInterval) {
      this.scale *= GROWTH_FACTOR;
      this.goodSteps = 0;
    }
  }

  state(): LossScalerState {
    return { scale: this.scale, goodSteps: this.goodSteps };
  }
}
