#!/bin/bash
# steepest on a real GPU: correctness first (the GPU test binaries), then speed (bench, PyTorch
# CUDA on the same sizes), then real MNIST training. Each step has its own timeout. Everything
# lands in $OUT/results.tgz (the device returns at most 8 files).
cd "$(dirname "$0")"  # .dev/ on the device machine
tar xzf bundle.tgz
R=/tmp/results; mkdir -p $R
# NVIDIA's Vulkan ICD through EGL: the GLX one finds no display in this headless container.
printf '{"file_format_version":"1.0.1","ICD":{"library_path":"/usr/local/nvidia/lib64/libEGL_nvidia.so.0","api_version":"1.4.312"}}' > /tmp/icd_egl.json
export VK_DRIVER_FILES=/tmp/icd_egl.json STEEPEST_REQUIRE_GPU=1 RUST_BACKTRACE=1
B=bin
nvidia-smi --query-gpu=name,driver_version --format=csv > $R/nvidia.txt 2>&1
timeout 60 $B/steepest devices > $R/devices.txt 2>&1
for t in cross_check_matmul gpu_gradients cross_check_conv cross_check_pool cross_check_batchnorm cross_check_elementwise cross_check_loss cross_check_optim gpu_step training param_arena; do
  echo "== $t"; timeout 150 $B/$t --test-threads 4 > $R/test-$t.txt 2>&1; echo "rc=$?"; grep -E "test result|FAILED|panicked" $R/test-$t.txt
done > $R/tests.txt 2>&1
echo "== doctor $(date +%T)"
timeout 90 $B/steepest doctor > $R/doctor.txt 2>&1; echo "doctor rc=$?"; tail -3 $R/doctor.txt
echo "== bench $(date +%T)"
timeout 240 $B/steepest bench --device gpu --json --sizes 256,512,1024,2048,4096 --models mlp,lenet > $R/bench.json 2> $R/bench.err
timeout 120 $B/steepest bench --device gpu --sizes 1024,4096 --models mlp,lenet,resnet8,resnet20,cifar-cnn > $R/bench.txt 2>&1
echo "== torch $(date +%T)"
timeout 150 python3 torch_ref.py mnist --cifar > $R/torch.json 2> $R/torch.err
# What wgpu's injected shader checks cost: all of them (software adapters' default) and none, beside the
# default on real GPUs (no loop counters) above (STEEPEST_SHADER_CHECKS, src/gpu/kernels.rs).
for c in all none; do
  echo "== checks $c $(date +%T)"
  STEEPEST_SHADER_CHECKS=$c timeout 90 $B/steepest bench --device gpu --sizes 1024,4096 --models mlp,lenet > $R/bench-checks-$c.txt 2>&1
  grep -E "^  (1024|4096|wide|register)|samples|per .* step" $R/bench-checks-$c.txt
done
STEEPEST_SHADER_CHECKS=all timeout 60 $B/steepest train --dataset mnist --data-dir mnist --model lenet --epochs 1 --device gpu --optimizer momentum --lr 0.05 > $R/train-lenet-allchecks.txt 2>&1
for m in lenet mlp:256; do
  timeout 120 $B/steepest train --dataset mnist --data-dir mnist --model $m --epochs 2 --device gpu --optimizer momentum --lr 0.05 --metrics $R/train-${m%%:*}.jsonl > $R/train-${m%%:*}.txt 2>&1
done
grep -h "epoch" $R/train-*.txt
cp $R/tests.txt $R/bench.txt $OUT/ 2>/dev/null
tar czf $OUT/results.tgz -C /tmp results
echo done
