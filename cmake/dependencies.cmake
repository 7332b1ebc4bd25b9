# Finds every library mamba-train links. A missing one stops the configure with
# the Debian package that provides it (scripts/install-deps.sh installs them).

find_package(PkgConfig QUIET)
find_package(Threads REQUIRED)

find_package(OpenMP COMPONENTS C)
if(NOT OpenMP_C_FOUND)
  message(FATAL_ERROR "OpenMP for C not found: install gcc with libgomp (Debian: build-essential)")
endif()

# find_path/find_library rather than pkg-config alone, so that libraries
# unpacked under a prefix (-DCMAKE_PREFIX_PATH, see scripts/gpu-check.sh) are found.
function(mt_find_library target header lib package)
  cmake_parse_arguments(ARG "" "" "SUFFIXES" ${ARGN})
  find_path(${target}_INCLUDE ${header} PATH_SUFFIXES ${ARG_SUFFIXES})
  find_library(${target}_LIBRARY NAMES ${lib} PATH_SUFFIXES ${ARG_SUFFIXES})
  if(NOT ${target}_INCLUDE OR NOT ${target}_LIBRARY)
    message(FATAL_ERROR "${header} / lib${lib} not found: install the Debian package ${package} "
                        "(scripts/install-deps.sh), or point -DCMAKE_PREFIX_PATH at it")
  endif()
  add_library(mt::${target} INTERFACE IMPORTED)
  target_include_directories(mt::${target} INTERFACE ${${target}_INCLUDE})
  target_link_libraries(mt::${target} INTERFACE ${${target}_LIBRARY})
  message(STATUS "${target}: ${${target}_LIBRARY}")
endfunction()

mt_find_library(openblas cblas.h openblas libopenblas-dev SUFFIXES openblas-pthread openblas)
mt_find_library(inih ini.h inih libinih-dev)
mt_find_library(jansson jansson.h jansson libjansson-dev)
mt_find_library(cmocka cmocka.h cmocka libcmocka-dev)
# The tokenizer (src/text): PCRE2 runs the pre-tokenizers' regexes, utf8proc
# normalizes (NFC and the other forms).
mt_find_library(pcre2 pcre2.h pcre2-8 libpcre2-dev)
mt_find_library(utf8proc utf8proc.h utf8proc libutf8proc-dev)
# libzip reads PyTorch checkpoints (zip archives). zip.h includes zipconf.h,
# which Debian 12 puts beside it but some distributions elsewhere: ask for both.
mt_find_library(zip zip.h zip libzip-dev)
find_path(zipconf_INCLUDE zipconf.h HINTS ${zip_INCLUDE})
if(NOT zipconf_INCLUDE)
  message(FATAL_ERROR "zipconf.h (included by ${zip_INCLUDE}/zip.h) not found: install the Debian package "
                      "libzip-dev (scripts/install-deps.sh), or point -DCMAKE_PREFIX_PATH at it")
endif()
target_include_directories(mt::zip INTERFACE ${zipconf_INCLUDE})

find_package(HDF5 COMPONENTS C)
if(NOT HDF5_FOUND)
  message(FATAL_ERROR "HDF5 (C) not found: install the Debian package libhdf5-dev")
endif()
add_library(mt::hdf5 INTERFACE IMPORTED)
target_include_directories(mt::hdf5 INTERFACE ${HDF5_C_INCLUDE_DIRS})
target_link_libraries(mt::hdf5 INTERFACE ${HDF5_C_LIBRARIES})

# zlib's crc32 checksums checkpoint files. HDF5 links zlib itself on Debian,
# but neither its headers nor that dependency are promised, so ask for it.
find_package(ZLIB)
if(NOT ZLIB_FOUND)
  message(FATAL_ERROR "zlib not found: install the Debian package zlib1g-dev")
endif()

if(MT_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    message(FATAL_ERROR "MT_CUDA is ON but no CUDA compiler (nvcc) was found: put the CUDA toolkit "
                        "on PATH, or configure with -DMT_CUDA=OFF for a CPU-only build")
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  find_package(CUDAToolkit REQUIRED)
  find_path(nccl_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(nccl_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(NOT nccl_INCLUDE OR NOT nccl_LIBRARY)
    message(FATAL_ERROR "NCCL (nccl.h, libnccl) not found beside the CUDA toolkit "
                        "(${CUDAToolkit_LIBRARY_DIR}): install NCCL or configure with -DMT_CUDA=OFF")
  endif()
  add_library(mt::nccl INTERFACE IMPORTED)
  target_include_directories(mt::nccl INTERFACE ${nccl_INCLUDE})
  target_link_libraries(mt::nccl INTERFACE ${nccl_LIBRARY})
endif()
