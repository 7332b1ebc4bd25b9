#!/usr/bin/env bash
# Downloads (does not install) the Debian packages that the GPU test host
# lacks (see shared/gpu-host.md) into .gpu-debs/, which git ignores and which
# scripts/gpu-check.sh unpacks under a prefix there. Run on the development
# machine, then carry .gpu-debs to the GPU host.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu-debs
cd .gpu-debs
apt-get download libcmocka0 libcmocka-dev libinih1 libinih-dev libjansson-dev \
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libzip4 libzip-dev \
  libpcre2-8-0 libpcre2-dev libutf8proc2 libutf8proc-dev
ls -1 *.deb
