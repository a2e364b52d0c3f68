#!/usr/bin/env bash
# Builds spoke-agent for a 64-bit ARM board (Raspberry Pi 3/4/5, 64-bit OS)
# without a container engine, with Debian's cross toolchain: rustc-web's
# standard library for arm64 and gcc-aarch64-linux-gnu as the linker.
# Run as root on Debian 12, it installs what it needs.
#
#   cross/build-debian.sh            # -> $CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release-agent/spoke-agent
#
# With Docker or Podman, `cross` does the same for every target (README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=aarch64-unknown-linux-gnu

pkgs=(rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
if ! dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "cross/build-debian.sh: please install (Debian, one transaction): apt-get install ${pkgs[*]}" >&2
    exit 1
  fi
  echo "cross/build-debian.sh: installing ${pkgs[*]} (Debian)" >&2
  dpkg --add-architecture arm64
  apt-get update -qq
  # One transaction: the arm64 standard library must match rustc-web's version.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# Debian's rustc has the aarch64 standard library; rustup's does not.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# `cargo run`/`cargo test` for this target go through qemu. Never add
# `-L /usr/aarch64-linux-gnu`: two glibcs then mix and the program hangs.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
# The agent's own profile (Cargo.toml): fat LTO, one codegen unit, panic=abort.
cargo build --profile release-agent --locked -p spoke-agent --target "$target"
bin="${CARGO_TARGET_DIR:-target}/$target/release-agent/spoke-agent"
# The profile's `strip = true` leaves the symbol table in when linking
# through Debian's cross gcc (13.6 MB); the cross binutils strip it (10.4 MB).
aarch64-linux-gnu-strip "$bin"
ls -l "$bin" >&2
file "$bin" >&2 || true
