#!/usr/bin/env bash
# The RLinf ManiSkill action peer (issue 25): RLinf's own Unnormalize -> ManiSkillOutputs -> prepare_actions path in a
# venv of its own (numpy, torch, einops, pydantic, numpydantic), its fixtures into tests/fixtures/peers/rlinf_maniskill;
# tests/test_maniskill_conventions.py reads them. RLinf's files come from its git dir (the commit is recorded in each
# fixture; written at a3816b596478dcd8a5c69a6ec1468c9519f77b5b), openpi's transforms.py from an openpi src/.
#   bash tools/peers/rlinf_maniskill.sh [VENV] [OUT]
# RLINF_GIT (default: the mirrored bare repo under /work/.mirror/RLinf+RLinf), OPENPI_SRC (default
# /work/peers/openpi-src/src: git --git-dir=<openpi git dir> --work-tree=/work/peers/openpi-src checkout HEAD -- src).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${1:-/work/peers/rlinf-maniskill-venv}
OUT=${2:-tests/fixtures/peers/rlinf_maniskill}
RLINF_GIT=${RLINF_GIT:-$(ls -d /work/.mirror/RLinf+RLinf/*/ 2>/dev/null | head -1)}
OPENPI_SRC=${OPENPI_SRC:-/work/peers/openpi-src/src}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -c constraints.txt numpy torch einops pydantic numpydantic
fi
"$VENV/bin/python" tools/peers/rlinf_maniskill.py --rlinf-git "${RLINF_GIT:?set RLINF_GIT to the RLinf git dir}" \
  --openpi-src "$OPENPI_SRC" --out "$OUT"
