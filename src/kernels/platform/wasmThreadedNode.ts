/**
 * tfjs-backend-wasm's threaded SIMD build under Node. The package turns threads off in Node
 * (WASM_HAS_MULTITHREAD_SUPPORT is false there: tensorflow/tfjs#3830) because its Emscripten pthread workers are
 * loaded from Blob URLs, which Node's Worker cannot start. Its worker script does run under Node's worker_threads
 * (it has an ENVIRONMENT_IS_NODE branch), so while the backend initializes, the two scripts the package makes into
 * Blobs (the pthread worker and the module factory it imports) are written to a private temporary folder and their
 * paths handed out instead of Blob URLs (the globals Blob and URL.createObjectURL are wrapped for that call only).
 *
 * Why: the threaded build's heap is a SharedArrayBuffer, so the host SIMD loops (hostSimd.ts) run on it from worker
 * threads too (simdThreads.ts), in place; the unthreaded build's heap is private to the main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { tf } from '../../model/tf.js';

/** The factory script's marker (its Blob starts with it) and the modules its Node branch takes from the bundle's scope. */
const FACTORY_PREFIX = 'var WasmBackendModuleThreadedSimd';
const FACTORY_SCOPE = "var require$$0 = require('fs'), require$$1 = require('path'), require$$3 = require('perf_hooks'), require$$4 = require('os'), commonjsGlobal = globalThis;\n";

/** Runs `activate` (the wasm backend's first initialization) with the threaded build made loadable under Node. */
export async function withThreadedWasm<T>(activate: () => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'micse-wasm-threads-'));
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const factoryPath = path.join(dir, 'factory.cjs');
  const texts = new WeakMap<Blob, string>();
  const RealBlob = globalThis.Blob;
  const realCreateObjectURL = URL.createObjectURL;
  class RecordingBlob extends RealBlob {
    constructor(parts?: BlobPart[], options?: BlobPropertyBag) {
      super(parts, options);
      const text = (parts ?? []).every((p) => typeof p === 'string') ? (parts as string[]).join('') : null;
      if (text === null) return;
      texts.set(this, text);
      if (text.startsWith(FACTORY_PREFIX)) fs.writeFileSync(factoryPath, FACTORY_SCOPE + text);
    }
  }
  globalThis.Blob = RecordingBlob;
  URL.createObjectURL = (blob: Blob): string => {
    const text = texts.get(blob);
    if (text === undefined) return realCreateObjectURL(blob);
    // The pthread worker: it imports the factory through URL.createObjectURL(blob) too, so there it returns the path.
    const file = path.join(dir, 'pthread-worker.cjs');
    fs.writeFileSync(file, `URL.createObjectURL = () => ${JSON.stringify(factoryPath)}; URL.revokeObjectURL = () => {};\n${text}`);
    return file;
  };
  // The factory sets the global Worker to worker_threads' for its pthreads; they get no execArgv of this process
  // (`--input-type`, `--import` hooks: meant for the main script, they stop a worker's CommonJS file).
  class PthreadWorker extends Worker {
    constructor(file: string | URL, options?: WorkerOptions) {
      super(file, { ...options, execArgv: [] });
    }
  }
  Object.defineProperty(globalThis, 'Worker', { configurable: true, get: () => PthreadWorker, set: () => undefined });
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  try {
    return await activate();
  } catch (err) {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    throw err;
  } finally {
    globalThis.Blob = RealBlob;
    URL.createObjectURL = realCreateObjectURL;
    Object.defineProperty(globalThis, 'Worker', { configurable: true, writable: true, value: PthreadWorker }); // as the factory leaves it
  }
}
