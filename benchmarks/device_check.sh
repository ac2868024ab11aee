#!/usr/bin/env bash
# The prepared check for a lent GPU (H100/H200): one script, about 8 minutes, JSON out.
#
#   bash benchmarks/device_check.sh                # on the GPU machine, from the repo root
#   DRY_RUN=1 OUT=/tmp/dc bash benchmarks/device_check.sh   # tiny shapes on CPU (the test)
#
# 1. benchmarks/train_step.py at full size (HuBERT-large + Llama-3.1-8B shapes, random weights):
#    project / project_ckpt / naive / qlora (qlora only where bitsandbytes is installed)
# 2. benchmarks/decode.py: batched vs batch-1 generation
# 3. the real-small-model demo (Whisper base + SmolLM2-135M-Instruct, explainable_ser/configs/
#    demo.yaml) for a fixed number of steps on the GPU in bf16, then its evaluation
# Results: $OUT/train_step.json, $OUT/decode.json, $OUT/demo/metrics.json, $OUT/summary.json.
#
# The GPU machine reaches no registry: carry what it needs. WHEELS=dir installs the project from
# wheels there (pip download -d dir -c constraints.txt -e ".[dev]" on a machine that can);
# EXPLAINABLE_SER_CACHE=dir points at a carried cache of converted packaged models.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/device}
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ]; then
  pip install -q --no-index --find-links "$WHEELS" -e . gguf accelerate
fi
start=$(date +%s)
if [ "${DRY_RUN:-0}" = 1 ]; then
  # Tiny shapes on CPU: every step runs, nothing is timed seriously.
  TS_ARGS=(--size tiny --cpu --configs project,naive --steps 1 --warmup 0 --matmul-n 256)
  DEC_ARGS=(--n 2 --batch 2 --max-new-tokens 4 --data-dir "$OUT/synthcraft")
  python -m data_modules.prepare synthcraft --out "$OUT/synthcraft" --n-train 8 --n-dev 2 --n-test 2 >/dev/null
  DEMO=(offline "data.corpora.0.dir=$OUT/synthcraft" data.num_buckets=2 training.stages.0.max_steps=1 training.stages.1.max_steps=1
        training.stages.0.epochs=1 training.stages.1.epochs=1 eval.limit=2 eval.max_new_tokens=4
        model.llm.hf_config.num_hidden_layers=1 model.llm.hf_config.hidden_size=32
        model.llm.hf_config.intermediate_size=32 model.llm.hf_config.num_attention_heads=2
        model.llm.hf_config.num_key_value_heads=1 trainer.accelerator=cpu)
else
  TS_ARGS=(--size full --steps 10 --warmup 3)
  DEC_ARGS=(--n 64 --batch 16)
  python -m data_modules.prepare synthcraft --out data/synthcraft >/dev/null
  DEMO=(demo training.stages.0.max_steps=100 training.stages.1.max_steps=200 trainer.accelerator=gpu
        data.max_duration=60 eval.limit=200)
fi
python benchmarks/train_step.py "${TS_ARGS[@]}" --out "$OUT/train_step.json"
python benchmarks/decode.py "${DEC_ARGS[@]}" --out "$OUT/decode.json"
t_demo=$(date +%s)
python -m explainable_ser.fit "${DEMO[@]}" run_dir="$OUT/demo" trainer.enable_progress_bar=false
end=$(date +%s)
python - "$OUT" "$((t_demo - start))" "$((end - t_demo))" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
summary = {"benchmarks_seconds": int(sys.argv[2]), "demo_seconds": int(sys.argv[3]),
           "train_step": json.loads((out / "train_step.json").read_text()).get("configs"),
           "decode": json.loads((out / "decode.json").read_text()).get("sdpa"),
           "demo_metrics": {k: v for k, v in json.loads((out / "demo" / "metrics.json").read_text()).items()
                            if k in ("ua", "wa", "wer", "bleu4", "cider", "n_utterances")}}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
PY
echo "[device_check] wrote $OUT/summary.json"
