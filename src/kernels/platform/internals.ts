/**
 * The private internals of dependencies this layer reaches into, listed in one place, with the exact versions they
 * were written against (pinned in package.json). Everything else in src/kernels uses public APIs.
 *
 * - tfjs-backend-webgpu's WebGPUBackend: raw dispatches recorded into its command encoder (webgpuPrograms.ts
 *   `BackendInternals`, kernels/adamw/webgpu.ts), its programs recorded with kept bind groups and its buffer pool
 *   ordered (bindGroupCache.ts; it also reads `activeTimers`, set only while tf.time or tf.profile runs, so not
 *   checked here, and the pool's `freeBuffers` and `releaseBuffer`), its buffer pool bounded and purged after the
 *   device runs out (bufferPool.ts: the pool's free and used lists, its byte and buffer counts, `acquireBuffer` and
 *   `releaseBuffer`) and the retiled matmul program (matmulTiles.ts `PackedProgram`, which also checks each
 *   program's fields before it changes one).
 * - tfjs-backend-wasm's BackendWasm and tfjs-backend-cpu's MathBackendCPU: tensor values in place (hostBackend.ts);
 *   and MathBackendCPU's `firstUse`, cleared so that it prints no "install tfjs-node" banner (hostBackend.ts
 *   skipCpuBanner; not checked here: no kernel uses it, and without it the banner prints, nothing else changes).
 * - onnxruntime-node's native binding (`dist/binding`): its synchronous run (nativeOps.ts).
 *
 * `internalsProblem` is checked when a backend's kernels are registered (src/kernels/index.ts): another version, or
 * a field missing, and that backend keeps TF.js's stock kernels, with one line saying why, instead of failing in the
 * middle of a step. onnxruntime-node is checked where it loads (nativeOps.ts), which falls back to the stock
 * products the same way.
 */
import { createRequire } from 'node:module';

export interface PrivateDependency {
  /** The npm package. */
  package: string;
  /** The version the code was written against (package.json pins it). */
  version: string;
  /** The TF.js backend whose object holds the fields (none: a module's exports, checked where it loads). */
  backend: string | null;
  /** The fields and methods used beyond the package's public types. */
  fields: readonly string[];
}

export const PRIVATE_DEPENDENCIES: readonly PrivateDependency[] = [
  {
    package: '@tensorflow/tfjs-backend-webgpu', version: '4.22.0', backend: 'webgpu',
    fields: ['device', 'queue', 'tensorMap', 'bufferManager', 'makeTensorInfo', 'uploadToGPU', 'ensureCommandEncoderReady',
      'endComputePassEncoder', 'submitQueue', 'commandEncoder', 'computePassEncoder', 'commandQueueOwnedIds',
      'uniformPendingDisposal', 'dispatchCountInPass', 'recordAndSubmit'],
  },
  {
    package: '@tensorflow/tfjs-backend-wasm', version: '4.22.0', backend: 'wasm',
    fields: ['wasm', 'dataIdMap', 'dataIdNextNumber', 'makeOutput', 'disposeData', 'incRef', 'readSync'],
  },
  { package: '@tensorflow/tfjs-backend-cpu', version: '4.22.0', backend: 'cpu', fields: ['data', 'makeTensorInfo', 'incRef', 'readSync'] },
  { package: 'onnxruntime-node', version: '1.21.0', backend: null, fields: ['dist/binding: binding.InferenceSession, initOrt'] },
];

/**
 * The versions of the packages the browser bundle was built from (scripts/build.mjs defines it there, where no
 * package.json can be read); undefined in Node.
 */
declare const MICSE_BUNDLED_VERSIONS: Readonly<Record<string, string>> | undefined;

/** The installed version of `pkg` (its package.json, or the bundle's record), or undefined when it is not installed. */
export function installedVersion(pkg: string): string | undefined {
  if (typeof MICSE_BUNDLED_VERSIONS !== 'undefined') return MICSE_BUNDLED_VERSIONS[pkg];
  try {
    return (createRequire(import.meta.url)(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return undefined;
  }
}

/** The pinned entry of `pkg`. */
export function privateDependency(pkg: string): PrivateDependency {
  const dep = PRIVATE_DEPENDENCIES.find((d) => d.package === pkg);
  if (dep === undefined) throw new Error(`${pkg} is not a listed private dependency`);
  return dep;
}

/** Why `installed` (a version) is not the one `dep`'s internals were written against, or null when it is. */
export function versionProblem(dep: PrivateDependency, installed: string | undefined): string | null {
  if (installed === dep.version) return null;
  return `${dep.package} ${installed ?? '(version unknown)'} is installed; its internals this project uses were written against ${dep.version}`;
}

/**
 * Why the kernels of TF.js backend `backendName` cannot use `backend`'s internals (another version of its package
 * than the pinned one, or a field missing from the live object), or null when they can or it has none listed.
 * `installed` is the package's version as found (default: its package.json).
 */
export function internalsProblem(backendName: string, backend: object, installed?: string): string | null {
  const dep = PRIVATE_DEPENDENCIES.find((d) => d.backend === backendName);
  if (dep === undefined) return null;
  const version = versionProblem(dep, installed ?? installedVersion(dep.package));
  if (version !== null) return version;
  const missing = dep.fields.filter((f) => !(f in backend));
  return missing.length === 0 ? null : `${dep.package} ${dep.version}'s backend lacks ${missing.join(', ')}`;
}
