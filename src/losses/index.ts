/** The training objectives: InfoNCE, attention mutual information, the training-only MLP head. */
export { infoNCE, cosineMatrix, INFONCE_DEFAULTS, type InfoNCEOptions } from './infoNCE.js';
export {
  attentionMutualInformation,
  drawSamplePositions,
  regroupAttention,
  ATTENTION_MI_DEFAULTS,
  type AttentionMIOptions,
  type AttentionMIResult,
} from './attentionMI.js';
export { MlpHead, MLP_HEAD_DEFAULTS, MLP_WEIGHT_NAME, MLP_BIAS_NAME, type MlpHeadOptions } from './mlpHead.js';
