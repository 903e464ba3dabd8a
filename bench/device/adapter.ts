/**
 * `node adapter.mjs`: what WebGPU adapter Dawn (npm `webgpu`) finds here, as JSON on stdout: the adapter's info
 * (vendor, architecture, device, description), its features (timestamp-query decides whether `bench --profile`
 * has GPU kernel times; subgroups whether subgroup kernels could be written; shader-f16 whether train.precision
 * mixed rounds with WGSL's float16), those Dawn's allow_unsafe_apis toggle adds, and the limits TF.js asks for, then
 * whether a device can be created and a trivial compute pass runs. Exit 1 when there is no adapter or device.
 *
 * bench/device/run.sh runs it first on the GPU machine, so a missing Vulkan driver shows up in seconds, not as
 * a failed bench.
 */

/** The limits tfjs-backend-webgpu requests (base.ts) plus the ones that bound a kernel's shape. */
const LIMITS = [
  'maxComputeWorkgroupStorageSize', 'maxComputeWorkgroupsPerDimension', 'maxStorageBufferBindingSize', 'maxBufferSize',
  'maxComputeWorkgroupSizeX', 'maxComputeInvocationsPerWorkgroup', 'maxStorageBuffersPerShaderStage',
] as const;

/** GPUAdapterInfo fields printed. */
const INFO_FIELDS = ['vendor', 'architecture', 'device', 'description', 'subgroupMinSize', 'subgroupMaxSize', 'isFallbackAdapter'] as const;

/** The Dawn toggle whose extra features are listed apart (`featuresAddedBy`). */
const UNSAFE_TOGGLE = 'enable-dawn-features=allow_unsafe_apis';

/** Elements doubled by the check's compute pass. */
const CHECK_ELEMENTS = 64;
const WORKGROUP_SIZE = 64;
const BYTES_PER_F32 = 4;

interface Adapter {
  info?: Partial<Record<(typeof INFO_FIELDS)[number], unknown>>;
  features: Iterable<string>;
  limits: Record<string, number>;
  requestDevice(): Promise<GpuDevice>;
}
/** The few GPUDevice members the check uses (the package's DOM-style types are not in this project's lib). */
interface GpuDevice {
  queue: { writeBuffer(b: unknown, off: number, data: Float32Array): void; submit(cmds: unknown[]): void; onSubmittedWorkDone(): Promise<void> };
  createBuffer(d: { size: number; usage: number }): { mapAsync(mode: number): Promise<void>; getMappedRange(): ArrayBuffer; unmap(): void };
  createShaderModule(d: { code: string }): unknown;
  createComputePipeline(d: { layout: 'auto'; compute: { module: unknown; entryPoint: string } }): { getBindGroupLayout(i: number): unknown };
  createBindGroup(d: { layout: unknown; entries: { binding: number; resource: { buffer: unknown } }[] }): unknown;
  createCommandEncoder(): {
    beginComputePass(): { setPipeline(p: unknown): void; setBindGroup(i: number, g: unknown): void; dispatchWorkgroups(x: number): void; end(): void };
    copyBufferToBuffer(a: unknown, ao: number, b: unknown, bo: number, size: number): void;
    finish(): unknown;
  };
  destroy(): void;
}
interface Dawn {
  create(flags: string[]): { requestAdapter(o?: { powerPreference?: string }): Promise<Adapter | null> };
  globals: Record<string, unknown>;
}

/** Doubles CHECK_ELEMENTS floats on the GPU and reads them back: true when the result is right. */
async function computeCheck(device: GpuDevice, g: Record<string, unknown>): Promise<boolean> {
  const usage = g['GPUBufferUsage'] as Record<string, number>;
  const mapMode = g['GPUMapMode'] as Record<string, number>;
  const size = CHECK_ELEMENTS * BYTES_PER_F32;
  const input = Float32Array.from({ length: CHECK_ELEMENTS }, (_, i) => i);
  const storage = device.createBuffer({ size, usage: usage['STORAGE']! | usage['COPY_SRC']! | usage['COPY_DST']! });
  const readback = device.createBuffer({ size, usage: usage['MAP_READ']! | usage['COPY_DST']! });
  device.queue.writeBuffer(storage, 0, input);
  const module = device.createShaderModule({
    code: `@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(${WORKGROUP_SIZE}) fn main(@builtin(global_invocation_id) id: vec3<u32>) { x[id.x] = x[id.x] * 2.0; }`,
  });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: storage } }] });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bind);
  pass.dispatchWorkgroups(Math.ceil(CHECK_ELEMENTS / WORKGROUP_SIZE));
  pass.end();
  enc.copyBufferToBuffer(storage, 0, readback, 0, size);
  device.queue.submit([enc.finish()]);
  await readback.mapAsync(mapMode['READ']!);
  const out = new Float32Array(readback.getMappedRange().slice(0));
  readback.unmap();
  return out.every((v, i) => v === 2 * i);
}

async function main(): Promise<void> {
  const dawn = (await import('webgpu' as string)) as Dawn;
  Object.assign(globalThis, dawn.globals);
  // Dawn runs (and pumps mapAsync) only while the object create() returns is referenced, and keeps the process
  // alive while it is: hold it to the end, then exit explicitly.
  const gpu = dawn.create([]);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (adapter === null) {
    process.stdout.write(JSON.stringify({ adapter: null, env: { VK_DRIVER_FILES: process.env['VK_DRIVER_FILES'] ?? null } }) + '\n');
    process.exit(1);
  }
  const info = adapter.info;
  const report: Record<string, unknown> = {
    // GPUAdapterInfo's fields are getters on its prototype: JSON.stringify of the object itself shows none of them.
    info: info === undefined ? null : Object.fromEntries(INFO_FIELDS.map((k) => [k, info[k] ?? null])),
    features: [...adapter.features].sort(),
    limits: Object.fromEntries(LIMITS.map((k) => [k, adapter.limits[k] ?? null])),
  };
  // The features Dawn's toggle allow_unsafe_apis adds (experimental ones, e.g. subgroup matrices; shader-f16 where
  // the driver has it but Dawn gates it).
  const unsafe = await dawn.create([UNSAFE_TOGGLE]).requestAdapter({ powerPreference: 'high-performance' });
  const plain = new Set(report['features'] as string[]);
  report['featuresAddedBy'] = { [UNSAFE_TOGGLE]: unsafe === null ? null : [...unsafe.features].filter((f) => !plain.has(f)).sort() };
  try {
    const device = await adapter.requestDevice();
    report['device'] = 'created';
    report['computeCheck'] = (await computeCheck(device, dawn.globals)) ? 'ok' : 'WRONG RESULT';
    device.destroy();
  } catch (err) {
    report['device'] = `failed: ${(err as Error).message}`;
  }
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  void gpu;
  process.exit(report['device'] === 'created' && report['computeCheck'] === 'ok' ? 0 : 1);
}

await main();
