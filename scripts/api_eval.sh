#!/usr/bin/env bash
# The "through the API" figures of docs/recipe.md: a model served by `assistant serve` on a loopback port and
# asked by `assistant eval ... --base-url` on fresh held-out seeds no recipe run evaluates on.
#   bash scripts/api_eval.sh MODEL_DIR OUT_DIR [PORT]       (MODEL_DIR may be `default`)
set -euo pipefail
cd "$(dirname "$0")/.."
M=$1; OUT=$2; PORT=${3:-8777}; A=.venv/bin/assistant; DATA=${API_EVAL_DATA:-runs/api_data}
mkdir -p "$DATA" "$OUT"
[ -d "$DATA/vqa" ] || $A toyworld generate --task instruct --n 300 --seed 5000000 --eval --out "$DATA/vqa" --quiet
[ -d "$DATA/pope" ] || $A toyworld generate --task pope --n 150 --seed 5000000 --eval --out "$DATA/pope" --quiet
[ -d "$DATA/chair" ] || $A toyworld generate --task chair --n 150 --seed 5100000 --eval --out "$DATA/chair" --quiet
[ -d "$DATA/ocr" ] || $A toyworld generate --task ocr --n 300 --seed 5200000 --eval --out "$DATA/ocr" --quiet
# colour alone, 1,000 questions (489 on scenes of four or more objects, where #14's goal is decided; session 30)
[ -d "$DATA/color" ] || $A toyworld generate --task color --n 1200 --seed 5700000 --eval --out "$DATA/color" --quiet
$A serve --model "$M" --port "$PORT" --ocr off > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 90); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 2; done
U=http://127.0.0.1:$PORT/v1
$A eval vqa --data "$DATA/vqa" --base-url $U --blind --limit 800 --out "$OUT/vqa"
$A eval pope --data "$DATA/pope" --base-url $U --blind --limit 1800 --out "$OUT/pope"
$A eval chair --data "$DATA/chair" --base-url $U --out "$OUT/chair"
$A eval vqa --data "$DATA/ocr" --base-url $U --out "$OUT/text"
$A eval vqa --data "$DATA/ocr" --base-url $U --ocr auto --out "$OUT/text_hints"
$A eval vqa --data "$DATA/color" --base-url $U --limit 1000 --out "$OUT/color"
