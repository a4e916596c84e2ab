#!/usr/bin/env bash
# issue 18 item 2: depth on the codec's tokens at about the shallow run's compute (toy-pos-deep: 8 layers, 10 000
# steps, 30 min alone, against toy-pos: 4 layers, 20 000 steps, 39 min); the latent pool is the v3 run's, reused
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the repository root
P=.venv/bin/python; M=out/pretrain_codec_deep
mkdir -p $M && cp out/pretrain_codec_v3/latent_pool.safetensors $M/   # optional: the same pool, not encoded again
$P -m bench.toyworld.pretrain --positions --lr 2e-3 --noise-shift 3 --preset toy-pos-deep --codec bench/toyworld/runs/codec_v3 \
    --video-batch 16 --image-batch 64 --pool-clips 12000 --steps 10000 --judge-every 2000 --minutes 30 --out $M
$P -m bench.toyworld.generation --models $M --count 64 --no-write > $M/generation_64.json
