#!/usr/bin/env bash
# ToyWorld pretraining on a lent GPU (issue 18, item 2): the one prepared run for a session that has a device.
#
# What it must show: whether 4x the CPU run's samples (the codec recipe with 4x larger batches, same steps)
# bring the generator towards the goals (present >= 0.95, shape >= 0.9, area change <= 2x the truth's) where
# every CPU lever left it at 0.88-0.93 / 0.74-0.80 / 5.5-6x. Checkpoints are judged on 32 held-out captions every
# JUDGE_EVERY steps (generation_curve.jsonl), the end on 64; the run stops after MINUTES and can be continued
# by running this again on the same (warm) machine: its folder keeps the resume state.
#
#   on the device:  OUT=$OUT bash bench/toyworld/device_pretrain.sh
#   tried here:     DEVICE=cpu STEPS=202 JUDGE_EVERY=101 POOL=64 VIDEO_BATCH=2 IMAGE_BATCH=4 COUNT=2 OUT=/tmp/dev \
#                       bash bench/toyworld/device_pretrain.sh
#
# Back in $OUT (the device's file limits: 8 files of at most 16 MiB): the backbone, text encoder and codec files
# (a ToyWorld model folder; judge them here with `python -m bench.toyworld.generation --models DIR`), the log,
# the curve and the end's judgement. The resume state (about 18 MB) stays on the machine.
set -euo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-20000}
MINUTES=${MINUTES:-7}
JUDGE_EVERY=${JUDGE_EVERY:-5000}
POOL=${POOL:-48000}
VIDEO_BATCH=${VIDEO_BATCH:-64}
IMAGE_BATCH=${IMAGE_BATCH:-256}
PRESET=${PRESET:-toy-pos}
CODEC=${CODEC:-bench/toyworld/runs/codec_v3}
COUNT=${COUNT:-64}
RUN=${RUN:-out/device_pretrain}

export PYTHONUNBUFFERED=1
"$PYTHON" -m bench.toyworld.pretrain --positions --lr 2e-3 --noise-shift 3 --preset "$PRESET" --codec "$CODEC" \
    --video-batch "$VIDEO_BATCH" --image-batch "$IMAGE_BATCH" --pool-clips "$POOL" --steps "$STEPS" \
    --judge-every "$JUDGE_EVERY" --device "$DEVICE" --minutes "$MINUTES" --out "$RUN"
mkdir -p "$OUT"
cp "$RUN"/backbone.safetensors "$RUN"/text_encoder.safetensors "$RUN"/codec.safetensors "$RUN"/pretrain_log.txt \
    "$OUT"/
if [ -f "$RUN"/generation_curve.jsonl ]; then cp "$RUN"/generation_curve.jsonl "$OUT"/; fi
"$PYTHON" -m bench.toyworld.generation --models "$RUN" --count "$COUNT" --no-write > "$OUT"/generation_end.json
tail -n 3 "$RUN"/pretrain_log.txt
