#!/bin/sh
# Packs what tests/gpu/bench.sh needs on a GPU machine that has no Rust toolchain and no package
# registry (a rented or lent GPU box with only a driver and PyTorch), into .gpu/ (git-ignored):
#
#   .gpu/minordpo.gz   the release binary, stripped and gzipped (≈ 24 MB; 88 MB unpacked)
#   .gpu/build.txt     the commit it was built from, the compiler, the date
#   .gpu/debs/*.deb    the Vulkan loader, libglvnd (which NVIDIA's Vulkan driver links to) and
#                      OpenSSL 3 (which the binary links to), used there only if the system lacks them
#
# Run it here, on Linux x86-64 with Rust (and apt for the .debs; without apt it packs the binary
# alone), then copy the repository with .gpu/ to the GPU machine and run tests/gpu/bench.sh there:
# it takes the packed binary instead of building.
#
#   tests/gpu/prepare.sh
set -eu
cd "$(dirname "$0")/../.."
cargo build --release --bin minordpo
rm -rf .gpu
mkdir -p .gpu/debs
strip -o .gpu/minordpo target/release/minordpo
gzip -9 .gpu/minordpo
{
    echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "rustc: $(rustc --version)"
    echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m)"
} > .gpu/build.txt
if command -v apt-get > /dev/null; then
    (cd .gpu/debs && apt-get download libvulkan1 libglvnd0 libglx0 libgl1 libegl1 libgles2 \
        libopengl0 libssl3)
else
    echo "no apt-get here: .gpu/ holds the binary alone; the GPU machine needs its own Vulkan loader" >&2
fi
ls -l .gpu .gpu/debs
