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

/**
 * Why `[minLayer, maxLayer)` is not a valid AMI layer span, or null: integers, 0 <= minLayer < maxLayer (<= `depth`,
 * the model's layer count, where known), and an even count (the AMI pairs layers l and l + 2). `depthSource` names
 * where the layer count was read (a checkpoint's config.json, model.config), for the message.
 */
export function amiLayerSpanProblem(minLayer: number, maxLayer: number, depth?: number, depthSource?: string): string | null {
  if (!Number.isInteger(minLayer) || !Number.isInteger(maxLayer)) {
    return `objective.minLayer and objective.maxLayer must be integers; got ${minLayer} and ${maxLayer}`;
  }
  if (minLayer < 0 || minLayer >= maxLayer || (depth !== undefined && maxLayer > depth)) {
    const from = depthSource === undefined ? '' : `, num_hidden_layers in ${depthSource}`;
    const model = depth === undefined ? '' : ` <= ${depth} (the model has ${depth} layers${from}, numbered 0..${depth - 1}; maxLayer is one past the last)`;
    return `the AMI layer span [minLayer, maxLayer) = [${minLayer}, ${maxLayer}) must satisfy 0 <= minLayer < maxLayer${model}`;
  }
  const span = maxLayer - minLayer;
  if (span % 2 !== 0) {
    const fix = depth === undefined || maxLayer + 1 <= depth ? `maxLayer ${maxLayer + 1}` : `minLayer ${minLayer - 1}`;
    return `the AMI layer span [minLayer, maxLayer) = [${minLayer}, ${maxLayer}) selects ${span} layer(s), but the ` +
      `count must be even: the AMI pairs layers l and l+2 into one row per layer parity. Use e.g. ${fix} ` +
      '(the official runs use layers 7..10 of bert-base: minLayer 7, maxLayer 11)';
  }
  return null;
}
