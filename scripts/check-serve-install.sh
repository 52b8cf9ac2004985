#!/usr/bin/env bash
# Prove that `pip install ".[serve]"` is a torch-free serving install that can serve.
#
# Creates a throwaway venv, installs the serve extra (non-editable, constrained by the lock),
# then asserts: torch (and lightning, timm, mlflow, and the UI's streamlit and selenium) cannot
# be imported; the serving app, the CLI and what the image/text/audio encoders import at request
# time can; `mlfactory serve --help` runs. CI runs this in its own job (.github/workflows/ci.yml).
#
#   bash scripts/check-serve-install.sh      # PYTHON=python3.12 to pick the interpreter
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

python=${PYTHON:-}
if [[ -z "$python" ]]; then
  python=python3
  command -v python3.11 >/dev/null && python=python3.11
fi

work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

echo "== creating a throwaway venv with $python"
"$python" -m venv "$work/venv"
bin="$work/venv/bin"
"$bin/python" -m pip install --quiet --upgrade pip

# Build from a copy of the sources: an in-tree build would leave build/ behind, and a stale
# build/lib can smuggle deleted modules into the next wheel.
mkdir "$work/src"
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/src" "$work/src/"
rm -rf "$work"/src/src/*.egg-info

echo "== pip install '.[serve]' -c requirements/lock.txt"
"$bin/python" -m pip install --quiet --progress-bar off "$work/src[serve]" -c "$repo/requirements/lock.txt"

# Run from the temporary folder, so only the installed package can be imported.
cd "$work"
failed=0
for forbidden in torch torchvision lightning timm mlflow streamlit selenium; do
  if "$bin/python" -c "import $forbidden" >/dev/null 2>&1; then
    echo "FAIL: '$forbidden' is importable in the serving install" >&2
    failed=1
  fi
done
"$bin/python" -c "import mlfactory.serving.app, mlfactory.serving.run, mlfactory.cli" ||
  {
    echo "FAIL: the serving app does not import in the serving install" >&2
    failed=1
  }
# What each modality's encoder imports at request time (src/mlfactory/modalities/*.py).
for pair in text:tokenizers audio:soundfile audio:soxr; do
  modality=${pair%%:*} module=${pair#*:}
  if ! "$bin/python" -c "import $module" >/dev/null 2>&1; then
    echo "FAIL: serving $modality bundles needs '$module': add it to the serve extra" >&2
    failed=1
  fi
done
"$bin/mlfactory" serve --help >/dev/null ||
  {
    echo "FAIL: 'mlfactory serve --help' failed in the serving install" >&2
    failed=1
  }
size=$(du -sh "$work/venv" | cut -f1)
if [[ $failed -ne 0 ]]; then
  exit 1
fi
echo "OK: the serving install ($size) imports mlfactory.serving.app and has no torch"
