#!/usr/bin/env bash
# bench/device/pack.sh [TEST.ts ...]: packs what bench/device/run.sh needs on the GPU machine, which has no Node,
# no npm registry and no internet, into two folders that git ignores (.git/info/exclude) and the device `run` tool
# carries (carry: [".gl", ".device"]):
#
#   .gl/      the Debian Vulkan loader and glvnd packages (the device README's list); run.sh unpacks them into /
#   .device/  payload.tar.xz + MANIFEST.txt; run.sh unpacks the payload into .device-run/ (ignored, not carried):
#     node                  this machine's Node binary (x86-64, linked against libc/libstdc++ only)
#     bench.mjs             bench/bench.ts bundled by esbuild (ESM, platform node); `webgpu` stays external
#     adapter.mjs           bench/device/adapter.ts bundled (WebGPU adapter report and a one-kernel check)
#     gemm.mjs              bench/gemm.ts bundled (TFLOP/s of the WebGPU matmul on BERT-base's products)
#     replay-shapes.mjs     bench/replay-shapes.ts bundled (the replay and the buffer pool over the trainer's batch lengths)
#     reference.py          bench/reference.py (bench.mjs runs the copy beside itself)
#     NAME.test.mjs         each TEST.ts named on the command line, bundled (.device-run/ is one level below the
#                           repo root, so test/helpers.ts's ROOT is the repo root there)
#     node_modules/webgpu   package.json, index.js and dist/linux-x64/dawn.node only (the npm package holds every
#                           platform's build: 132 MB)
#     node_modules/@tensorflow/tfjs-backend-wasm   package.json and the .wasm files (the bundles hold its JS)
#     shared/data/...       the parts of ../shared the bench and tests read ($MICSE_PACK_SHARED overrides the list);
#                           run.sh sets MICSE_SHARED_DIR=.device-run/shared
#     export/               `micse export` of the shared tiny checkpoint (hf, sentence-transformers, onnx), with
#                           sentences.txt and micse.npy (`micse embed` here) for bench/check-export.py there
#
# Prints the size of everything that travels (the tool's limit is 64 MiB for the tree and the carried paths).
set -euo pipefail

cd "$(git rev-parse --show-toplevel)"
ROOT=$PWD
DEV=.device
STAGE=$DEV/stage
SHARED_DIR=$(cd "${MICSE_SHARED_DIR:-$ROOT/../shared}" && pwd)
# Parts of $SHARED_DIR/data copied: the bench's tokenizer and corpus, the tiny checkpoint, the loss cases tests use and
# STS-B (the trainer's dev evaluation in test/loss-scale.test.ts).
PACK_SHARED=${MICSE_PACK_SHARED:-bert-base-uncased wiki1m-head.txt hf-reference/tiny-h32-l4 loss-reference senteval/STS/STSBenchmark}
EXPORT_CHECKPOINT=$SHARED_DIR/data/hf-reference/tiny-h32-l4
EXPORT_SENTENCES=64
DEBS=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
XZ_LEVEL=-6
LIMIT_MIB=64
ESBUILD=node_modules/.bin/esbuild
# CommonJS dependencies (tfjs-backend-wasm's emscripten loader among them) use require, __filename and __dirname;
# an ESM bundle has none of them unless the banner defines them.
BANNER="import { createRequire as __bundleCreateRequire } from 'node:module'; import { fileURLToPath as __bundleFileURLToPath } from 'node:url'; \
import { dirname as __bundleDirname } from 'node:path'; const require = __bundleCreateRequire(import.meta.url); \
const __filename = __bundleFileURLToPath(import.meta.url); const __dirname = __bundleDirname(__filename);"
ESBUILD_FLAGS=(--bundle --platform=node --format=esm --target=node20 --log-level=warning "--banner:js=$BANNER"
  --external:webgpu --external:@tensorflow/tfjs-node --external:@tensorflow/tfjs-node-gpu
  --external:onnxruntime-node --external:usearch --external:hnswlib-node)

say() { echo "pack: $*" >&2; }

[ "$(uname -m)" = x86_64 ] || { say "this machine is $(uname -m); the GPU machine is x86-64: build there instead"; exit 1; }
[ -x "$ESBUILD" ] || { say "$ESBUILD is missing: run npm ci"; exit 1; }
[ -f node_modules/webgpu/dist/linux-x64/dawn.node ] || { say "node_modules/webgpu is missing: run npm ci (webgpu is an optionalDependency)"; exit 1; }
[ -d "$SHARED_DIR/data" ] || { say "no shared data at $SHARED_DIR/data (set MICSE_SHARED_DIR)"; exit 1; }

EXCLUDE=$(git rev-parse --git-path info/exclude)
for p in /.device/ /.device-run/ /.gl/; do grep -qxF "$p" "$EXCLUDE" 2>/dev/null || echo "$p" >>"$EXCLUDE"; done

rm -rf "$DEV"
mkdir -p "$STAGE"

say "Node $(node --version) from $(command -v node)"
cp "$(readlink -f "$(command -v node)")" "$STAGE/node"

say "bundling bench/bench.ts, bench/device/adapter.ts and bench/gemm.ts"
"$ESBUILD" bench/bench.ts "${ESBUILD_FLAGS[@]}" --outfile="$STAGE/bench.mjs"
"$ESBUILD" bench/device/adapter.ts "${ESBUILD_FLAGS[@]}" --outfile="$STAGE/adapter.mjs"
"$ESBUILD" bench/gemm.ts "${ESBUILD_FLAGS[@]}" --outfile="$STAGE/gemm.mjs"
"$ESBUILD" bench/replay-shapes.ts "${ESBUILD_FLAGS[@]}" --outfile="$STAGE/replay-shapes.mjs"
cp bench/reference.py "$STAGE/reference.py"
for t in "$@"; do
  [ -f "$t" ] || { say "no test file $t"; exit 1; }
  name=$(basename "$t" .ts)
  case "$name" in *.test) ;; *) name=$name.test ;; esac
  say "bundling $t -> $name.mjs"
  "$ESBUILD" "$t" "${ESBUILD_FLAGS[@]}" --outfile="$STAGE/$name.mjs"
done

mkdir -p "$STAGE/node_modules/webgpu/dist/linux-x64" "$STAGE/node_modules/@tensorflow/tfjs-backend-wasm/dist"
cp node_modules/webgpu/package.json node_modules/webgpu/index.js "$STAGE/node_modules/webgpu/"
cp node_modules/webgpu/dist/linux-x64/dawn.node "$STAGE/node_modules/webgpu/dist/linux-x64/"
cp node_modules/@tensorflow/tfjs-backend-wasm/package.json "$STAGE/node_modules/@tensorflow/tfjs-backend-wasm/"
cp node_modules/@tensorflow/tfjs-backend-wasm/dist/*.wasm "$STAGE/node_modules/@tensorflow/tfjs-backend-wasm/dist/"

for part in $PACK_SHARED; do
  mkdir -p "$(dirname "$STAGE/shared/data/$part")"
  cp -r "$SHARED_DIR/data/$part" "$STAGE/shared/data/$part"
done

say "exporting $EXPORT_CHECKPOINT (micse export, then micse embed for the reference vectors)"
node bin/micse.js export --checkpoint "$EXPORT_CHECKPOINT" --output "$STAGE/export" \
  --format hf --format sentence-transformers --format onnx --backend wasm >&2
awk -v n="$EXPORT_SENTENCES" 'NF && kept < n {print; kept++}' "$SHARED_DIR/data/wiki1m-head.txt" >"$STAGE/export/sentences.txt"
node bin/micse.js embed --model "$EXPORT_CHECKPOINT" --input "$STAGE/export/sentences.txt" \
  --output "$STAGE/export/micse.npy" --backend wasm >&2

{
  echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) by bench/device/pack.sh $*"
  echo "commit $(git rev-parse HEAD) ($(git log -1 --format=%s | cut -c1-100))"
  dirty=$(git status --porcelain --untracked-files=no | awk '{print $2}' | tr '\n' ' ')
  echo "uncommitted changes in: ${dirty:-none}"
  echo "node $(node --version), esbuild $("$ESBUILD" --version), webgpu $(node -p "require('./node_modules/webgpu/package.json').version")"
  echo "files:"
  (cd "$STAGE" && find . -type f -printf '%s\t%p\n' | sort -k2 | awk -F'\t' '{printf "  %10d  %s\n", $1, $2}')
} >"$STAGE/MANIFEST.txt"
cp "$STAGE/MANIFEST.txt" "$DEV/MANIFEST.txt"

say "compressing (xz $XZ_LEVEL)"
tar -C "$STAGE" -cf - . | xz -T0 "$XZ_LEVEL" >"$DEV/payload.tar.xz"
rm -rf "$STAGE"

mkdir -p .gl
missing=()
for d in "${DEBS[@]}"; do compgen -G ".gl/${d}_*.deb" >/dev/null || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "downloading ${missing[*]} into .gl/"
  lists=/tmp/amd64
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
  mkdir -p "$lists/partial"
  apt-get "${o[@]}" update >&2
  (cd .gl && apt-get "${o[@]}" download "${missing[@]}" >&2)
fi

bytes() { du -cb "$@" | tail -1 | cut -f1; }
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
carried=$(bytes .device .gl)
total=$((tree + carried))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "payload $(mib "$(bytes .device/payload.tar.xz)"), .gl $(mib "$(bytes .gl)"), working tree $(mib "$tree"): total $(mib "$total") of the ${LIMIT_MIB} MiB limit"
if [ "$total" -ge $((LIMIT_MIB * 1048576)) ]; then say "over the limit"; exit 1; fi
