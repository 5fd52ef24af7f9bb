#!/usr/bin/env bash
# gpu_train_check.sh CHECK PIPE_TRAIN PROBE MPIRUN [MPIRUN ARGS...]
#
# pipe-train on the GPU (--device cuda), compared through --metrics lines as tests/train_check.sh does on the CPU.
# PROBE is test_cuda_ops: `PROBE --probe` prints "cuda devices: N ..." (exit 0) or "SKIPPED: <reason>" (exit 77);
# without a GPU every check prints that line and exits 77, which CTest reports as skipped.
#
#   stages   fp32: 1 stage vs 2 stages (2 ranks sharing GPU 0 over --comm mpi; with 2+ GPUs also one GPU per rank
#            over --comm nccl): same first loss (relative 1e-6), every loss within relative 1e-4
#   bf16     the same with --dtype bf16 (mixed precision): first loss 1e-3, every loss 1e-2; and bf16 differs
#            from fp32 (the flag takes effect) by at most 5e-2 at the first step
#   flash    flash attention (PIPE_ATTENTION=flash) against the materialised attention, fp32: first loss 1e-5,
#            every loss 1e-4, first gradient norm 1e-4
#   vs-cpu   the GPU against the CPU: fp32 first loss within 1e-5, first gradient norm within 1e-4, every loss
#            within 1e-3; tf32 first loss within 2e-3 of the CPU's fp32; bf16 first loss within 1e-3 and every
#            loss within 1e-2 of the CPU's bf16 (which emulates the GPU's rounding)
#
# Why these tolerances. On the CPU these runs are bit-identical at any stage count (train_check.sh stages), and a
# different reduction order (train_check.sh data-parallel: 2 replicas vs 1) moves 20 steps of losses by under 1e-6
# relative. On the GPU the layers compute the same thing at every stage count, but the kernels may reduce in another
# order (atomics in scatter-adds and weight gradients, cuBLAS's split-k), and the tied embedding's gradient is summed
# across stages in another order, so the losses need not be bit-identical:
#   - step 0's loss is the forward pass only, the same kernels on the same inputs: identical up to an atomic's
#     order, 1e-6 (fp32). Its gradient norm sums per-stage squares across ranks: 1e-5.
#   - later steps carry reordered sums through AdamW; the CPU's data-parallel run shows such perturbations stay
#     near 1e-6 over 20 steps of gpt-tiny, so 1e-4 is a hundredfold margin that still catches a wrong gradient
#     (a lost or doubled contribution moves the losses by percents within a few steps).
#   - bf16 stores every activation and weight in 8 significant bits: a perturbation of one fp32 ulp can flip a
#     rounding, a 2^-8 relative change of that element, so runs drift apart faster: 1e-2 over 20 steps. Step 0's
#     forward already rounds after every op, and a flipped rounding moves the loss by ~2^-8 / sqrt(elements):
#     1e-3.
#   - GPU vs CPU: each op differs by ~1e-6 (test_cuda_ops), so step 0 agrees to 1e-5 and 20 steps to 1e-3;
#     tf32 GEMM inputs carry 2^-11 relative errors: step 0 within 2e-3 of the CPU's fp32 loss. The CPU's bf16
#     rounds as the GPU does, so the GPU's bf16 follows it as bf16 runs follow each other: 1e-3 and 1e-2.
# Every comparison prints the measured largest difference, so that the first GPU run shows the margins.
set -u
check=$1 train=$2 probe=$3
shift 3
mpirun=("$@")

probe_out=$("$probe" --probe 2>&1)
probe_rc=$?
if [ "$probe_rc" -eq 77 ]; then
  echo "$probe_out" | grep -m1 '^SKIPPED' || echo "SKIPPED: no GPU"
  exit 77
fi
[ "$probe_rc" -eq 0 ] || { echo "FAIL: $probe --probe exited $probe_rc: $probe_out"; exit 1; }
gpus=$(sed -n 's/^cuda devices: \([0-9][0-9]*\).*/\1/p' <<<"$probe_out")
echo "$probe_out"
[ -n "$gpus" ] || { echo "FAIL: cannot read the GPU count from: $probe_out"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
steps=20
base=(--model gpt-tiny --micro-batches 4 --micro-batch-size 4 --seed 7 --steps "$steps")

run() {  # run NAME RANKS ARGS...: the job's metrics in $work/NAME.json
  local name=$1 ranks=$2
  shift 2
  echo "run $name: mpirun -np $ranks pipe-train ${base[*]} $*"
  if ! timeout -k 5 300 "${mpirun[@]}" -np "$ranks" "$train" "${base[@]}" "$@" --metrics "$work/$name.json" \
    >"$work/$name.log" 2>&1; then
    echo "FAIL: $name: pipe-train exited non-zero"
    cat "$work/$name.log"
    exit 1
  fi
}
series() { grep -v '"summary\|val_loss' "$work/$1.json" | grep -o "\"$2\":[^,}]*" | cut -d: -f2; }

# close A B KEY FIRST_TOL ALL_TOL: the largest relative difference of KEY between runs A and B at step 0 and over
# all steps, printed; fails when either is above its bound (ALL_TOL "-" checks step 0 only).
close() {
  local a=$1 b=$2 key=$3 first=$4 all=$5
  paste <(series "$a" "$key") <(series "$b" "$key") | awk -v a="$a" -v b="$b" -v key="$key" -v first="$first" \
    -v all="$all" -v steps="$steps" '
    function rel(x, y) { d = x - y; if (d < 0) d = -d; m = (x < 0 ? -x : x); return m > 0 ? d / m : d }
    NF == 2 { r = rel($1, $2); if (NR == 1) r0 = r; if (r > worst) { worst = r; at = NR - 1 } n++ }
    END {
      ok = (n == steps) && (r0 <= first) && (all == "-" || worst <= all)
      printf "%s vs %s, %s: step 0 relative difference %.3g (bound %s); largest over %d steps %.3g at step %d (%s)%s\n",
        a, b, key, r0, first, n, worst, at, all == "-" ? "not bounded" : "bound " all, ok ? "" : "  <-- FAIL"
      if (n != steps) printf "FAIL: %d of %d steps in the metrics\n", n, steps
      exit !ok }'
}

# differs A B: some loss differs (the runs did not compute the same thing)
differs() { ! diff -q <(series "$1" loss) <(series "$2" loss) >/dev/null; }

# The --comm mpi runs put both ranks on one GPU (the first visible), so that staging through the host of a
# shared GPU is what they check, however many GPUs the machine has.
shared_gpu=${CUDA_VISIBLE_DEVICES:-0}
shared_gpu=${shared_gpu%%,*}

status=0
case $check in
  stages)
    run gpu1 1 --stages 1 --device cuda --dtype fp32
    CUDA_VISIBLE_DEVICES=$shared_gpu run gpu2_mpi 2 --stages 2 --device cuda --dtype fp32 --comm mpi
    close gpu1 gpu2_mpi loss 1e-6 1e-4 || status=1
    close gpu1 gpu2_mpi grad_norm 1e-5 - || status=1
    if [ "$gpus" -ge 2 ]; then
      run gpu2_nccl 2 --stages 2 --device cuda --dtype fp32 --comm nccl
      close gpu1 gpu2_nccl loss 1e-6 1e-4 || status=1
      close gpu1 gpu2_nccl grad_norm 1e-5 - || status=1
    else
      echo "note: 1 GPU: --comm nccl (one GPU per rank) not checked"
    fi ;;
  bf16)
    run bf1 1 --stages 1 --device cuda --dtype bf16
    CUDA_VISIBLE_DEVICES=$shared_gpu run bf2_mpi 2 --stages 2 --device cuda --dtype bf16 --comm mpi
    close bf1 bf2_mpi loss 1e-3 1e-2 || status=1
    if [ "$gpus" -ge 2 ]; then
      run bf2_nccl 2 --stages 2 --device cuda --dtype bf16 --comm nccl
      close bf1 bf2_nccl loss 1e-3 1e-2 || status=1
    fi
    run fp1 1 --stages 1 --device cuda --dtype fp32
    close fp1 bf1 loss 5e-2 - || status=1
    if ! differs fp1 bf1; then echo "FAIL: --dtype bf16 gave the fp32 losses bit for bit (the flag has no effect)"; status=1; fi ;;
  flash)
    # Flash attention (PIPE_ATTENTION=flash; by default only from 2048 tokens) against the materialised path: the
    # same model in fp32, summed in another order: the stage-count bounds.
    export PIPE_ATTENTION=materialized
    run mat 1 --stages 1 --device cuda --dtype fp32
    export PIPE_ATTENTION=flash
    run flash 1 --stages 1 --device cuda --dtype fp32
    unset PIPE_ATTENTION
    close mat flash loss 1e-5 1e-4 || status=1
    close mat flash grad_norm 1e-4 - || status=1 ;;
  vs-cpu)
    run cpu 1 --stages 1 --device cpu
    run gpu 1 --stages 1 --device cuda --dtype fp32
    close cpu gpu loss 1e-5 1e-3 || status=1
    close cpu gpu grad_norm 1e-4 - || status=1
    run tf32 1 --stages 1 --device cuda --dtype tf32
    close cpu tf32 loss 2e-3 - || status=1
    run cpu_bf16 1 --stages 1 --device cpu --dtype bf16
    run bf16 1 --stages 1 --device cuda --dtype bf16
    close cpu_bf16 bf16 loss 1e-3 1e-2 || status=1 ;;
  *) echo "unknown check $check"; exit 2 ;;
esac
[ "$status" -eq 0 ] && echo "OK: $check" || echo "FAIL: $check"
exit "$status"
