/** The GEMM kernel on webgpu (platform/gemm.ts's programs), and its register function. */
import { tf } from '../../model/tf.js';
import { runGemm } from '../platform/gemm.js';
import { registerOp } from '../registry.js';
import { activeGemmMode, GEMM, type GemmAttrs } from './index.js';

/** inputs a, b, bias?; with gelu two outputs: GELU(op(a) op(b) + bias) and the value before GELU. */
const gemmWebgpu: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { a, b, bias } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo; bias?: tf.TensorInfo };
  const { transA, transB, gelu } = attrs as unknown as GemmAttrs;
  const outs = runGemm(backend, a, b, { transA, transB, ...(bias !== undefined ? { bias } : {}), gelu, keepPre: gelu, subgroups: activeGemmMode() === 'on' });
  return gelu ? outs : outs[0]!;
};

/** Registers the GEMM kernel of `backendName` (webgpu only). */
export function registerGemmWebgpu(backendName: string): void {
  registerOp(backendName, { webgpu: { [GEMM]: gemmWebgpu } });
}
