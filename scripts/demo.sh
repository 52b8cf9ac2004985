#!/usr/bin/env bash
# The offline demo: set up the environment, then run the whole loop on real data
# (prepare -> train -> evaluate -> bundle -> serve -> predict). Arguments go to `mlfactory demo`,
# e.g. `bash scripts/demo.sh --out /tmp/demo --verbose`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
exec .venv/bin/mlfactory demo "$@"
