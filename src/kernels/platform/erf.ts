/**
 * erf as every TF.js backend computes it (Abramowitz & Stegun 7.1.26, the constants of TF.js's Erf kernels,
 * backend_util.ERF_*; |error| < 1.5e-7), shared by the GELU kernels on every backend (kernels/gelu, the host SIMD
 * loops in hostSimd.ts, the GEMM's GELU epilogue in gemm.ts):
 *   erf(v) = sign(v) (1 - (((((A5 t + A4) t + A3) t + A2) t + A1) t exp(-v^2))),  t = 1 / (1 + P |v|)
 */
export const ERF_P = 0.3275911;
export const ERF_A1 = 0.254829592;
export const ERF_A2 = -0.284496736;
export const ERF_A3 = 1.421413741;
export const ERF_A4 = -1.453152027;
export const ERF_A5 = 1.061405429;
/** 1 / sqrt(2 pi) */
export const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** The WGSL function `erf_as(v)`: the formula above. */
export const WGSL_ERF = `
  fn erf_as(v : f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + ${ERF_P} * a);
    return sign(v) * (1.0 - ((((${ERF_A5} * t + ${ERF_A4}) * t + ${ERF_A3}) * t + ${ERF_A2}) * t + ${ERF_A1}) * t * exp(-a * a));
  }`;
