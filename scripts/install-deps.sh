#!/usr/bin/env bash
# Sets up what building and testing mamba-train needs on a Debian or Ubuntu
# machine: the Debian packages (only those missing), and build/pyenv, a
# Python environment with tools/requirements.txt for the data tool and its
# test. Idempotent; safe to run on every CI start. The CUDA toolkit (nvcc,
# cuBLASLt, NCCL) is not installed here: it is expected on PATH, or build
# with -DMT_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libhdf5-dev libcmocka-dev libopenblas-dev libinih-dev libjansson-dev zlib1g-dev libzip-dev
  libpcre2-dev libutf8proc-dev
  libopenmpi-dev openmpi-bin
  python3 python3-venv python3-pip
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all Debian packages present"
else
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# tests/CMakeLists.txt runs test_prepare_data with this environment.
venv=build/pyenv
mkdir -p build
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check --timeout 60 --retries 5 \
     -r tools/requirements.txt; then
  echo "install-deps: cannot install tools/requirements.txt into $venv (is PyPI reachable?)" >&2
  exit 1
fi
echo "install-deps: Python packages of tools/requirements.txt in $venv"
