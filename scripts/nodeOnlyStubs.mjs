// The esbuild plugin of the browser bundles (scripts/build.mjs, and test pages bundled by tests, e.g. test/gemm.test.ts).
import { builtinModules } from 'node:module';

/**
 * What cannot exist in a page, in one place. The bundle keeps the modules that import these (they are needed for
 * their other exports); an import of one resolves to a stub whose every export throws "... is not available in a
 * browser" when called, and a package in NODE_ONLY_PACKAGES throws when it is loaded (the backends try them with a
 * dynamic import and report the reason).
 */
const NODE_ONLY_PACKAGES = [
  'onnxruntime-node', 'usearch', 'hnswlib-node', 'bullmq', 'ioredis', 'webgpu', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu',
  '@huggingface/hub', 'koffi',
];

/** esbuild plugin: node:* built-ins -> throwing stubs with the real module's export names; NODE_ONLY_PACKAGES -> a throwing module. */
export function nodeOnlyStubs() {
  const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
  return {
    name: 'node-only-stubs',
    setup(build) {
      build.onResolve({ filter: /.*/ }, (args) => {
        if (builtins.has(args.path)) return { path: args.path.replace(/^node:/, ''), namespace: 'node-builtin' };
        if (NODE_ONLY_PACKAGES.some((p) => args.path === p || args.path.startsWith(p + '/'))) return { path: args.path, namespace: 'node-only' };
        return undefined;
      });
      build.onLoad({ filter: /.*/, namespace: 'node-builtin' }, async (args) => {
        const names = Object.keys(await import(`node:${args.path}`)).filter((n) => n !== 'default' && /^[A-Za-z_$][\w$]*$/.test(n));
        const stub = `(() => { throw new Error('node:${args.path} is not available in a browser'); })`;
        const unavailable = `new Proxy(${stub}, { get: (_t, k) => k === 'then' ? undefined : ${stub} })`;
        return { contents: `const u = ${unavailable};\nexport default u;\n${names.map((n) => `export const ${n} = u;`).join('\n')}\n`, loader: 'js' };
      });
      build.onLoad({ filter: /.*/, namespace: 'node-only' }, (args) => ({
        contents: `throw new Error(${JSON.stringify(`${args.path} is not available in a browser`)});\nexport {};\n`, loader: 'js',
      }));
    },
  };
}
