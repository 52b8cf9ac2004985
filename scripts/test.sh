#!/usr/bin/env bash
# The whole check, as CI runs it: set-up, lint, format, types, then the tests with coverage.
# Every check runs even when an earlier one fails; the script fails if any of them did.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not slow"   # arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bin=.venv/bin
failed=()

check() {
  local name=$1
  shift
  echo "== $name"
  local status=0
  "$@" || status=$?
  if [[ $status -ne 0 ]]; then
    failed+=("$name (exit $status)")
  fi
  return 0
}

check "ruff check" "$bin/ruff" check .
check "ruff format --check" "$bin/ruff" format --check .
check "mypy src" "$bin/mypy" src
check "pytest" "$bin/pytest" --cov=mlfactory --cov-branch --cov-report=term --cov-report=xml "$@"

if [[ ${#failed[@]} -gt 0 ]]; then
  echo
  for name in "${failed[@]}"; do
    echo "FAILED: $name" >&2
    if [[ $name == "pytest (exit 5)" ]]; then
      echo "  pytest collected no tests: check the arguments and tests/" >&2
    fi
  done
  exit 1
fi
echo
echo "all checks passed"
