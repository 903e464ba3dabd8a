/**
 * The names of the TF.js backends src/model/backend.ts selects from, in a module of their own that loads no TF.js:
 * the CLI's --backend flags and the training config's train.backend key name them.
 */
export const BACKEND_NAMES = ['auto', 'tensorflow-gpu', 'tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
