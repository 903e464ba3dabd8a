/**
 * The BERT encoder as an ONNX graph (opset 17, IR version 8), built from standard ai.onnx operators so that
 * onnxruntime (1.21 in Node, onnxruntime-web in the browser) and transformers.js run it:
 *
 *   inputs  input_ids, attention_mask, token_type_ids   int64 [batch, sequence]
 *   x = LayerNormalization(Gather(word, ids) + Slice(position, 0..T) + Gather(type, typeIds))
 *   mask = (1 - Cast<float>(attention_mask))[:, None, None, :] * float32.lowest          [batch, 1, 1, T]
 *   per layer:
 *     q, k, v = x Wq + bq, ...   -> Reshape [B, T, nh, dh] -> Transpose                 [B, nh, T, dh]
 *     a = Softmax(q k^T * 1/sqrt(dh) + mask)                                           [B, nh, T, T]
 *     x = LayerNormalization(x + (a v -> [B, T, H]) Wo + bo)
 *     x = LayerNormalization(x + gelu(x Wi + bi) Wo2 + bo2)       (gelu = 0.5 x (1 + Erf(x / sqrt 2)))
 *   output  last_hidden_state  float32 [batch, sequence, hidden]
 *
 * Opset 17 is the first with LayerNormalization; onnxruntime 1.21 implements opsets up to 22, so 17 runs on
 * every onnxruntime release since 1.14 (Feb 2023), which covers transformers.js 3.x.
 *
 * `quantize: 'int8'` is dynamic quantisation as onnxruntime's `quantize_dynamic` writes it: each Linear's input
 * is quantised at run time (DynamicQuantizeLinear: uint8, per tensor), its weight once here (uint8 with zero point
 * 128, one scale per output column), multiplied with MatMulInteger and rescaled in float. U8U8 rather than U8S8
 * avoids the int16 saturation of x86 AVX2 u8*s8 kernels. Embeddings, LayerNorms and attention stay float32.
 */
import type { BertConfig } from '../../model/config.js';
import { DataType, encodeModel, type GraphSpec, type NodeSpec, type TensorSpec, type AttributeValue } from '../../kernels/platform/onnxProto.js';

/** Operator set and IR version written (see the module comment). */
export const ONNX_OPSET = 17;
export const ONNX_IR_VERSION = 8;
/** float32's lowest value: the additive key mask transformers and our TF.js encoder use. */
const MASK_VALUE = -3.4028234663852886e38;
/** uint8 zero point of the quantised weights (symmetric around it). */
const WEIGHT_ZERO_POINT = 128;
/** Largest quantised weight magnitude: 127 keeps [1, 255] inside uint8 around zero point 128. */
const WEIGHT_QMAX = 127;

export type OnnxQuantization = 'none' | 'int8';

export interface BuildOnnxOptions {
  quantize?: OnnxQuantization;
  producerVersion?: string;
  /** Extra metadata_props. */
  metadata?: Record<string, string>;
}

/** Checkpoint-layout tensors (PyTorch: Linear weights [out, in]), as `BertModel.exportTensors()` returns them. */
export type CheckpointTensors = Map<string, { shape: number[]; data: Float32Array }>;

/** Builds the graph as nodes + initialisers; names are stable so tests and users can inspect the file. */
export function buildBertGraph(config: BertConfig, tensors: CheckpointTensors, opts: BuildOnnxOptions = {}): GraphSpec {
  const quantize = opts.quantize ?? 'none';
  const H = config.hiddenSize;
  const nh = config.numAttentionHeads;
  const dh = H / nh;
  const nodes: NodeSpec[] = [];
  const inits: TensorSpec[] = [];
  let counter = 0;

  const get = (name: string) => {
    const t = tensors.get(name);
    if (t === undefined) throw new Error(`ONNX export: weight '${name}' missing`);
    return t;
  };
  const init = (name: string, dims: number[], data: TensorSpec['data'], dataType: TensorSpec['dataType']): string => {
    inits.push({ name, dims, data, dataType });
    return name;
  };
  const floatInit = (name: string, dims: number[], data: Float32Array) => init(name, dims, data, DataType.FLOAT);
  const scalar = (name: string, v: number) => floatInit(name, [], Float32Array.of(v));
  const int64s = (name: string, values: number[]) => init(name, [values.length], BigInt64Array.from(values.map(BigInt)), DataType.INT64);
  /** Adds a node with one output (named after the op) and returns that output's name. */
  const op = (opType: string, inputs: string[], attributes?: Record<string, AttributeValue>, outName?: string): string => {
    const out = outName ?? `/${opType}_${counter++}`;
    nodes.push({ opType, inputs, outputs: [out], name: `${opType}_${counter++}`, ...(attributes ? { attributes } : {}) });
    return out;
  };
  const weight = (name: string) => {
    const t = get(name);
    return floatInit(name, t.shape, t.data);
  };

  // Shared constants.
  const one = scalar('const_one', 1);
  const half = scalar('const_half', 0.5);
  const maskValue = scalar('const_mask_value', MASK_VALUE);
  const attnScale = scalar('const_attention_scale', 1 / Math.sqrt(dh));
  const headShape = int64s('const_head_shape', [0, 0, nh, dh]); // 0 = keep that input dimension
  const hiddenShape = int64s('const_hidden_shape', [0, 0, H]);
  const zero1 = int64s('const_zero_1d', [0]);
  const axis0 = int64s('const_axis_0', [0]);
  const axes12 = int64s('const_axes_1_2', [1, 2]);

  /** Linear: x [..., in] -> [..., out] with the checkpoint's [out, in] weight (stored transposed, [in, out]). */
  const linear = (x: string, name: string, quantInput?: { q: string; scale: string; zp: string }): string => {
    const w = get(`${name}.weight`);
    const [out, inp] = w.shape as [number, number];
    const wT = transpose(w.data, out, inp); // [in, out]
    const bias = weight(`${name}.bias`);
    if (quantize === 'none') return op('Add', [op('MatMul', [x, floatInit(`${name}.weight`, [inp, out], wT)]), bias]);
    const { q: wq, scales } = quantizeColumns(wT, inp, out);
    const wName = init(`${name}.weight_quantized`, [inp, out], wq, DataType.UINT8);
    const wZp = init(`${name}.weight_zero_point`, [], Uint8Array.of(WEIGHT_ZERO_POINT), DataType.UINT8);
    const wScale = floatInit(`${name}.weight_scale`, [out], scales);
    const qi = quantInput ?? dynamicQuantize(x);
    const acc = op('MatMulInteger', [qi.q, wName, qi.zp, wZp]); // int32 [..., out]
    const scale = op('Mul', [qi.scale, wScale]); // [out]
    return op('Add', [op('Mul', [op('Cast', [acc], { to: { kind: 'int', value: DataType.FLOAT } }), scale]), bias]);
  };
  /** DynamicQuantizeLinear: float x -> uint8 q, scalar scale, scalar zero point (three outputs). */
  const dynamicQuantize = (x: string) => {
    const base = `/DynamicQuantizeLinear_${counter++}`;
    const outs = [`${base}_q`, `${base}_scale`, `${base}_zero_point`];
    nodes.push({ opType: 'DynamicQuantizeLinear', inputs: [x], outputs: outs, name: base.slice(1) });
    return { q: outs[0]!, scale: outs[1]!, zp: outs[2]! };
  };
  const layerNorm = (x: string, name: string): string =>
    op('LayerNormalization', [x, weight(`${name}.weight`), weight(`${name}.bias`)],
      { axis: { kind: 'int', value: -1 }, epsilon: { kind: 'float', value: config.layerNormEps } });
  const activation = (x: string): string => {
    switch (config.hiddenAct) {
      case 'gelu': // exact: 0.5 x (1 + erf(x / sqrt 2))
        return op('Mul', [op('Mul', [x, half]), op('Add', [one, op('Erf', [op('Div', [x, scalar(`const_sqrt2_${counter++}`, Math.SQRT2)])])])]);
      case 'gelu_new':
      case 'gelu_pytorch_tanh': { // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        const cube = op('Mul', [op('Mul', [x, x]), x]);
        const inner = op('Mul', [scalar(`const_gelu_c_${counter++}`, Math.sqrt(2 / Math.PI)),
          op('Add', [x, op('Mul', [scalar(`const_gelu_k_${counter++}`, 0.044715), cube])])]);
        return op('Mul', [op('Mul', [x, half]), op('Add', [one, op('Tanh', [inner])])]);
      }
      case 'relu':
        return op('Relu', [x]);
    }
  };

  // Embeddings: [B, T, H]
  const words = op('Gather', [weight('embeddings.word_embeddings.weight'), 'input_ids'], { axis: { kind: 'int', value: 0 } });
  const seqLen = op('Shape', ['input_ids'], { start: { kind: 'int', value: 1 }, end: { kind: 'int', value: 2 } }); // [1] = T
  const positions = op('Slice', [weight('embeddings.position_embeddings.weight'), zero1, seqLen, axis0]); // [T, H]
  const types = op('Gather', [weight('embeddings.token_type_embeddings.weight'), 'token_type_ids'], { axis: { kind: 'int', value: 0 } });
  let x = layerNorm(op('Add', [op('Add', [words, positions]), types]), 'embeddings.LayerNorm');

  // Additive key mask [B, 1, 1, T]: 0 where attended, float32's lowest at padding.
  const maskF = op('Cast', ['attention_mask'], { to: { kind: 'int', value: DataType.FLOAT } });
  const maskAdd = op('Mul', [op('Unsqueeze', [op('Sub', [one, maskF]), axes12]), maskValue]);

  const perm = (p: number[]): Record<string, AttributeValue> => ({ perm: { kind: 'ints', value: p } });
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const p = `encoder.layer.${i}`;
    const qx = quantize === 'int8' ? dynamicQuantize(x) : undefined; // shared by Q, K and V
    const q = op('Transpose', [op('Reshape', [linear(x, `${p}.attention.self.query`, qx), headShape])], perm([0, 2, 1, 3])); // [B, nh, T, dh]
    const kT = op('Transpose', [op('Reshape', [linear(x, `${p}.attention.self.key`, qx), headShape])], perm([0, 2, 3, 1])); // [B, nh, dh, T]
    const v = op('Transpose', [op('Reshape', [linear(x, `${p}.attention.self.value`, qx), headShape])], perm([0, 2, 1, 3])); // [B, nh, T, dh]
    const scores = op('Add', [op('Mul', [op('MatMul', [q, kT]), attnScale]), maskAdd]); // [B, nh, T, T]
    const probs = op('Softmax', [scores], { axis: { kind: 'int', value: -1 } });
    const ctx = op('Reshape', [op('Transpose', [op('MatMul', [probs, v])], perm([0, 2, 1, 3])), hiddenShape]); // [B, T, H]
    x = layerNorm(op('Add', [linear(ctx, `${p}.attention.output.dense`), x]), `${p}.attention.output.LayerNorm`);
    const inter = activation(linear(x, `${p}.intermediate.dense`)); // [B, T, I]
    const last = i === config.numHiddenLayers - 1;
    const out = op('Add', [linear(inter, `${p}.output.dense`), x]);
    x = last
      ? op('LayerNormalization', [out, weight(`${p}.output.LayerNorm.weight`), weight(`${p}.output.LayerNorm.bias`)],
        { axis: { kind: 'int', value: -1 }, epsilon: { kind: 'float', value: config.layerNormEps } }, 'last_hidden_state')
      : layerNorm(out, `${p}.output.LayerNorm`);
  }
  if (config.numHiddenLayers === 0) x = op('Identity', [x], undefined, 'last_hidden_state');

  const io = (name: string) => ({ name, elemType: DataType.INT64, shape: ['batch', 'sequence'] });
  return {
    name: 'micse_bert',
    nodes,
    initializers: inits,
    inputs: [io('input_ids'), io('attention_mask'), io('token_type_ids')],
    outputs: [{ name: 'last_hidden_state', elemType: DataType.FLOAT, shape: ['batch', 'sequence', H] }],
    docString: 'BERT encoder (Hugging Face BertModel math); sentence embedding = last_hidden_state[:, 0] (raw [CLS])',
  };
}

/** Serialises the encoder as an ONNX model file's bytes. */
export function encodeBertOnnx(config: BertConfig, tensors: CheckpointTensors, opts: BuildOnnxOptions = {}): Buffer {
  return encodeModel({
    irVersion: ONNX_IR_VERSION,
    opset: ONNX_OPSET,
    producerName: 'micse-tfjs',
    producerVersion: opts.producerVersion ?? '0.1.0',
    docString: 'miCSE sentence encoder exported by micse-tfjs',
    metadata: { quantization: opts.quantize ?? 'none', ...(opts.metadata ?? {}) },
    graph: buildBertGraph(config, tensors, opts),
  });
}

/** Row-major [rows, cols] -> [cols, rows]. */
function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
  return out;
}

/**
 * Symmetric per-column quantisation of w [rows, cols]: scale_c = max|w[:, c]| / 127, q = round(w / scale) + 128.
 * A zero column gets scale 1 (all q = 128).
 */
export function quantizeColumns(w: Float32Array, rows: number, cols: number): { q: Uint8Array; scales: Float32Array } {
  const scales = new Float32Array(cols);
  for (let c = 0; c < cols; c++) {
    let m = 0;
    for (let r = 0; r < rows; r++) m = Math.max(m, Math.abs(w[r * cols + c]!));
    scales[c] = m > 0 ? m / WEIGHT_QMAX : 1;
  }
  const q = new Uint8Array(w.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = Math.round(w[r * cols + c]! / scales[c]!);
      q[r * cols + c] = Math.min(WEIGHT_QMAX, Math.max(-WEIGHT_QMAX, v)) + WEIGHT_ZERO_POINT;
    }
  }
  return { q, scales };
}
