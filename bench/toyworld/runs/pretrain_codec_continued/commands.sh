#!/usr/bin/env bash
# issue 18 item 2 probe: continue the codec backbone under two recipes of about equal compute
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the repository root
D=bench/toyworld/runs/pretrain_codec
COMMON="--positions --lr 5e-4 --noise-shift 3 --codec $D --init $D --video-batch 16 --image-batch 64 --pool-clips 12000 --seed 1 --judge-every 2000 --minutes 60"
.venv/bin/python -m bench.toyworld.pretrain $COMMON --video-every 2 --steps 8000 --out out/continued_mixed > out/continued_mixed.log 2>&1
mkdir -p out/continued_videos
cp out/continued_mixed/latent_pool.safetensors out/continued_videos/
.venv/bin/python -m bench.toyworld.pretrain $COMMON --video-every 1 --steps 6000 --out out/continued_videos > out/continued_videos.log 2>&1
for d in mixed videos; do
  .venv/bin/python -m bench.toyworld.generation --models out/continued_$d --count 64 --no-write > out/continued_${d}_64.json 2>&1
done
