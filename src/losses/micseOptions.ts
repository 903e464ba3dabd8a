/**
 * The choices of the miCSE objective's keys (style, views, pooler) and the check of its AMI layer span, in a module
 * of their own that loads no TF.js: the training config (src/train/config.ts) validates a file's objective section
 * with them, and src/losses/micse.ts a batch's.
 */

export const MICSE_STYLES = ['micse', 'simcse'] as const;
export type MicseStyle = (typeof MICSE_STYLES)[number];
export const MICSE_VIEWS = ['interleaved', 'separate'] as const;
export type MicseViews = (typeof MICSE_VIEWS)[number];
export const TRAIN_POOLERS = ['cls', 'cls_before_pooler'] as const;
export type TrainPooler = (typeof TRAIN_POOLERS)[number];

/** A problem of an AMI layer span: its message, and whether it is the model's depth (a span fine in itself, past it). */
export interface AmiLayerSpanProblem {
  message: string;
  depth: boolean;
}

/**
 * Why `[minLayer, maxLayer)` is not a valid AMI layer span, or null: integers, 0 <= minLayer < maxLayer (<= `depth`,
 * the model's layer count, where known), and an even count (the AMI pairs layers l and l + 2), checked in that order,
 * so that a span past the model's layers is said before an odd count. `depthSource` names where the layer count was
 * read (a checkpoint's config.json, model.config), for the message.
 */
export function amiLayerSpanProblem(minLayer: number, maxLayer: number, depth?: number, depthSource?: string): string | null {
  return amiLayerSpanCheck(minLayer, maxLayer, depth, depthSource)?.message ?? null;
}

/** amiLayerSpanProblem's check, saying too whether the problem is the model's depth (for the places a message names). */
export function amiLayerSpanCheck(minLayer: number, maxLayer: number, depth?: number, depthSource?: string): AmiLayerSpanProblem | null {
  if (!Number.isInteger(minLayer) || !Number.isInteger(maxLayer)) {
    return { message: `objective.minLayer and objective.maxLayer must be integers; got ${minLayer} and ${maxLayer}`, depth: false };
  }
  const inOrder = minLayer >= 0 && minLayer < maxLayer;
  if (!inOrder || (depth !== undefined && maxLayer > depth)) {
    const from = depthSource === undefined ? '' : `, num_hidden_layers in ${depthSource}`;
    const model = depth === undefined ? '' : ` <= ${depth} (the model has ${depth} layers${from}, numbered 0..${depth - 1}; maxLayer is one past the last)`;
    return { message: `the AMI layer span [minLayer, maxLayer) = [${minLayer}, ${maxLayer}) must satisfy 0 <= minLayer < maxLayer${model}`, depth: inOrder };
  }
  const span = maxLayer - minLayer;
  if (span % 2 !== 0) {
    const fix = evenSpanFix(minLayer, maxLayer, depth);
    return {
      message: `the AMI layer span [minLayer, maxLayer) = [${minLayer}, ${maxLayer}) selects ${span} layer(s), but the ` +
        'count must be even: the AMI pairs layers l and l+2 into one row per layer parity. ' +
        (fix === null ? `A model of ${depth} layer has no such span (objective.style simcse uses none)` : `Use e.g. ${fix}`) +
        ' (the official runs use layers 7..10 of bert-base: minLayer 7, maxLayer 11)',
      depth: false,
    };
  }
  return null;
}

/**
 * A one-layer change that makes the odd span `[minLayer, maxLayer)` even, for the message: one layer more above when
 * `depth` (the model's layer count) is known and has it, else one more below, else one fewer above; these keep
 * within any depth that holds the span. Only `[0, 1)` has none of those: one more above where the depth is not
 * known, null for a one-layer model (no even span fits).
 */
function evenSpanFix(minLayer: number, maxLayer: number, depth: number | undefined): string | null {
  if (depth !== undefined && maxLayer < depth) return `maxLayer ${maxLayer + 1}`;
  if (minLayer > 0) return `minLayer ${minLayer - 1}`;
  if (maxLayer - minLayer > 1) return `maxLayer ${maxLayer - 1}`;
  return depth === undefined ? `maxLayer ${maxLayer + 1}` : null;
}
