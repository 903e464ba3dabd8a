#!/usr/bin/env bash
# bash bench/device/lavapipe.sh [DIR]: Mesa's software Vulkan driver, lavapipe, unpacked into DIR (default
# /tmp/micse-lavapipe) with nothing installed system-wide, for the webgpu tests and a dry run of bench/device/run.sh
# on a machine without a GPU. Then:
#
#   source DIR/env
#   MICSE_DEVICE_SIZES=tiny MICSE_DEVICE_LIMIT_SCALE=10 MICSE_DEVICE_BUDGET_S=1200 OUT=/tmp/devout bash bench/device/run.sh
#
# Debian bookworm's own Mesa (22.3) lacks a feature Dawn requires (shaderUniform*ArrayDynamicIndexing), so the driver
# comes from bookworm-backports (Mesa 25), fetched with apt through a source list of its own (DIR/apt: the system's
# lists and sources stay as they are), with the Vulkan loader from bookworm; `dpkg -x` unpacks them into DIR/root.
# DIR/env points the Vulkan loader at that driver (VK_DRIVER_FILES), puts DIR/root's libraries first on
# LD_LIBRARY_PATH and sets XDG_RUNTIME_DIR. Installing mesa-vulkan-drivers system-wide instead would also put
# bookworm's unusable lavapipe in /usr/share/vulkan/icd.d, where scripts/with-vulkan.mjs then no longer picks
# SwiftShader.
set -euo pipefail

DIR=$(mkdir -p "${1:-/tmp/micse-lavapipe}" && cd "${1:-/tmp/micse-lavapipe}" && pwd)
APT=$DIR/apt
ROOT=$DIR/root
LIB=$ROOT/usr/lib/x86_64-linux-gnu
BACKPORTS=(mesa-vulkan-drivers libdrm2 libdrm-amdgpu1)
BOOKWORM=(libvulkan1)

say() { echo "lavapipe: $*" >&2; }

[ "$(uname -m)" = x86_64 ] || { say "this script unpacks x86-64 packages; this machine is $(uname -m)"; exit 1; }
command -v apt-get >/dev/null || { say "needs apt-get (Debian bookworm)"; exit 1; }

mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs" "$ROOT" "$DIR/xdg"
chmod 700 "$DIR/xdg"
cat >"$APT/sources.list" <<LIST
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-backports main
LIST
OPTS=(-o "Dir::Etc::sourcelist=$APT/sources.list" -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$APT/lists"
  -o "Dir::Cache=$APT/cache" -o "APT::Sandbox::User=root" -qq)
say "apt-get update (bookworm and bookworm-backports, lists in $APT)"
apt-get "${OPTS[@]}" update
(cd "$APT/debs" && apt-get "${OPTS[@]}" download "${BACKPORTS[@]/%//bookworm-backports}" "${BOOKWORM[@]}")
for deb in "$APT"/debs/*.deb; do dpkg -x "$deb" "$ROOT"; done

[ -f "$LIB/libvulkan_lvp.so" ] || { say "no libvulkan_lvp.so in the unpacked packages"; exit 1; }
python3 - "$ROOT/usr/share/vulkan/icd.d/lvp_icd.json" "$LIB/libvulkan_lvp.so" "$DIR/lvp_icd.json" <<'PY'
import json, sys
icd = json.load(open(sys.argv[1]))
icd['ICD']['library_path'] = sys.argv[2]
json.dump(icd, open(sys.argv[3], 'w'), indent=2)
PY
cat >"$DIR/env" <<ENV
export VK_DRIVER_FILES=$DIR/lvp_icd.json
export LD_LIBRARY_PATH=$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export XDG_RUNTIME_DIR=$DIR/xdg
ENV
say "ready: source $DIR/env (Mesa $(ls "$APT"/debs/mesa-vulkan-drivers_*.deb | sed 's/.*drivers_\([^_]*\)_.*/\1/'))"
