#!/usr/bin/env bash
# Installs the Debian packages mamba-train builds against, only those missing.
# Idempotent; safe to run on every CI start. The CUDA toolkit (nvcc, cuBLASLt,
# NCCL) is not installed here: it is expected on PATH, or build with -DMT_CUDA=OFF.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libhdf5-dev libcmocka-dev libopenblas-dev libinih-dev libjansson-dev zlib1g-dev libzip-dev
  libopenmpi-dev openmpi-bin
  python3 python3-venv python3-pip
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
