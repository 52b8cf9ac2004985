#!/usr/bin/env bash
# Regenerate requirements/lock.txt from the working virtual environment.
#
# The lock is a `pip freeze` of a venv in which `pip install -e ".[dev,docs,bench]"` succeeded and
# `pip check` is clean. It is used as constraints (`-c requirements/lock.txt`), never as a
# requirements file: it pins whatever an extra pulls in, and installs nothing by itself.
#
#   bash scripts/update-lock.sh            # from .venv
#   VENV=/path/to/venv bash scripts/update-lock.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=${VENV:-.venv}
python="$venv/bin/python"
if [[ ! -x "$python" ]]; then
  echo "error: no virtual environment at $venv: run bash scripts/setup.sh first" >&2
  exit 2
fi
"$python" -m pip check

lock=requirements/lock.txt
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
  echo "# Full pinned lock of the mlfactory development environment: every extra (serve, train, bench,"
  echo "# dev, docs) plus the tools installed beside them (e.g. dvc, pre-commit)."
  echo "# Generated on $("$python" -c 'import platform; print(platform.python_version(), platform.machine())')"
  echo "# with torch $("$python" -c 'import importlib.metadata as m; print(m.version("torch"))')"
  echo "# from PyPI (its CUDA wheels are pinned too: that is what pip installs on Linux x86_64)."
  echo "#"
  echo "# Use it as constraints, e.g.  pip install -e \".[dev]\" -c requirements/lock.txt"
  echo "# Regenerate after changing dependencies in pyproject.toml:"
  echo "#   .venv/bin/pip install -e \".[dev,docs,bench]\" && bash scripts/update-lock.sh"
  echo "# (which runs: .venv/bin/pip freeze --exclude-editable, minus mlfactory itself)."
  "$python" -m pip freeze --exclude-editable | grep -viE '^mlfactory([=@ ]|$)'
} >"$tmp"
mv "$tmp" "$lock"
trap - EXIT
echo "wrote $lock ($(grep -cv '^#' "$lock") pins)"
