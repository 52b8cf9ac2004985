#!/usr/bin/env bash
# The offline demo: set up the environment in the checkout (only what the demo needs), then run
# the whole loop on real data (prepare -> train -> evaluate -> bundle -> serve -> predict) in the
# folder this is called from: everything the demo makes goes into its --out (./mlfactory-demo by
# default). Arguments go to `mlfactory demo`, e.g. `bash scripts/demo.sh --out /tmp/demo -v`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

MLFACTORY_SETUP_FOR=demo bash "$repo/scripts/setup.sh"
exec "$repo/.venv/bin/mlfactory" demo "$@"
