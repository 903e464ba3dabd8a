/** Whether this is Node (process, worker_threads, native modules, the environment); a page has none of them. */
export const IS_NODE = typeof process !== 'undefined' && process.versions?.node !== undefined;
