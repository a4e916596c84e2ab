#!/usr/bin/env bash
# issue 18: the codec recipe's backbone on codec v3, the adapter variants on it, judged (about 55 min alone)
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the repository root
P=.venv/bin/python; M=out/pretrain_codec_v3
$P -m bench.toyworld.pretrain --positions --lr 2e-3 --noise-shift 3 --codec bench/toyworld/runs/codec_v3 --video-batch 16 \
    --image-batch 64 --pool-clips 12000 --steps 20000 --judge-every 4000 --minutes 100 --out $M      # 39 min
$P -m bench.toyworld.generation --models $M --count 64 --no-write > $M/generation_64.json
for v in ours ffn_lora still oracle; do                                                          # 2-4 min each
  $P -m bench.toyworld.train_adapter --variant $v --models $M --runs $M/runs
done
$P -m bench.toyworld.evaluate --models $M --runs $M/runs --per-kind 8 --no-write                  # -> $M/evaluation.json
cp $M/evaluation.json out/v3_evaluation.json
$P -m bench.toyworld.train_adapter --variant still --still-frames 2 --models $M --runs $M/runs_still2
$P -m bench.toyworld.evaluate --models $M --runs $M/runs_still2 --per-kind 8 --no-write
mv $M/evaluation.json $M/evaluation_still2.json && cp out/v3_evaluation.json $M/evaluation.json
# codec v3's decoder trained on (the latent space kept): -> runs/codec_v3/decoder_continued/ (6 min, judged after)
$P -m bench.toyworld.train_codec --init bench/toyworld/runs/codec_v3 --decoder-only --lr 5e-4 --steps 8000 --out out/codec_v3dec
