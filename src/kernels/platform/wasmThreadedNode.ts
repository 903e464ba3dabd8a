/**
 * tfjs-backend-wasm's threaded SIMD build under Node, for its heap alone: a shared WebAssembly.Memory, so the host
 * SIMD loops (hostSimd.ts) run on it from worker threads too (simdThreads.ts), in place; the unthreaded build's heap
 * is private to the main thread.
 *
 * The package turns threads off in Node (WASM_HAS_MULTITHREAD_SUPPORT is false there: tensorflow/tfjs#3830): its
 * Emscripten pthread workers load from Blob URLs, which Node's Worker cannot start. None is needed here: XNNPACK runs
 * on one thread (the caller sets tfjs-backend-wasm's threads count to 1 before this; under Node the cores go to the
 * native SGEMM and the split loops), so no pthread is ever started. Emscripten still fills a pool of eight workers at
 * start and waits until each reports it has loaded the module; while the backend initializes, the global Worker
 * it takes is NoPthreadWorker, which answers that at once and refuses to run a thread. That spares eight idle V8
 * isolates and their threads, and nothing at start depends on a worker thread starting.
 */
import { tf } from '../../model/tf.js';

/**
 * Stands in for a pthread pool worker: Emscripten's main thread posts it {cmd: 'load'} and waits for {cmd: 'loaded'}
 * (a 'message' event, as from a worker_threads Worker); any other command would start a thread, and is refused.
 */
class NoPthreadWorker {
  readonly #messageListeners: ((data: unknown) => void)[] = [];
  on(event: string, listener: (data: unknown) => void): this {
    if (event === 'message') this.#messageListeners.push(listener);
    return this;
  }
  postMessage(message: { cmd?: unknown }): void {
    if (message.cmd !== 'load') {
      throw new Error(`tfjs-backend-wasm's threaded build runs no pthread under Node (XNNPACK on one thread); it was sent '${String(message.cmd)}'`);
    }
    setImmediate(() => {
      for (const listener of this.#messageListeners) listener({ cmd: 'loaded' });
    });
  }
  ref(): void {}
  unref(): void {}
  terminate(): Promise<number> {
    return Promise.resolve(0);
  }
}

/** Runs `activate` (the wasm backend's first initialization) with the threaded build made loadable under Node. */
export async function withThreadedWasm<T>(activate: () => Promise<T>): Promise<T> {
  const worker = Object.getOwnPropertyDescriptor(globalThis, 'Worker');
  // The factory's Node branch sets the global Worker to worker_threads'; during the start that set is ignored.
  Object.defineProperty(globalThis, 'Worker', { configurable: true, get: () => NoPthreadWorker, set: () => undefined });
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  try {
    return await activate();
  } catch (err) {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    throw err;
  } finally {
    if (worker === undefined) delete (globalThis as { Worker?: unknown }).Worker;
    else Object.defineProperty(globalThis, 'Worker', worker);
  }
}
