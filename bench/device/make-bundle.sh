#!/usr/bin/env bash
# Prepares .dev/ (git-ignored) for a run on a lent GPU machine: release binaries, the GPU test
# binaries, MNIST from ../shared/data, this folder's scripts, and the Vulkan loader in .gl/.
# Then, with the device tool: carry [".gl", ".dev"] and run
#   for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; bash .dev/run-gpu-checks.sh
# Results come back as $OUT/results.tgz (plus tests.txt and bench.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bins
cargo test --release --no-run
rm -rf .dev && mkdir -p .dev/bin .dev/mnist
cp target/release/steepest .dev/bin/
for t in cross_check_matmul gpu_gradients cross_check_conv cross_check_pool cross_check_batchnorm \
         cross_check_elementwise cross_check_loss cross_check_optim gpu_step training param_arena; do
    cp "$(ls -t target/release/deps/$t-* | grep -v '\.d$' | head -1)" .dev/bin/$t
done
strip .dev/bin/*
(cd .dev && tar czf bundle.tgz bin && rm -rf bin)
cp ../shared/data/mnist/*.gz .dev/mnist/
cp bench/device/run-gpu-checks.sh bench/device/torch_ref.py .dev/
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    mkdir -p .gl .apt-lists/partial
    o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$PWD/.apt-lists"
    apt-get $o update >/dev/null
    (cd .gl && apt-get $o download libvulkan1)
fi
du -sh .dev .gl
