# Sourced by the GPU scripts (gpu-check.sh, bench/compare_reference.sh):
# the libraries the GPU host lacks come as Debian packages in .gpu-debs/
# (made by scripts/fetch-gpu-debs.sh) and are unpacked under a prefix, never
# into /; sets cmake_args (an sm_90 Release build that finds them) and
# LD_LIBRARY_PATH, and puts nvcc on PATH.
cmake_args=(-DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release)
if compgen -G ".gpu-debs/*.deb" >/dev/null; then
  mt_deps_prefix=/tmp/mt-deps
  # Unpacked once per set of packages: a second script sourcing this while
  # the first one's programs run must not rewrite the libraries under them.
  mt_deps_stamp=$(ls .gpu-debs/*.deb | md5sum | cut -c1-16)
  if [ ! -f "$mt_deps_prefix/.unpacked-$mt_deps_stamp" ]; then
    for deb in .gpu-debs/*.deb; do dpkg -x "$deb" "$mt_deps_prefix"; done
    touch "$mt_deps_prefix/.unpacked-$mt_deps_stamp"
  fi
  mt_deps_libdir=$mt_deps_prefix/usr/lib/x86_64-linux-gnu
  cmake_args+=(-DCMAKE_PREFIX_PATH=$mt_deps_prefix/usr)
  export LD_LIBRARY_PATH=$mt_deps_libdir:$mt_deps_libdir/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
command -v nvcc >/dev/null 2>&1 || export PATH=/usr/local/cuda/bin:$PATH
