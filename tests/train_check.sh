#!/usr/bin/env bash
# train_check.sh CHECK PIPE_TRAIN MPIRUN [MPIRUN ARGS...]
#
# Real pipe-train jobs under mpirun, compared through their --metrics lines:
#   stages          1, 2, 3 and 4 stages give bit-identical losses and gradient norms, and so do 1 and 2
#                   at --threads 2
#   data-parallel   2 stages x 2 replicas match 1 stage with the same global batch (relative 1e-6)
#   checkpointing   activation checkpointing every 1 and 2 layers changes nothing (bit-identical)
#   schedules       gpipe and 1f1b give bit-identical losses
#   learns          gpt-tiny on the built-in data (2 stages x 2 replicas, 4 micro-batches) at least halves the loss in 60 steps
#   zero-bubble     zb-h1 (split backward) on 2, 3, 4 stages == 1 stage, with checkpointing, data parallelism
#                   (== 1f1b) and a save under zb-h1 resumed under 1f1b, all bit-identical
#   virtual-stages  interleaved-1f1b (V = 2, 3) and zb-v on 2, 3, 4 stages == 1 stage, with checkpointing, data
#                   parallelism (== 1f1b), a schedule file with chunks, and saves resumed under another schedule
#                   and V, all bit-identical
#   tokens          llm.c token shards in a directory (train and _val_ shards, written here): 1 and 2 stages
#                   bit-identical, the loss falls, nanoGPT files with --val-data train too, and a token beyond the
#                   vocabulary stops the job with a line naming the file and offset
#   plugin-loss     a model ending in a test plugin's own loss (L1Loss) trains, 1 and 2 stages bit-identical
#   resume          20 steps straight == 10 steps + save + load on other stage counts + 10 (bit-identical)
#   zero            --zero 1 (ZeRO-1) on 2 stages x 2 replicas == without (bit-identical), the optimizer state
#                   halved (reported), 4 replicas within 1e-6, saves resumed with and without it (bit-identical)
#                   and under another data-parallel degree (1e-6); under bf16 the float32 masters split too
#                   (bit-identical, reported halved, saved split and resumed split and unsplit)
#   checkpoint-errors  a corrupt, incomplete or foreign checkpoint is refused with one clear line
#   bf16            mixed precision (--dtype bf16, emulated on the CPU with the GPU's rounding): 1 and 2
#                   stages bit-identical; within 1e-2 of fp32 every
#                   step but not equal to it; a bf16 checkpoint (float32 masters) resumes bit-identically on
#                   other stage counts
#   flash           flash attention on the CPU (PIPE_ATTENTION=flash; by default from 1024 tokens): 1 and 2 stages
#                   (with activation checkpointing) bit-identical, and within gpu_train_check.sh's flash bounds of
#                   the materialised attention (first loss 1e-5, every loss 1e-4) but not equal to it
#   llama           llama-tiny (plugins/llama): 1, 2 and 4 stages bit-identical, the loss falls by a third on the
#                   built-in data, type:LlamaBlock partitioning, zb-h1 and interleaved-1f1b, activation
#                   checkpointing, a save resumed on another stage count, and --dtype bf16 on 1 and 2 stages, all
#                   bit-identical to their references
set -u
# CPU checks: GPUs hidden, so that pipe-train's default device is the CPU on any machine
# (tests/gpu_train_check.sh checks the GPU).
export CUDA_VISIBLE_DEVICES=
check=$1 train=$2; shift 2
mpirun=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base=(--model gpt-tiny --micro-batches 4 --micro-batch-size 4 --seed 7)
# Steps of the comparisons (PIPE_TRAIN_CHECK_STEPS, even, at least 4; default 20): fewer under the sanitizers,
# whose runs are many times slower (scripts/test-sanitizers). Resumes split them in halves.
steps=${PIPE_TRAIN_CHECK_STEPS:-20}
[ $((steps % 2)) -eq 0 ] && [ "$steps" -ge 4 ] || { echo "PIPE_TRAIN_CHECK_STEPS must be even and at least 4"; exit 2; }
half=$((steps / 2))
small=("${base[@]}" --steps "$steps")

run() {  # run NAME RANKS ARGS...: the job's metrics in $work/NAME.json
  local name=$1 ranks=$2; shift 2
  if ! timeout -k 5 300 "${mpirun[@]}" -np "$ranks" "$train" "$@" --metrics "$work/$name.json" >"$work/$name.log" 2>&1; then
    echo "FAIL: $name: pipe-train exited non-zero"; cat "$work/$name.log"; exit 1
  fi
}
series() { grep -o "\"$2\":[^,}]*" "$work/$1.json" | cut -d: -f2; }
# joined A B C: the steps of run A followed by those of run B (resumed from A's checkpoint) as run C.
joined() { cat "$work/$1.json" "$work/$2.json" | grep -v summary > "$work/$3.json"; }
same() {  # same A B [N]: identical loss and grad_norm series of N steps each (default $steps)
  local want=${3:-$steps}
  for run in "$1" "$2"; do
    [ "$(series "$run" loss | wc -l)" -eq "$want" ] ||
      { echo "FAIL: $run has $(series "$run" loss | wc -l) steps, not $want"; exit 1; }
  done
  for key in loss grad_norm; do
    if ! diff <(series "$1" $key) <(series "$2" $key) >/dev/null; then
      echo "FAIL: $key differs between $1 and $2:"; paste <(series "$1" $key) <(series "$2" $key); exit 1
    fi
  done
  echo "$1 == $2: $(series "$1" loss | wc -l) steps bit-identical (last loss $(series "$1" loss | tail -1))"
}

case $check in
  stages)
    run s1 1 "${small[@]}" --stages 1
    for s in 2 3 4; do run "s$s" "$s" "${small[@]}" --stages "$s"; same s1 "s$s"; done
    # Two CPU threads per rank: the kernels split their work over them (and the GEMMs take their blocking for two
    # threads), and 1 and 2 stages still agree bit for bit.
    run t1 1 "${small[@]}" --stages 1 --threads 2
    run t2 2 "${small[@]}" --stages 2 --threads 2
    same t1 t2 ;;
  data-parallel)
    run s1 1 "${small[@]}" --stages 1
    run s2d2 4 --model gpt-tiny --steps "$steps" --micro-batches 2 --micro-batch-size 4 --seed 7 --stages 2 --data-parallel 2
    # Losses and gradient norms: a dropped 1/D factor in the gradients would hide behind clipping and AdamW in
    # the losses, not in the norms (the first step's norm would be off by half). The first step differs only by
    # the order of the gradient sums (7.6e-9 measured on an AMD EPYC); later norms amplify the runs' drift (up to
    # 1.2e-6 there by step 7, while the losses stay within 2e-8), hence 1e-6 for the first step's norm and 1e-5
    # for the rest.
    for key in loss grad_norm; do
      bound=1e-6; [ $key = grad_norm ] && bound=1e-5
      paste <(series s1 $key) <(series s2d2 $key) | awk -v n="$steps" -v key=$key -v bound=$bound '
        { d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > worst) worst = r; if (NR == 1) first = r }
        END { printf "largest relative %s difference over %d steps: %.3g (bound %s), first step %.3g (bound 1e-6)\n",
                key, NR, worst, bound, first
              exit !(NR == n && worst <= bound && first <= 1e-6) }' ||
        { echo "FAIL: data-parallel ${key}s differ beyond their bounds"; exit 1; }
    done
    # Resuming under another data-parallel degree (and stage count): half the steps on 2 stages x 2 replicas,
    # saved, the rest on 1 stage with the same global batch, against 1 stage throughout (relative 1e-6).
    run d2first 4 --model gpt-tiny --steps "$half" --micro-batches 2 --micro-batch-size 4 --seed 7 --stages 2 --data-parallel 2 \
      --save "$work/d2ck"
    run d1then 1 "${small[@]}" --stages 1 --load "$work/d2ck"
    joined d2first d1then d2joined
    paste <(series s1 loss) <(series d2joined loss) | awk -v n="$steps" '
      { d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > worst) worst = r }
      END { printf "resumed across data-parallel degrees: largest relative loss difference over %d steps %.3g\n", NR, worst
            exit !(NR == n && worst <= 1e-6) }' ||
      { echo "FAIL: a run saved under data parallelism 2 and resumed under 1 drifts from one stage"; exit 1; } ;;
  zero)
    # With 2 replicas every gradient element's sum has two terms, the same in either order, so the updates and the
    # losses are bit-identical with and without the split. The printed norm is summed in another order (each
    # layer's squares in two halves, then added over the replicas): it agrees within 1e-12 relative, and the clip
    # factor computed from it (rounded to float32) did not change, or the losses would differ.
    d2=(--model gpt-tiny --micro-batches 2 --micro-batch-size 4 --seed 7 --stages 2 --data-parallel 2)
    run z0 4 "${d2[@]}" --steps "$steps"
    run z1 4 "${d2[@]}" --steps "$steps" --zero 1
    diff <(series z0 loss) <(series z1 loss) >/dev/null && [ "$(series z1 loss | wc -l)" -eq "$steps" ] ||
      { echo "FAIL: the losses differ with --zero 1:"; paste <(series z0 loss) <(series z1 loss); exit 1; }
    paste <(series z0 grad_norm) <(series z1 grad_norm) | awk '
      { d = $1 - $2; if (d < 0) d = -d; r = d / $1; if (r > worst) worst = r }
      END { printf "--zero 1 on 2 x 2: losses bit-identical, norms within %.3g relative\n", worst; exit !(worst <= 1e-12) }' ||
      { echo "FAIL: the gradient norms differ beyond 1e-12 with --zero 1"; exit 1; }
    grep -q "^pipe-train: --zero 1: rank 0 (stage 0) keeps 1,750,016 of its stage's 3,500,032 bytes of optimizer state (2 replicas)$" \
      "$work/z1.log" || { echo "FAIL: no halved optimizer state reported"; cat "$work/z1.log"; exit 1; }
    # Under bf16 the float32 masters are split too: each rank steps its slice, and the bfloat16 values are
    # gathered. The same losses bit for bit, the masters' bytes halved, and checkpoints that hold the whole masters:
    # saved split, resumed unsplit and split, both continue the unsplit run bit for bit.
    run b0 4 "${d2[@]}" --steps "$steps" --dtype bf16
    run bz 4 "${d2[@]}" --steps "$half" --dtype bf16 --zero 1 --save "$work/bck"
    diff <(series b0 loss | head -n "$half") <(series bz loss) >/dev/null && [ "$(series bz loss | wc -l)" -eq "$half" ] ||
      { echo "FAIL: with --dtype bf16 the losses differ with --zero 1"; paste <(series b0 loss) <(series bz loss); exit 1; }
    grep -q "keeps 1,750,016 of its stage's 3,500,032 bytes of optimizer state and 875,008 of its 1,750,016 bytes of float32 masters (2 replicas)$" \
      "$work/bz.log" || { echo "FAIL: no halved masters reported under bf16"; cat "$work/bz.log"; exit 1; }
    run bplain 4 "${d2[@]}" --steps "$steps" --dtype bf16 --load "$work/bck"
    run bsplit 4 "${d2[@]}" --steps "$steps" --dtype bf16 --load "$work/bck" --zero 1
    for resumed in bplain bsplit; do
      joined bz "$resumed" "b$resumed"
      diff <(series b0 loss) <(series "b$resumed" loss) >/dev/null && [ "$(series "b$resumed" loss | wc -l)" -eq "$steps" ] ||
        { echo "FAIL: bf16 saved under --zero 1, resumed ($resumed), the losses differ"; exit 1; }
    done
    echo "--dtype bf16: --zero 1 bit-identical over $half steps, masters halved; resumed unsplit and split: $steps losses bit-identical"
    # Under SGD, the same (left out of the sanitizers' short runs).
    if [ "$steps" -ge 20 ]; then
      run sgd0 4 "${d2[@]}" --steps "$half" --optimizer sgd
      run sgd1 4 "${d2[@]}" --steps "$half" --optimizer sgd --zero 1
      diff <(series sgd0 loss) <(series sgd1 loss) >/dev/null && [ "$(series sgd1 loss | wc -l)" -eq "$half" ] ||
        { echo "FAIL: with --optimizer sgd the losses differ with --zero 1"; exit 1; }
      echo "--optimizer sgd: --zero 1 bit-identical over $half steps"
    fi
    # 4 replicas of 1 stage: 4-term sums in MPI's reduce-scatter order, not its all-reduce's; within 1e-6.
    d4=(--model gpt-tiny --micro-batches 1 --micro-batch-size 4 --seed 7 --stages 1 --data-parallel 4)
    run y0 4 "${d4[@]}" --steps "$steps"
    run y1 4 "${d4[@]}" --steps "$steps" --zero 1
    within() {  # within A B: loss series of A and B within 1e-6 relative
      paste <(series "$1" loss) <(series "$2" loss) | awk -v n="$steps" -v a="$1" -v b="$2" '
        { d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > worst) worst = r; same += (d == 0) }
        END { printf "%s vs %s: largest relative loss difference over %d steps %.3g, %d of them identical\n", a, b, NR,
                worst, same
              exit !(NR == n && worst <= 1e-6) }' || { echo "FAIL: $1 and $2 differ beyond 1e-6"; exit 1; }
    }
    within y0 y1
    # Checkpoints hold the whole optimizer state: saved under --zero 1, resumed without it and the reverse, the
    # runs continue bit for bit; resumed under --zero 1 with 4 replicas of 1 stage (the same global batch), within
    # 1e-6 of the run that stayed on 2 x 2.
    run zfirst 4 "${d2[@]}" --steps "$half" --zero 1 --save "$work/zck"
    run zplain 4 "${d2[@]}" --steps "$steps" --load "$work/zck"
    joined zfirst zplain zjoined
    diff <(series z0 loss) <(series zjoined loss) >/dev/null && [ "$(series zjoined loss | wc -l)" -eq "$steps" ] ||
      { echo "FAIL: saved under --zero 1, resumed without it, the losses differ"; exit 1; }
    echo "saved under --zero 1, resumed without it: $steps losses bit-identical"
    run pfirst 4 "${d2[@]}" --steps "$half" --save "$work/pck"
    run pzero 4 "${d2[@]}" --steps "$steps" --load "$work/pck" --zero 1
    joined pfirst pzero pjoined
    diff <(series z0 loss) <(series pjoined loss) >/dev/null && [ "$(series pjoined loss | wc -l)" -eq "$steps" ] ||
      { echo "FAIL: saved without --zero, resumed with it, the losses differ"; exit 1; }
    echo "saved without --zero, resumed with it: $steps losses bit-identical"
    run z4 4 "${d4[@]}" --steps "$steps" --load "$work/zck" --zero 1
    joined zfirst z4 z4joined
    within z0 z4joined ;;
  checkpointing)
    run plain 2 "${small[@]}" --stages 2
    run ckpt1 2 "${small[@]}" --stages 2 --activation-checkpoint-interval 1
    run ckpt2 2 "${small[@]}" --stages 2 --activation-checkpoint-interval 2
    same plain ckpt1; same plain ckpt2
    grep -q "activation checkpointing saves" "$work/ckpt2.log" || { echo "FAIL: no saved-memory report"; exit 1; } ;;
  schedules)
    run f1b 3 "${small[@]}" --stages 3 --schedule 1f1b
    run gpipe 3 "${small[@]}" --stages 3 --schedule gpipe
    same f1b gpipe ;;
  zero-bubble)
    # zb-h1 runs B and W apart, W deferred: still the computation of one stage. 2, 3 and 4 stages (tied head and
    # embedding on different stages) are bit-identical to 1, also with activation checkpointing; with data
    # parallelism it matches 1f1b bit for bit; a checkpoint saved under zb-h1 resumes under 1f1b on 3 stages.
    run s1 1 "${small[@]}" --stages 1
    for s in 2 3 4; do run "zb$s" "$s" "${small[@]}" --stages "$s" --schedule zb-h1; same s1 "zb$s"; done
    # The report predicts each rank's bubble from this run's own F, B and W (pipe-sim's zb-h1): one share in [0, 1)
    # per rank, in the summary.
    predicted=$(grep summary "$work/zb2.json" | grep -o '"predicted_bubble":[^,}]*' | cut -d: -f2)
    [ "$(echo "$predicted" | wc -l)" -eq 2 ] && echo "$predicted" | awk '$1 < 0 || $1 >= 1 { exit 1 }' ||
      { echo "FAIL: predicted_bubble per rank:"; grep summary "$work/zb2.json"; exit 1; }
    # The same schedule written out by pipe-sim --print and read back by --schedule-file runs bit-identically; one
    # with a W moved before its B is refused by the checker, naming the stage, step and instruction.
    "$(dirname "$train")/pipe-sim" --stages 3 --micro-batches 4 --schedule zb-h1 --print > "$work/zb3.txt"
    run zbfile 3 "${small[@]}" --stages 3 --schedule-file "$work/zb3.txt"
    same s1 zbfile
    sed '3s/| W0 |/| |/; 3s/RG0 B0/RG0 W0 B0/' "$work/zb3.txt" > "$work/broken.txt"
    if "${mpirun[@]}" -np 3 "$train" "${small[@]}" --stages 3 --schedule-file "$work/broken.txt" > "$work/broken.log" 2>&1 ||
      ! grep -q "stage 0, step .*: W0 runs before B0" "$work/broken.log"; then
      echo "FAIL: a schedule file with W0 before B0 was not refused:"; cat "$work/broken.log"; exit 1
    fi
    run zbckpt 2 "${small[@]}" --stages 2 --schedule zb-h1 --activation-checkpoint-interval 1
    same s1 zbckpt
    dp=(--model gpt-tiny --steps "$half" --micro-batches 2 --micro-batch-size 4 --seed 7 --stages 2 --data-parallel 2)
    run f1bd2 4 "${dp[@]}" --schedule 1f1b
    run zbd2 4 "${dp[@]}" --schedule zb-h1
    same f1bd2 zbd2 "$half"
    run zbfirst 2 "${base[@]}" --stages 2 --steps "$half" --schedule zb-h1 --save "$work/zbck"
    run then 3 "${small[@]}" --stages 3 --schedule 1f1b --load "$work/zbck"
    joined zbfirst then joined
    same s1 joined ;;
  virtual-stages)
    # Chunks (virtual stages) change where layers run, never what is computed: every chunked schedule is
    # bit-identical to one stage. gpt-tiny ties its embedding and head: on 2 stages under zb-v both sit on stage 0
    # (chunks 0 and 3), looped they sit on different stages.
    run s1 1 "${small[@]}" --stages 1
    # 4 stages x 2 chunks: 8 chunks of 8 layers, of which 7 have parameters: split uniformly.
    run il2 2 "${small[@]}" --stages 2 --schedule interleaved-1f1b
    same s1 il2
    run il4 4 "${small[@]}" --stages 4 --schedule interleaved-1f1b --partition-method uniform
    same s1 il4
    run il2v3 2 "${small[@]}" --stages 2 --schedule interleaved-1f1b --virtual-stages 3
    same s1 il2v3
    for s in 2 3; do run "zbv$s" "$s" "${small[@]}" --stages "$s" --schedule zb-v --profile-out "$work/zbv$s.profile"; same s1 "zbv$s"; done
    # The measured F, B and W per stage feed pipe-sim: every schedule predicted from this run.
    "$(dirname "$train")/pipe-sim" --profile "$work/zbv3.profile" --micro-batches 8 --compare > "$work/predicted.txt" &&
      grep -q "3 stages, 8 micro-batches; costs per stage measured by pipe-train (gpt-tiny, zb-v, micro-batch size 4)" "$work/predicted.txt" &&
      grep -q "^zb-v  *2 " "$work/predicted.txt" || { echo "FAIL: pipe-sim --profile:"; cat "$work/predicted.txt"; exit 1; }
    run zbv4 4 "${small[@]}" --stages 4 --schedule zb-v --partition-method uniform
    same s1 zbv4
    grep -q "partition uniform into 2 chunks per stage (v-shape) \[0,1,2,3,4,5,6,7,8\]" "$work/zbv4.log" ||
      { echo "FAIL: no chunked partition in the banner:"; head -3 "$work/zbv4.log"; exit 1; }
    # interleaved-1f1b needs M a multiple of S: 3 stages run 6 micro-batches (against one stage with 6).
    six=(--model gpt-tiny --micro-batches 6 --micro-batch-size 4 --seed 7 --steps "$half")
    run s1m6 1 "${six[@]}" --stages 1
    run il3 3 "${six[@]}" --stages 3 --schedule interleaved-1f1b
    same s1m6 il3 "$half"
    if "${mpirun[@]}" -np 3 "$train" "${small[@]}" --stages 3 --schedule interleaved-1f1b > "$work/il3bad.log" 2>&1 ||
      ! grep -q "needs the micro-batches to be a multiple of the stages" "$work/il3bad.log"; then
      echo "FAIL: interleaved-1f1b with 4 micro-batches on 3 stages was not refused:"; cat "$work/il3bad.log"; exit 1
    fi
    run zbvckpt 2 "${small[@]}" --stages 2 --schedule zb-v --activation-checkpoint-interval 1
    same s1 zbvckpt
    run ilckpt 2 "${small[@]}" --stages 2 --schedule interleaved-1f1b --activation-checkpoint-interval 2
    same s1 ilckpt
    dp=(--model gpt-tiny --steps "$half" --micro-batches 2 --micro-batch-size 4 --seed 7 --stages 2 --data-parallel 2)
    run f1bd2 4 "${dp[@]}" --schedule 1f1b
    run zbvd2 4 "${dp[@]}" --schedule zb-v
    run ild2 4 "${dp[@]}" --schedule interleaved-1f1b
    same f1bd2 zbvd2 "$half"; same f1bd2 ild2 "$half"
    # pipe-sim --print writes chunked schedules that --schedule-file runs back bit-identically.
    "$(dirname "$train")/pipe-sim" --stages 2 --micro-batches 4 --schedule zb-v --print > "$work/zbv2.txt"
    grep -q "^virtual-stages 2 v-shape$" "$work/zbv2.txt" || { echo "FAIL: no virtual-stages line:"; cat "$work/zbv2.txt"; exit 1; }
    run zbvfile 2 "${small[@]}" --stages 2 --schedule-file "$work/zbv2.txt"
    same s1 zbvfile
    # Saved under zb-v on 2 stages, resumed under interleaved-1f1b on 4 stages (8 chunks) and under 1f1b on 3.
    run zbvfirst 2 "${base[@]}" --stages 2 --steps "$half" --schedule zb-v --save "$work/zbvck"
    for then in "4 --schedule interleaved-1f1b" "3 --schedule 1f1b"; do
      set -- $then
      run "then$1" "$1" "${small[@]}" --partition-method uniform --stages "$@" --load "$work/zbvck"
      joined zbvfirst "then$1" "joined$1"
      same s1 "joined$1"
    done ;;
  learns)
    # 4 micro-batches (128 samples per step): the loss falls to about a third in 60 steps (5.58 -> 1.82).
    run default 4 --model gpt-tiny --stages 2 --data-parallel 2 --partition-method type:TransformerBlock --steps 60 \
      --warmup-steps 5 --micro-batches 4
    first=$(series default loss | head -1) last=$(series default loss | tail -1)
    awk -v f="$first" -v l="$last" 'BEGIN { printf "loss %.4f -> %.4f\n", f, l; exit !(l <= f / 2) }' ||
      { echo "FAIL: the loss did not halve"; exit 1; } ;;
  tokens)
    # shard FILE SEED [FORMAT] [MAX]: 20,000 tokens of arithmetic runs (start a, stride k in {1,2,3,5,7}, 200 long,
    # mod 256: learnable) as an llm.c shard (magic 20240520, version 1, count, then uint16) or raw uint16 (nanogpt);
    # MAX replaces one token in the middle by a token id of MAX.
    shard() {
      perl -e 'my ($file, $seed, $format, $max) = @ARGV; srand($seed); my @t;
        while (@t < 20000) { my $a = int(rand(256)); my $k = (1, 2, 3, 5, 7)[int(rand(5))];
                             push @t, ($a + $k * $_) % 256 for 0 .. 199 }
        $t[10000] = $max if $max;
        open(my $f, ">", $file) or die; binmode $f;
        print $f pack("l<256", 20240520, 1, scalar(@t), (0) x 253) if $format eq "llmc";
        print $f pack("S<*", @t);' "$1" "$2" "${3:-llmc}" "${4:-0}"
    }
    mkdir -p "$work/shards"
    shard "$work/shards/data_train_000001.bin" 1
    shard "$work/shards/data_train_000002.bin" 2
    shard "$work/shards/data_val_000000.bin" 3
    tok=(--model gpt-tiny --micro-batches 4 --micro-batch-size 8 --seed 7 --data "$work/shards" --eval-every 20)
    run tok1 1 "${tok[@]}" --steps 60
    run tok2 2 "${tok[@]}" --steps 60 --stages 2
    same tok1 tok2 60
    grep -q "llm.c token shards: 40,000 tokens in 2 files for training, 20,000 for validation" "$work/tok1.log" ||
      { echo "FAIL: the data line is missing"; cat "$work/tok1.log"; exit 1; }
    first=$(series tok1 loss | head -1) last=$(series tok1 loss | tail -1)
    awk -v f="$first" -v l="$last" 'BEGIN { printf "token shards: loss %.4f -> %.4f\n", f, l; exit !(l <= f / 2) }' ||
      { echo "FAIL: the loss did not halve on token shards"; exit 1; }
    # Real GPT-2 BPE shards (tests/data/gpt2-shards, written by scripts/prepare-data from this repository's docs) on
    # gpt2-tiny, a model with GPT-2's vocabulary of 50,257: the loss falls from ln 50257 = 10.8 by a quarter.
    run gpt2 2 --model gpt2-tiny --stages 2 --micro-batches 4 --micro-batch-size 4 --steps 20 --seed 7 \
      --data "$PIPE_TEST_DATA/gpt2-shards"
    first=$(series gpt2 loss | head -1) last=$(series gpt2 loss | tail -1)
    awk -v f="$first" -v l="$last" 'BEGIN { printf "GPT-2 shards: loss %.4f -> %.4f\n", f, l; exit !(l <= 0.75 * f) }' ||
      { echo "FAIL: the loss did not fall on GPT-2 shards"; exit 1; }
    # nanoGPT's raw train.bin and val.bin.
    shard "$work/train.bin" 4 nanogpt
    shard "$work/val.bin" 5 nanogpt
    run nano 2 --model gpt-tiny --stages 2 --micro-batches 4 --micro-batch-size 4 --steps 4 --data "$work/train.bin" \
      --val-data "$work/val.bin" --eval-every 2
    grep -q "nanoGPT token files: 20,000 tokens in 1 file for training, 20,000 for validation" "$work/nano.log" ||
      { echo "FAIL: nanoGPT files not read"; cat "$work/nano.log"; exit 1; }
    # A token id beyond gpt-tiny's vocabulary of 256 stops the job with the file and the offset, never a crash.
    mkdir -p "$work/bad"
    shard "$work/bad/data_train_000001.bin" 6 llmc 300
    bad=$(timeout -k 5 120 "${mpirun[@]}" -np 1 "$train" --model gpt-tiny --micro-batches 4 --micro-batch-size 64 \
      --steps 20 --data "$work/bad/data_train_000001.bin" 2>&1) && { echo "FAIL: a bad token was accepted"; exit 1; }
    echo "$bad" | grep -q "data_train_000001.bin: token 300 at token offset 10,000 (byte 21,024) is not below the model's vocabulary of 256" ||
      { echo "FAIL: the bad token's line:"; echo "$bad"; exit 1; } ;;
  plugin-loss)
    # A loss that a plugin ships (tests/plugins/l1_loss, on PIPE_PLUGIN_PATH) trains: its float targets come from
    # the loss's own label contract, the loss falls, and 1 and 2 stages agree bit for bit.
    l1=(--model "$PIPE_TEST_DATA/l1_mlp.toml" --micro-batches 4 --micro-batch-size 8 --seed 7 --steps 60)
    run l1s1 1 "${l1[@]}"
    run l1s2 2 "${l1[@]}" --stages 2
    same l1s1 l1s2 60
    [ "$(series l1s1 loss | wc -l)" -eq 60 ] || { echo "FAIL: not 60 steps"; exit 1; }
    first=$(series l1s1 loss | head -1) last=$(series l1s1 loss | tail -1)
    awk -v f="$first" -v l="$last" 'BEGIN { printf "L1 loss %.4f -> %.4f\n", f, l; exit !(l <= 0.7 * f) }' ||
      { echo "FAIL: the plugin's loss did not fall by 30%"; exit 1; } ;;
  resume)
    # 20 steps whatever PIPE_TRAIN_CHECK_STEPS says: the checkpoints below are named by their steps.
    small=("${base[@]}" --steps 20)
    run straight 2 "${small[@]}" --stages 2
    run first 2 "${base[@]}" --stages 2 --steps 10 --save "$work/ck" --save-every 5
    grep -q "^step-00000010$" "$work/ck/latest" || { echo "FAIL: latest does not name step 10"; exit 1; }
    for s in 1 4; do
      run "then$s" "$s" "${small[@]}" --stages "$s" --load "$work/ck"
      joined first "then$s" "joined$s"
      same straight "joined$s" 20
    done
    # The default --keep-checkpoints 2 keeps the newest two of three checkpoints.
    run keep 1 "${base[@]}" --steps 6 --save "$work/keep" --save-every 2
    [ "$(ls -d "$work"/keep/step-* | wc -l)" -eq 2 ] && [ -d "$work/keep/step-00000004" ] && [ -d "$work/keep/step-00000006" ] ||
      { echo "FAIL: --keep-checkpoints 2 kept:"; ls "$work/keep"; exit 1; }
    run older 3 "${small[@]}" --stages 3 --load "$work/ck/step-00000005"
    [ "$(series older loss | wc -l)" -eq 15 ] || { echo "FAIL: resuming from step 5 did not run 15 steps"; exit 1; }
    # Saving step 10 again (resumed from step 5) never writes over the checkpoint that latest names: it goes to
    # step-00000010.1, latest moves there, the replaced one goes, and resuming from it continues the same run.
    run resave 2 "${base[@]}" --stages 2 --steps 10 --load "$work/ck/step-00000005" --save "$work/ck"
    grep -q "^step-00000010.1$" "$work/ck/latest" || { echo "FAIL: latest does not name step-00000010.1"; exit 1; }
    [ ! -e "$work/ck/step-00000010" ] || { echo "FAIL: the replaced checkpoint is still there"; exit 1; }
    run again 2 "${small[@]}" --stages 2 --load "$work/ck"
    joined first again joined_again
    same straight joined_again 20 ;;
  checkpoint-errors)
    run saved 2 "${base[@]}" --stages 2 --steps 2 --save "$work/ck"
    ck="$work/ck/step-00000002"
    expect_error() {  # expect_error TEXT ARGS...: pipe-train fails, printing TEXT once
      local text=$1; shift
      out=$(timeout -k 5 120 "${mpirun[@]}" -np 2 "$train" --micro-batches 4 --micro-batch-size 4 --stages 2 "$@" 2>&1) &&
        { echo "FAIL: accepted: $*"; exit 1; }
      [ "$(grep -cF -- "$text" <<<"$out")" -eq 1 ] || { echo "FAIL: expected once: $text"; echo "$out"; exit 1; }
      echo "refused: $text"
    }
    cp -r "$work/ck" "$work/flipped"
    printf 'X' | dd of="$work/flipped/step-00000002/layer-00003.safetensors" bs=1 seek=200 conv=notrunc 2>/dev/null
    expect_error "layer-00003.safetensors: checksum mismatch (the file is corrupt or was changed)" --model gpt-tiny --load "$work/flipped"
    cp -r "$work/ck" "$work/truncated"
    truncate -s 100 "$work/truncated/step-00000002/layer-00005.safetensors"
    expect_error "layer-00005.safetensors: checksum mismatch" --model gpt-tiny --load "$work/truncated"
    cp -r "$work/ck" "$work/missing"
    rm "$work/missing/step-00000002/layer-00001.safetensors"
    expect_error "checkpoint: cannot read $work/missing/step-00000002/layer-00001.safetensors" --model gpt-tiny --load "$work/missing"
    # The loss layer has no parameters, and its file is checked all the same.
    cp -r "$work/ck" "$work/loss_changed"
    printf 'X' | dd of="$work/loss_changed/step-00000002/layer-00007.safetensors" bs=1 seek=2 conv=notrunc 2>/dev/null
    expect_error "layer-00007.safetensors: checksum mismatch" --model gpt-tiny --load "$work/loss_changed"
    cp -r "$work/ck" "$work/loss_missing"
    rm "$work/loss_missing/step-00000002/layer-00007.safetensors"
    expect_error "checkpoint: cannot read $work/loss_missing/step-00000002/layer-00007.safetensors" --model gpt-tiny --load "$work/loss_missing"
    expect_error "is of another model ('gpt-tiny', 8 layers)" --model mlp --load "$work/ck"
    expect_error "was saved with optimizer 'adamw'; this run uses 'sgd'" --model gpt-tiny --optimizer sgd --load "$work/ck"
    expect_error "no checkpoint there (neither manifest.json nor latest)" --model gpt-tiny --load "$work/nothing"
    # An edited manifest (the step to resume at, the optimizer's step count) does not match its own checksum.
    for edit in 's/"step": 2,/"step": 3,/' 's/"optimizer_steps": 2,/"optimizer_steps": 1,/'; do
      rm -rf "$work/edited" && cp -r "$work/ck" "$work/edited"
      sed -i "$edit" "$work/edited/step-00000002/manifest.json"
      cmp -s "$work/ck/step-00000002/manifest.json" "$work/edited/step-00000002/manifest.json" &&
        { echo "FAIL: the edit $edit changed nothing"; exit 1; }
      expect_error "manifest.json: the manifest does not match its checksum (it was edited or is corrupt)" --model gpt-tiny --load "$work/edited"
    done
    # Malformed manifests (found by fuzzing) are refused with a line naming the manifest.
    for bad in "$(dirname "$0")"/data/bad-manifests/*.json; do
      rm -rf "$work/bad" && mkdir -p "$work/bad" && cp "$bad" "$work/bad/manifest.json"
      expect_error "checkpoint $work/bad/manifest.json: " --model gpt-tiny --load "$work/bad"
    done
    # A save that cannot complete fails the job and leaves the previous checkpoint the latest.
    # A dangling link where the finished checkpoint's directory must be renamed to: the rename fails.
    ln -s /no/such/target "$work/ck/step-00000004"
    expect_error "pipe-train: rank 0 (stage 0): error: checkpoint: cannot rename $work/ck/step-00000004.partial to $work/ck/step-00000004 (Not a directory)" --model gpt-tiny --steps 4 --load "$work/ck" --save "$work/ck"
    grep -q "^step-00000002$" "$work/ck/latest" || { echo "FAIL: latest moved"; exit 1; }
    # latest may only name a checkpoint of its own folder.
    rm -rf "$work/escape" && cp -r "$work/ck" "$work/escape" && echo "../ck/step-00000002" > "$work/escape/latest"
    expect_error "latest names '../ck/step-00000002', which is not a step-N directory of $work/escape" --model gpt-tiny --load "$work/escape"
    # Resuming at or past --steps has nothing to do: exit 0, one line, no step run.
    out=$(timeout -k 5 120 "${mpirun[@]}" -np 2 "$train" --model gpt-tiny --micro-batches 4 --micro-batch-size 4 --stages 2 \
      --steps 2 --load "$work/ck" 2>&1) || { echo "FAIL: resuming at --steps failed"; echo "$out"; exit 1; }
    grep -q "the checkpoint is at step 2 and --steps is 2: nothing to do" <<<"$out" ||
      { echo "FAIL: no 'nothing to do'"; echo "$out"; exit 1; }
    ! grep -q "nan" <<<"$out" || { echo "FAIL: printed nan"; echo "$out"; exit 1; } ;;
  bf16)
    run fp32 1 "${small[@]}" --stages 1
    run b1 1 "${small[@]}" --stages 1 --dtype bf16
    run b2 2 "${small[@]}" --stages 2 --dtype bf16
    same b1 b2
    # bf16 rounds activations and weights to 8 significant bits: the losses move, a little.
    paste <(series fp32 loss) <(series b1 loss) | awk -v n="$steps" '
      { d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > worst) worst = r; if (d > 0) moved = 1 }
      END { printf "bf16 vs fp32: largest relative loss difference over %d steps %.3g (bound 1e-2)\n", NR, worst
            exit !(NR == n && worst <= 1e-2 && moved) }' ||
      { echo "FAIL: bf16 losses are not within 1e-2 of fp32, or equal to them (the flag has no effect)"; exit 1; }
    # Half the steps on 2 stages, saved, then the rest on 4 stages: the same as all straight (so 4 stages agree too).
    run first 2 "${base[@]}" --stages 2 --steps "$half" --dtype bf16 --save "$work/ck"
    run then4 4 "${small[@]}" --stages 4 --dtype bf16 --load "$work/ck"
    joined first then4 joined
    same b2 joined ;;
  flash)
    export PIPE_ATTENTION=materialized
    run mat 1 "${small[@]}" --stages 1
    export PIPE_ATTENTION=flash
    run f1 1 "${small[@]}" --stages 1
    run f2 2 "${small[@]}" --stages 2 --activation-checkpoint-interval 1
    unset PIPE_ATTENTION
    same f1 f2
    # The same model summed in another order (online softmax, blocks of 64 keys): gpu_train_check.sh's bounds.
    paste <(series mat loss) <(series f1 loss) | awk -v n="$steps" '
      { d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > worst) worst = r; if (NR == 1) first = r
        if (d > 0) moved = 1 }
      END { printf "flash vs materialised: largest relative loss difference over %d steps %.3g (bound 1e-4), first %.3g (bound 1e-5)\n",
              NR, worst, first
            exit !(NR == n && worst <= 1e-4 && first <= 1e-5 && moved) }' ||
      { echo "FAIL: flash losses are not within bounds of the materialised ones, or equal to them (not taken)"; exit 1; } ;;
  llama)
    llama=(--model llama-tiny --micro-batches 4 --micro-batch-size 4 --seed 7)
    run l1 1 "${llama[@]}" --steps "$steps" --stages 1
    for s in 2 4; do run "l$s" "$s" "${llama[@]}" --steps "$steps" --stages "$s"; same l1 "l$s"; done
    first=$(series l1 loss | head -1) last=$(series l1 loss | tail -1)
    # 20 steps take the loss down by a third; the sanitizers' 6 steps only down.
    awk -v f="$first" -v l="$last" -v n="$steps" 'BEGIN { printf "llama-tiny: loss %.4f -> %.4f in %d steps\n", f, l, n
                                                          exit !(n >= 20 ? l <= 2 * f / 3 : l < f) }' ||
      { echo "FAIL: llama-tiny's loss did not fall (by a third over 20 steps or more)"; exit 1; }
    run ltype 2 "${llama[@]}" --steps "$steps" --stages 2 --partition-method type:LlamaBlock
    same l1 ltype
    grep -q "partition type:LlamaBlock" "$work/ltype.log" || { echo "FAIL: no type:LlamaBlock banner:"; head -3 "$work/ltype.log"; exit 1; }
    run lzb 2 "${llama[@]}" --steps "$steps" --stages 2 --schedule zb-h1 --activation-checkpoint-interval 1
    same l1 lzb
    run lil 2 "${llama[@]}" --steps "$steps" --stages 2 --schedule interleaved-1f1b
    same l1 lil
    run lfirst 2 "${llama[@]}" --steps "$half" --stages 2 --save "$work/lck"
    run lthen 4 "${llama[@]}" --steps "$steps" --stages 4 --load "$work/lck"
    joined lfirst lthen ljoined
    same l1 ljoined
    run lb1 1 "${llama[@]}" --steps "$steps" --stages 1 --dtype bf16
    run lb2 2 "${llama[@]}" --steps "$steps" --stages 2 --dtype bf16
    same lb1 lb2 ;;
  *) echo "unknown check $check"; exit 2 ;;
esac
