#!/usr/bin/env bash
# CI smoke run of `igdbeam experiment` end to end: a random-init tiny Llama and a tiny BIGRec-format
# dataset (both written by tests/factories/, nothing downloaded), the `tiny` profile
# (LoRA, a few steps per loss, every decoding, bootstrap intervals), then a resume that must
# find everything cached.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PYTHONPATH="tests${PYTHONPATH:+:$PYTHONPATH}" python3 -c "
import sys
from pathlib import Path
from factories.data import write_tiny_data
from factories.models import write_tiny_model
root = Path(sys.argv[1])
write_tiny_model(root / 'model'); write_tiny_data(root / 'data')
" "$work"
igdbeam experiment --profile tiny --data "$work/data" --model "$work/model" --out "$work/out" \
  --train-steps 2 --no-progress
test -s "$work/out/results.md" && test -s "$work/out/training_curves.png"
before=$(stat -c %Y "$work"/out/models/*/train_log.json | sort | tr '\n' ' ')
igdbeam experiment --profile tiny --data "$work/data" --model "$work/model" --out "$work/out" \
  --train-steps 2 --no-progress >/dev/null
after=$(stat -c %Y "$work"/out/models/*/train_log.json | sort | tr '\n' ' ')
[ "$before" = "$after" ] || { echo "resume retrained a cached model" >&2; exit 1; }
echo "tiny igdbeam experiment: ok ($(ls "$work/out/models" | wc -l) fine-tunes, resumed from cache)"
