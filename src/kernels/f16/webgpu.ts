/** The float16 rounding kernel of webgpu (the op and its gradient: index.ts). */
import { tf } from '../../model/tf.js';
import { linearGrid, packUniforms, rawBindings, recordRaw, type RawProgram } from '../platform/webgpuPrograms.js';
import { registerOp } from '../registry.js';
import { ROUND_F16, ROUND_F16_GRADIENTS } from './index.js';

/** Invocations per workgroup of the webgpu program. */
const ELEMENTWISE_WORKGROUP = 256;

/** The bit arithmetic of index.ts's roundF16Bits in WGSL (WGSL's round() is ties to even). */
const WGSL_ROUND_BITS = `
  fn roundF16(x : f32) -> f32 {
    let b = bitcast<u32>(x);
    let sign = b & 0x80000000u;
    let a = b & 0x7fffffffu;
    if (a >= 0x7f800000u) { return x; }
    if (a >= 0x477ff000u) { return bitcast<f32>(sign | 0x7f800000u); }
    if (a < 0x38800000u) { return bitcast<f32>(sign | bitcast<u32>(round(bitcast<f32>(a) * 16777216.0) * 5.9604644775390625e-8)); }
    return bitcast<f32>(sign | ((a + 0xfffu + ((a >> 13u) & 1u)) & ~0x1fffu));
  }`;

/**
 * The webgpu kernel's program: a raw program (webgpuPrograms.ts recordRaw) of the bit arithmetic, on every device.
 * WGSL's own conversion `f32(f16(x))` (with shader-f16) is not used: WGSL leaves its rounding direction to the
 * implementation, and lavapipe folds the pair away (x unchanged), which would leave `precision: mixed` float32 there
 * without a word; the bits cost a few integer operations in a kernel bound by memory.
 */
export function roundProgram(): RawProgram {
  return {
    key: 'micseRoundF16',
    code: () => `${rawBindings(['X'], ['Y'], 'n : u32,')}
${WGSL_ROUND_BITS}
@compute @workgroup_size(${ELEMENTWISE_WORKGROUP})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>, @builtin(local_invocation_index) li : u32) {
  let i = (wid.y * nwg.x + wid.x) * ${ELEMENTWISE_WORKGROUP}u + li;
  if (i < uniforms.n) { Y[i] = roundF16(X[i]); }
}`,
  };
}

function webgpuRound({ inputs, backend }: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const x = inputs['x']!;
  const n = tf.util.sizeFromShape(x.shape);
  return recordRaw(backend, roundProgram(), [x], [x.shape], linearGrid(backend, Math.ceil(n / ELEMENTWISE_WORKGROUP)),
    packUniforms([{ type: 'uint32', data: [n] }]))[0]!;
}

/** Registers the rounding kernel of `backendName` if it is webgpu, and its gradient. */
export function registerF16Webgpu(backendName: string): void {
  registerOp(backendName, { webgpu: { [ROUND_F16]: webgpuRound } }, ROUND_F16_GRADIENTS);
}
