/** Flags several commands share, so they read and behave the same everywhere. */
import type { Argv } from 'yargs';
import { BACKEND_NAMES, describeSelection, selectBackend, type BackendName } from '../model/backend.js';

export function withBackend<T>(y: Argv<T>) {
  return y.option('backend', {
    choices: BACKEND_NAMES,
    default: 'auto' as BackendName,
    describe: 'TF.js backend; auto tries tensorflow-gpu, tensorflow, webgpu, wasm, cpu',
  });
}

/** Activates the backend and says on stderr which one was taken and why the others were skipped. */
export async function activateBackend(name: BackendName, quiet = false): Promise<void> {
  const sel = await selectBackend(name);
  if (!quiet) process.stderr.write(describeSelection(sel) + '\n');
}
