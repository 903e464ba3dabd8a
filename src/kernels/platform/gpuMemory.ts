/**
 * The webgpu device's out-of-memory errors, and its refusals of a buffer larger than its limits, turned into one line
 * saying what to lower.
 *
 * A GPU allocation that fails (a step or batch too big for the device's memory, or one tensor bigger than the
 * device's maxBufferSize or maxStorageBufferBindingSize) is not thrown where it happens: the device reports a
 * GPUOutOfMemoryError, or a GPUValidationError naming the limit, as an uncaptured error, the commands over the
 * buffer it could not make or bind do not run, and a later read either fails (an OperationError) or resolves with
 * values those commands never wrote. `watchOutOfMemory` listens on the device and wraps the backend's `read` (the
 * webgpu backend's factory calls it): the listener keeps the first such error and holds it and the validation errors
 * that follow it off the console (Dawn prints each, several lines, otherwise); a read after it, resolved or failed,
 * throws GpuOutOfMemoryError instead, once (a later failure is reported as itself). A synchronous read (dataSync,
 * through a canvas in a page) throws it where the device reported the error before the read returned. The training
 * step, which reads without the backend on a replay, asks `outOfMemoryError` itself (train/step.ts). No TF.js import
 * here.
 */
import { UserError } from '../../errors.js';

/** The first line of the first allocation error the device reported since the last one was thrown, or null. */
let reported: string | null = null;

/** What the error says to lower where the caller does not say. */
const LOWER = 'the batch size (train.batchSize, or --batch-size) or the sequence length (data.maxSeqLen, or --max-length)';

/** Dawn's validation errors for a buffer past the device's limits: its size (maxBufferSize) or a binding's (maxStorageBufferBindingSize). */
const OVER_LIMIT = /exceeds the max buffer size limit|is larger than the maximum storage buffer binding size/;

/**
 * The device could not hold what `what` needed (`reported`: its error's first line): a UserError whose message says
 * what to lower. Out of memory, or one buffer past the device's limits.
 */
export class GpuOutOfMemoryError extends UserError {
  constructor(readonly reported: string, what: string, lower = LOWER) {
    super(OVER_LIMIT.test(reported)
      ? `a tensor in ${what} is larger than the webgpu device allows in one buffer (${reported}): lower ${lower}, or choose another backend (--backend)`
      : `the webgpu device ran out of memory in ${what} (${reported}): lower ${lower}, or choose another backend (--backend)`);
  }
}

/** Whether a device error is a GPUOutOfMemoryError (by its class's name where the global is not defined). */
export function isOutOfMemory(err: GPUError): boolean {
  return typeof GPUOutOfMemoryError !== 'undefined' ? err instanceof GPUOutOfMemoryError : err.constructor.name === 'GPUOutOfMemoryError';
}

/** Whether a device error is an allocation the device could not make: out of memory, or a buffer past its limits. */
export function isAllocationError(err: GPUError): boolean {
  return isOutOfMemory(err) || OVER_LIMIT.test(err.message);
}

/** The backend's read, as tfjs-backend-webgpu's WebGPUBackend has it. */
interface Reads {
  read(dataId: object): Promise<unknown>;
  readSync(dataId: object): unknown;
}

/** Listens for `device`'s allocation errors (out of memory, past a limit) and makes `backend`'s reads throw after one (see the module comment). */
export function watchOutOfMemory(device: GPUDevice, backend: Reads): void {
  device.addEventListener('uncapturederror', (e) => {
    const err = (e as GPUUncapturedErrorEvent).error;
    if (isAllocationError(err)) reported ??= err.message.split('\n')[0]!.trim();
    if (reported !== null) e.preventDefault();
  });
  const read = backend.read.bind(backend);
  backend.read = async (dataId) => {
    let values: unknown;
    try {
      values = await read(dataId);
    } catch (err) {
      throw outOfMemoryError('a computation') ?? err;
    }
    const oom = outOfMemoryError('a computation');
    if (oom !== null) throw oom;
    return values;
  };
  const readSync = backend.readSync.bind(backend);
  backend.readSync = (dataId) => {
    const values = readSync(dataId);
    const oom = outOfMemoryError('a computation');
    if (oom !== null) throw oom;
    return values;
  };
}

/**
 * What a buffer mapped at creation that the device could not allocate (the backend's uploads) throws at once: a
 * RangeError, not a device error. Its message where `err` is one, else null.
 */
export function mappedAllocationFailure(err: unknown): string | null {
  return err instanceof RangeError && /createBuffer failed to allocate/.test(err.message) ? err.message : null;
}

/**
 * A GpuOutOfMemoryError for `what` when the device reported an allocation error since the process started or the
 * last one was thrown; else null.
 */
export function outOfMemoryError(what: string, lower?: string): GpuOutOfMemoryError | null {
  if (reported === null) return null;
  const error = new GpuOutOfMemoryError(reported, what, lower);
  reported = null;
  return error;
}
