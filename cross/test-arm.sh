#!/usr/bin/env bash
# Builds spoke-agent for aarch64 (cross/build-debian.sh) and runs it under
# qemu-aarch64-static against a hub on this machine: tests/tests/arm.rs.
# Run as root on Debian 12 (it installs the cross toolchain and qemu).
#
#   cross/test-arm.sh                       # build, then test
#   SPOKE_ARM_AGENT=path cross/test-arm.sh  # test an agent built before
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${SPOKE_ARM_AGENT:-}" ]; then
  cross/build-debian.sh
  SPOKE_ARM_AGENT="$(realpath "${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/release-agent/spoke-agent")"
fi
export SPOKE_ARM_AGENT
# Unset the cross build's compiler: the hub and the test are built natively.
env -u RUSTC -u RUSTDOC cargo build --bins -p spoke-hub -p spoke-cli
examples/build.sh
cargo test -p spoke-e2e --test arm -- --ignored --nocapture
