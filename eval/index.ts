/** STS evaluation with the SentEval protocol: readers, metrics, runner and report. */
export { averageRanks, cosine, mean, pearson, spearman } from './metrics.js';
export {
  STS_YEARS,
  STS_YEAR_SUBSETS,
  STSB_SPLITS,
  SICK_SPLITS,
  normalizeSentence,
  readSickRelatedness,
  readStsBenchmark,
  readStsSubset,
  readStsYear,
  resolveSentevalRoot,
  type SickSplit,
  type StsbSplit,
  type StsPairs,
  type StsSubsetData,
  type StsYear,
} from './senteval.js';
export {
  ALL_TASKS_ALIAS,
  DEFAULT_EVAL_BATCH_SIZE,
  STS_TASK_INFO,
  STS_TASK_NAMES,
  STS_TEST_TASKS,
  evaluateSts,
  loadStsTask,
  loadStsTasks,
  parseStsTasks,
  stsbDevSpearman,
  type EvaluateStsOptions,
  type SentenceEncoder,
  type StsEvaluation,
  type StsSubsetResult,
  type StsTaskData,
  type StsTaskName,
  type StsTaskResult,
} from './sts.js';
export { formatStsDetail, formatStsTable, formatThroughput, stsReportJson, type StsReportJson, type StsTaskJson } from './report.js';
