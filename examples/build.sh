#!/usr/bin/env bash
# Builds every example guest to wasm32-wasip1 and copies the modules to
# examples/out/<name>.wasm.
#
# The guests that use WASI 0.2 sockets (web, netcheck; listed in
# `components` below) are linked with rustup's `wasm-component-ld` instead
# of `wasm-ld`, which turns them into components: it adapts their preview 1
# calls with the adapter it embeds and adds the `wasi:sockets` imports and
# probe exports that the `component-type` sections of wasip2/wit-bindgen
# describe. Only their final link differs (`cargo rustc -- -Clinker=...`),
# so the standard library built for the others is reused.
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

components=(web netcheck)
exclude=()
for c in "${components[@]}"; do exclude+=(--exclude "$c"); done
# rustup ships wasm-component-ld (and a wasm-ld) with every toolchain.
host_bin="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
component_link=(-Clinker="$host_bin/wasm-component-ld" -Clink-arg=--wasm-ld-path="$host_bin/gcc-ld/wasm-ld")
if [ ! -x "$host_bin/wasm-component-ld" ]; then
  echo "examples/build.sh: $host_bin/wasm-component-ld is missing (it comes with rustup's Rust >= 1.82)" >&2
  exit 1
fi

if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  cargo build --release --target wasm32-wasip1 --workspace "${exclude[@]}"
  for c in "${components[@]}"; do
    cargo rustc --release --target wasm32-wasip1 -p "$c" --bin "$c" -- "${component_link[@]}"
  done
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
  debweb=(-Zbuild-std=std,panic_abort
    --config 'target.wasm32-wasip1.linker="wasm-ld-22"'
    --config 'target.wasm32-wasip1.rustflags=["-Clink-self-contained=no","-Lnative=/usr/lib/wasm32-wasi","-Clink-arg=/usr/lib/wasm32-wasi/crt1-command.o"]')
  cargo +debweb build --release --target wasm32-wasip1 --workspace "${exclude[@]}" "${debweb[@]}"
  for c in "${components[@]}"; do
    cargo +debweb rustc --release --target wasm32-wasip1 -p "$c" --bin "$c" "${debweb[@]}" -- "${component_link[@]}"
  done
fi

for wasm in "$CARGO_TARGET_DIR"/wasm32-wasip1/release/*.wasm; do
  cp "$wasm" "$out/"
done
ls -l "$out"/*.wasm >&2
