/** The training objectives: InfoNCE, attention mutual information, the training-only MLP head, the miCSE loss. */
export { infoNCE, cosineMatrix, INFONCE_EPS, type InfoNCEOptions } from './infoNCE.js';
export {
  attentionMutualInformation,
  drawSamplePositions,
  regroupAttention,
  ATTENTION_MI_DEFAULTS,
  type AttentionMIOptions,
  type AttentionMIResult,
} from './attentionMI.js';
export { detached } from '../model/tf.js';
export { MlpHead, MLP_HEAD_DEFAULTS, MLP_WEIGHT_NAME, MLP_BIAS_NAME, type MlpHeadOptions } from './mlpHead.js';
export {
  micseLoss,
  checkMicseConfig,
  type MicseBatch,
  type MicseConfig,
  type MicseEncoder,
  type MicseLossResult,
  type MicseObjective,
} from './micse.js';
export {
  amiLayerSpanProblem, MICSE_STYLES, MICSE_VIEWS, TRAIN_POOLERS, type MicseStyle, type MicseViews, type TrainPooler,
} from './micseOptions.js';
