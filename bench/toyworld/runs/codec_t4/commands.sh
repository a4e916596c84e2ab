#!/usr/bin/env bash
# issue 18 item 1: Wan's 4x causal time stride as a trained codec (15 min alone), and the codec recipe's backbone
# on it, stopped at 13 000 of 20 000 steps when its curve flattened far behind the frame-by-frame codec's
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the repository root
P=.venv/bin/python
$P -m bench.toyworld.train_codec --temporal-stride 4 --steps 10000 --out out/codec_t4      # judged on 9-frame clips
$P -m bench.toyworld.pretrain --positions --lr 2e-3 --noise-shift 3 --codec out/codec_t4 --video-batch 16 \
    --image-batch 64 --pool-clips 12000 --steps 20000 --judge-every 4000 --minutes 45 --out out/pretrain_codec_t4
# (stopped by hand after the 12 000-step judgement; the weights saved at step 13 000 judged on 64 captions:)
$P -m bench.toyworld.generation --models out/pretrain_codec_t4 --count 64 --no-write > out/t4_gen64.json
