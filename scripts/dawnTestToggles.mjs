/**
 * Dawn toggles the tests run SwiftShader's WebGPU with (scripts/with-vulkan.mjs for Node's Dawn, through
 * MICSE_DAWN_OPTIONS; test/browserHarness.ts for Chromium's, through --enable-dawn-features).
 *
 * disable_workgroup_init: WGSL zero-fills `var<workgroup>` memory when a workgroup starts, and Dawn writes that fill
 * into every shader that has such memory. SwiftShader compiles those shaders several times slower: the GEMM value
 * cases in Chromium take 8 s instead of 89, test/matmul-tiles.test.ts 8 s instead of 32 (bench/README.md, "Dawn's
 * workgroup memory fill"). No kernel the tests run (ours or TF.js's) reads workgroup memory before writing it, so
 * their values do not depend on the fill; left as it is, the memory holds what the previous workgroup left there,
 * which a kernel reading it first would show as wrong values. Users' browsers and the GPU machine keep the fill.
 */
export const TEST_DAWN_FEATURES = ['disable_workgroup_init'];
