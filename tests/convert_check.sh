#!/usr/bin/env bash
# convert_check.sh PIPE_CONVERT PIPE_TRAIN MPIRUN [MPIRUN ARGS...]
#
# pipe-convert against pipe-train's own checkpoints: a trained gpt-tiny (GPT2LMHeadModel) and a trained
# llama-tiny (LlamaForCausalLM, untied head) exported to Hugging Face's files, imported back and exported again
# give the same bytes (import and export are inverses, transposes, stacked q/k/v and gate/up, and ties
# included); the imported checkpoints resume under pipe-train on 2 stages; bad input is one clear line.
# (Parity with transformers itself is scripts/check-hf: it needs Python.)
set -u
export CUDA_VISIBLE_DEVICES=
convert=$1 train=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
mpirun=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*"; exit 1; }
"${mpirun[@]}" -np 2 "$train" --model gpt-tiny --stages 2 --steps 4 --micro-batches 2 --micro-batch-size 2 \
  --save ck >train.log 2>&1 || { cat train.log; fail "training gpt-tiny"; }
"$convert" export-hf ck hf || fail "export-hf"
grep -q '"architectures"' hf/config.json && grep -q '"n_embd": 128' hf/config.json || fail "config.json: $(cat hf/config.json)"
"$convert" import-hf hf imported || fail "import-hf"
grep -q 'name = "imported"' imported/model.toml || fail "model.toml: $(cat imported/model.toml)"
"$convert" export-hf imported/checkpoint hf2 || fail "export-hf of the imported checkpoint"
cmp hf/model.safetensors hf2/model.safetensors || fail "the round trip changed the weights"
diff hf/config.json hf2/config.json || fail "the round trip changed config.json"
echo "export -> import -> export: identical model.safetensors ($(stat -c %s hf/model.safetensors) bytes)"
# The imported checkpoint is what pipe-train --load reads, on any stage count.
"${mpirun[@]}" -np 2 "$train" --model imported/model.toml --load imported/checkpoint --stages 2 --steps 2 \
  --micro-batches 2 --micro-batch-size 2 >resume.log 2>&1 || { cat resume.log; fail "resuming the import"; }
grep -q "resumed from imported/checkpoint at step 0" resume.log || { cat resume.log; fail "no resume line"; }
# The same for Llama: q/k/v and gate/up stacked in our layout, split into Hugging Face's tensors and back.
"${mpirun[@]}" -np 2 "$train" --model llama-tiny --stages 2 --steps 4 --micro-batches 2 --micro-batch-size 2 \
  --save lck >ltrain.log 2>&1 || { cat ltrain.log; fail "training llama-tiny"; }
"$convert" export-hf lck lhf || fail "export-hf of llama-tiny"
for want in '"LlamaForCausalLM"' '"num_key_value_heads": 2' '"intermediate_size": 352' '"tie_word_embeddings": false'; do
  grep -qF "$want" lhf/config.json || fail "llama config.json lacks $want: $(cat lhf/config.json)"
done
"$convert" import-hf lhf limported || fail "import-hf of llama-tiny"
grep -q 'type = "LlamaBlock"' limported/model.toml || fail "llama model.toml: $(cat limported/model.toml)"
"$convert" export-hf limported/checkpoint lhf2 || fail "export-hf of the imported llama checkpoint"
cmp lhf/model.safetensors lhf2/model.safetensors || fail "the llama round trip changed the weights"
diff lhf/config.json lhf2/config.json || fail "the llama round trip changed config.json"
echo "llama: export -> import -> export: identical model.safetensors ($(stat -c %s lhf/model.safetensors) bytes)"
"${mpirun[@]}" -np 2 "$train" --model limported/model.toml --load limported/checkpoint --stages 2 --steps 2 \
  --micro-batches 2 --micro-batch-size 2 >lresume.log 2>&1 || { cat lresume.log; fail "resuming the llama import"; }
grep -q "resumed from limported/checkpoint at step 0" lresume.log || { cat lresume.log; fail "no llama resume line"; }
# Bad input: one line each (tests/expect.sh: the exit status, the line exactly once).
expect() {  # expect STATUS LINE COMMAND...
  local status=$1 line=$2; shift 2
  "$here/expect.sh" "$status" --line "$line" -- "$@" || fail "$*"
}
mkdir -p empty
expect 1 "pipe-convert: error: empty/config.json: cannot read the file: No such file or directory" \
  "$convert" import-hf empty out
echo '{"architectures": ["BertForMaskedLM"]}' >empty/config.json
expect 1 "pipe-convert: error: empty/config.json: architecture 'BertForMaskedLM' is not registered by any plugin (known: GPT2LMHeadModel, LlamaForCausalLM)" \
  "$convert" import-hf empty out
sed 's/"n_head": 4/"n_head": 3/' hf/config.json >empty/config.json
cp hf/model.safetensors empty/
expect 1 "pipe-convert: error: empty/config.json: config.json: n_embd 128 is not a multiple of n_head 3" \
  "$convert" import-hf empty out
sed 's/"num_key_value_heads": 2/"num_key_value_heads": 3/' lhf/config.json >empty/config.json
expect 1 "pipe-convert: error: empty/config.json: config.json: num_attention_heads 4 is not a multiple of num_key_value_heads 3" \
  "$convert" import-hf empty out
sed 's/"rope_type": "default"/"rope_type": "llama3"/' lhf/config.json >empty/config.json
expect 1 "pipe-convert: error: empty/config.json: config.json: rope_parameters.rope_type 'llama3' is not supported (only the default, unscaled rotary embedding)" \
  "$convert" import-hf empty out
"${mpirun[@]}" -np 1 "$train" --model mlp --steps 1 --save mlp-ck >/dev/null 2>&1 || fail "training mlp"
expect 1 "pipe-convert: error: model mlp has the shape of no registered Hugging Face architecture (known: GPT2LMHeadModel, LlamaForCausalLM)" \
  "$convert" export-hf mlp-ck out
expect 2 "pipe-convert: error: unknown command 'import': import-hf or export-hf" "$convert" import hf out
echo "pipe-convert: all checks passed"
