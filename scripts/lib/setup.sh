# Shared by scripts/test and scripts/demo: install missing system packages, configure and build.

ZT_APT_PACKAGES=(build-essential cmake ninja-build pkg-config libopenblas-dev libopenmpi-dev openmpi-bin
                 libprotobuf-dev protobuf-compiler libgtest-dev nlohmann-json3-dev libcli11-dev libfmt-dev)

zt_missing_packages() {
  local missing=()
  for p in "${ZT_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

zt_install_dependencies() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "[setup] not a Debian/Ubuntu system: install ${ZT_APT_PACKAGES[*]} (or equivalents) yourself" >&2
    return 0
  fi
  local missing
  missing=$(zt_missing_packages)
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "[setup] installing: $missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[setup] missing packages: $missing" >&2
    echo "[setup] run: sudo apt-get install -y $missing" >&2
    exit 1
  fi
}

# cuDNN's C++ frontend (header-only, MIT licensed; on PyPI as nvidia-cudnn-frontend) for the cuDNN
# attention path, unpacked into .deps/cudnn_frontend/include. Only where a CUDA compiler is; a
# failed download only means attention runs on zerotrain's own kernels.
ZT_CUDNN_FRONTEND_VERSION=1.32.0
zt_fetch_cudnn_frontend() {
  local dest=.deps/cudnn_frontend
  [ -f "$dest/include/cudnn_frontend.h" ] && return 0
  [ "${ZT_CUDA:-AUTO}" = OFF ] && return 0
  command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ] || return 0
  local tmp
  tmp=$(mktemp -d)
  if python3 -m pip download --quiet --no-deps --dest "$tmp" "nvidia-cudnn-frontend==$ZT_CUDNN_FRONTEND_VERSION" \
       >/dev/null 2>&1 &&
     python3 -c 'import glob, sys, zipfile
z = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("include/")])' "$tmp" "$dest"; then
    echo "[setup] cuDNN frontend $ZT_CUDNN_FRONTEND_VERSION headers in $dest"
  else
    echo "[setup] could not fetch nvidia-cudnn-frontend $ZT_CUDNN_FRONTEND_VERSION:" \
      "attention will use zerotrain's kernels only" >&2
  fi
  rm -rf "$tmp"
}

zt_configure_and_build() {
  local build_dir=$1
  shift
  local targets=("$@")  # empty: everything
  local jobs=${JOBS:-$(nproc)}
  local launcher=()
  command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  local generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  zt_fetch_cudnn_frontend
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DZT_CUDA="${ZT_CUDA:-AUTO}" \
      -DZT_WERROR="${ZT_WERROR:-OFF}" "${launcher[@]}" ${ZT_CMAKE_ARGS:-}
  fi
  if [ ${#targets[@]} -gt 0 ]; then
    cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"
  else
    cmake --build "$build_dir" -j "$jobs"
  fi
}
