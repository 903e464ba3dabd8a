/**
 * The registry helpers every op folder uses: an op's kernels are registered per backend name by its backend files'
 * register functions, which `registerKernels` (src/kernels/index.ts) calls, never on import; each op runs its kernel
 * where the active backend has it (`kernelOn`), its composed stock ops everywhere else.
 */
import { tf } from '../model/tf.js';

/** An op's kernels: backend name -> kernel name -> implementation. */
export type KernelsByBackend = Readonly<Record<string, Readonly<Record<string, tf.KernelFunc>>>>;

/**
 * Registers `byBackend[backendName]`'s kernels, skipping names already registered there (the registry is global
 * to the engine: a second call, or a bundle evaluated beside the sources, leaves the first registration alone), and
 * `gradients` (each unless its kernel has one already). A backend the op has no kernels for gets none. With `when`,
 * the kernels run only while it holds (`kernelOn`): for kernels that need something loaded at run time.
 */
export function registerOp(backendName: string, byBackend: KernelsByBackend, gradients: readonly tf.GradConfig[] = [],
  when?: () => boolean): void {
  const kernels = byBackend[backendName];
  if (kernels === undefined) return;
  for (const [kernelName, kernelFunc] of Object.entries(kernels)) {
    if (tf.getKernel(kernelName, backendName) !== undefined) continue;
    const config: ConditionalKernel = { kernelName, backendName, kernelFunc, when };
    tf.registerKernel(config);
  }
  for (const g of gradients) if (tf.getGradient(g.kernelName) === undefined) tf.registerGradient(g);
}

/**
 * A registered kernel's config with its `when`, kept in the engine's registry itself (which holds the config object
 * registered), so that every copy of this module (the sources and a bundle in one process) sees it.
 */
interface ConditionalKernel extends tf.KernelConfig {
  when?: () => boolean;
}

/** Whether the ops are held to their composed ops (inside `withComposedOps`). */
let composedOnly = false;

/**
 * Runs `f` with every op of src/kernels computing by its composed stock ops, its kernels set aside: the reference the
 * kernels are compared with. Kernels of TF.js's own ops replaced by stock/ still run.
 */
export function withComposedOps<T>(f: () => T): T {
  const outer = composedOnly;
  composedOnly = true;
  try {
    return f();
  } finally {
    composedOnly = outer;
  }
}

/**
 * Whether the op's kernel `kernelName` runs here: registered on the active backend (and its `when` holding, where it
 * was registered with one), every input float32, and not inside `withComposedOps`.
 */
export function kernelOn(kernelName: string, ...xs: tf.TensorInfo[]): boolean {
  if (composedOnly || !xs.every((x) => x.dtype === 'float32')) return false;
  const config = tf.getKernel(kernelName, tf.getBackend()) as ConditionalKernel | undefined;
  return config !== undefined && (config.when?.() ?? true);
}
