#!/usr/bin/env bash
# Builds every example guest to wasm32-wasip1 and copies the modules to
# examples/out/<name>.wasm.
#
# With a normal toolchain (`rustup target add wasm32-wasip1`) this is a plain
# `cargo build --target wasm32-wasip1`. On machines whose rustup has no wasm
# target and cannot download one, it builds with Debian's rustc-web, which can
# compile the standard library for wasm32-wasip1 from source (-Zbuild-std);
# run as root, it installs those packages itself.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
out="$here/out"
mkdir -p "$out"
export CARGO_TARGET_DIR="${SPOKE_GUEST_TARGET_DIR:-$here/target}"

if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  cargo build --release --target wasm32-wasip1
else
  debian_pkgs=(rustc-web cargo-web rust-web-src wasi-libc lld-22)
  if ! dpkg -s "${debian_pkgs[@]}" >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "examples/build.sh: no wasm32-wasip1 target. Either run 'rustup target add wasm32-wasip1'," >&2
      echo "or install Debian's: apt-get install ${debian_pkgs[*]}" >&2
      exit 1
    fi
    echo "examples/build.sh: installing ${debian_pkgs[*]} (Debian) to build wasm guests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debian_pkgs[@]}" >/dev/null
  fi
  rustup toolchain link debweb /usr >/dev/null 2>&1 || true
  # rustc-web is a stable compiler; -Zbuild-std needs its unstable switch.
  export RUSTC_BOOTSTRAP=1
  cargo +debweb build --release --target wasm32-wasip1 \
    -Zbuild-std=std,panic_abort \
    --config 'target.wasm32-wasip1.linker="wasm-ld-22"' \
    --config 'target.wasm32-wasip1.rustflags=["-Clink-self-contained=no","-Lnative=/usr/lib/wasm32-wasi","-Clink-arg=/usr/lib/wasm32-wasi/crt1-command.o"]'
fi

for wasm in "$CARGO_TARGET_DIR"/wasm32-wasip1/release/*.wasm; do
  cp "$wasm" "$out/"
done
ls -l "$out"/*.wasm >&2
