#!/usr/bin/env bash
# generate_check.sh PIPE_GENERATE PIPE_TRAIN MPIRUN [MPIRUN ARGS...]
#
# pipe-generate on a byte-level gpt-tiny trained here: greedy text is the same on 1, 2 and 4 pipeline stages,
# --json holds the prompt's and the new ids and the text, sampling is reproducible by --seed, --logits holds one
# vocabulary row per new token, and bad input is one clear line. The same greedy check for llama-tiny (rotary
# positions, no position table). (Parity with transformers: scripts/check-hf.)
set -u
export CUDA_VISIBLE_DEVICES=
generate=$1 train=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
mpirun=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
# 40 steps (PIPE_TRAIN_CHECK_STEPS under the sanitizers: the checks compare runs, they need no good model).
"${mpirun[@]}" -np 2 "$train" --model gpt-tiny --stages 2 --steps "${PIPE_TRAIN_CHECK_STEPS:-40}" --micro-batches 4 \
  --micro-batch-size 8 --data "$PIPE_TEST_DATA/text.txt" --save "$work/ck" >"$work/train.log" 2>&1 ||
  { cat "$work/train.log"; fail "training"; }
gen() { "${mpirun[@]}" -np "$1" "$generate" --model gpt-tiny --load "$work/ck" "${@:2}" 2>"$work/gen.err"; }
one=$(gen 1 --prompt "The " --max-new-tokens 24 --temperature 0) || { cat "$work/gen.err"; fail "1 stage"; }
two=$(gen 2 --prompt "The " --max-new-tokens 24 --temperature 0) || { cat "$work/gen.err"; fail "2 stages"; }
four=$(gen 4 --prompt "The " --max-new-tokens 24 --temperature 0) || { cat "$work/gen.err"; fail "4 stages"; }
[ "$one" = "$two" ] && [ "$one" = "$four" ] || fail "greedy text differs: '$one' / '$two' / '$four'"
[ "${one:0:4}" = "The " ] && [ "${#one}" -eq 28 ] || fail "not the prompt and 24 bytes: '$one'"
echo "greedy, 1 = 2 = 4 stages: '$one'"
grep -q "24 tokens in .* 4 stages" "$work/gen.err" || { cat "$work/gen.err"; fail "no timing line"; }
js=$(gen 2 --prompt-ids 84,104,101,32 --max-new-tokens 24 --temperature 0 --json --logits "$work/l.bin") || fail "json"
echo "$js" | grep -q '"prompt_ids":\[84,104,101,32\]' || fail "json prompt_ids: $js"
[ "$(echo "$js" | grep -o '"ids":\[[0-9,]*\]' | tr -cd , | wc -c)" -eq 23 ] || fail "json: not 24 ids: $js"
echo "$js" | grep -qF "\"text\":\"${one:4}\"" || fail "json text is not the greedy text: $js"
[ "$(stat -c %s "$work/l.bin")" -eq $((24 * 256 * 4)) ] || fail "--logits: $(stat -c %s "$work/l.bin") bytes"
a=$(gen 1 --prompt "The " --max-new-tokens 24 --temperature 1 --top-k 40 --seed 5)
b=$(gen 2 --prompt "The " --max-new-tokens 24 --temperature 1 --top-k 40 --seed 5)
c=$(gen 1 --prompt "The " --max-new-tokens 24 --temperature 1 --top-k 40 --seed 6)
[ "$a" = "$b" ] || fail "sampling with one seed differs between 1 and 2 stages: '$a' / '$b'"
[ "$a" != "$c" ] || fail "seeds 5 and 6 sampled the same text: '$a'"
echo "sampled, seed 5 on 1 and 2 stages: '$a'"
"${mpirun[@]}" -np 2 "$train" --model llama-tiny --stages 2 --steps "${PIPE_TRAIN_CHECK_STEPS:-40}" --micro-batches 4 \
  --micro-batch-size 8 --data "$PIPE_TEST_DATA/text.txt" --save "$work/lck" >"$work/ltrain.log" 2>&1 ||
  { cat "$work/ltrain.log"; fail "training llama-tiny"; }
lgen() { "${mpirun[@]}" -np "$1" "$generate" --model llama-tiny --load "$work/lck" "${@:2}" 2>"$work/gen.err"; }
l1=$(lgen 1 --prompt "The " --max-new-tokens 24 --temperature 0) || { cat "$work/gen.err"; fail "llama, 1 stage"; }
l2=$(lgen 2 --prompt "The " --max-new-tokens 24 --temperature 0) || { cat "$work/gen.err"; fail "llama, 2 stages"; }
l4=$(lgen 4 --prompt "The " --max-new-tokens 24 --temperature 0) || { cat "$work/gen.err"; fail "llama, 4 stages"; }
[ "$l1" = "$l2" ] && [ "$l1" = "$l4" ] || fail "llama greedy text differs: '$l1' / '$l2' / '$l4'"
[ "${l1:0:4}" = "The " ] && [ "${#l1}" -eq 28 ] || fail "llama: not the prompt and 24 bytes: '$l1'"
echo "llama-tiny greedy, 1 = 2 = 4 stages: '$l1'"
expect() {  # expect STATUS LINE ARGS...: tests/expect.sh (the exit status, the line exactly once)
  local status=$1 line=$2; shift 2
  "$here/expect.sh" "$status" --line "$line" -- "$generate" "$@" || fail "pipe-generate $*"
}
expect 2 "pipe-generate: error: --load CKPT is required: generation needs trained weights" --prompt x
expect 2 "pipe-generate: error: give one of --prompt and --prompt-ids" --load "$work/ck" --prompt x --prompt-ids 1
expect 1 "pipe-generate: error: prompt token 300 is not below the vocabulary of 256" --load "$work/ck" --prompt-ids 300
expect 1 "pipe-generate: error: --prompt-ids: 'x' is not a token id" --load "$work/ck" --prompt-ids 1,x
expect 2 "pipe-generate: error: --temperature must be 0 or more" --load "$work/ck" --prompt x --temperature -1
echo "pipe-generate: all checks passed"
