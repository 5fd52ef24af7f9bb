#!/usr/bin/env bash
# fault_check.sh CHECK PIPE_TRAIN MPIRUN [MPIRUN ARGS...]
#
# Real pipe-train jobs under mpirun, hurt on purpose:
#   sigkill    one rank killed with SIGKILL mid-run: the whole job ends within 10 s
#   sigterm    SIGTERM to one rank: every rank stops after the same step, a checkpoint is saved,
#              the job exits with status 3, and the checkpoint resumes
#   sigusr1    the same, with SIGUSR1 to mpirun (which forwards it to every rank)
#   timeout    one rank stopped (SIGSTOP) with --comm-timeout 3: the job ends, naming what was waited on
#   nonfinite  a learning rate that overflows: exit status 4 with the step and the layer named;
#              with --skip-nonfinite the steps are skipped and counted, exit 0
#   startup    one rank stopped before MPI_Init, with --comm-timeout 3: the others, waiting in MPI_Init,
#              end the job within seconds with one line naming the wait (no MPI timeout covers it)
#   fulldisk   the disk fills while a resumed run saves a step again: the job fails naming the
#              full disk, and `latest` still names the earlier checkpoint of that step, which loads.
#              Runs in a private mount namespace on a small tmpfs (unshare -m, mount: root or
#              CAP_SYS_ADMIN); where the machine does not allow that it prints SKIPPED and exits 77.
#   savelock   a second job saving into the --save folder of a running one is refused, naming the
#              first; the first goes on and saves
set -u
# CPU checks: GPUs hidden, so that pipe-train's default device is the CPU on any machine
# (tests/gpu_train_check.sh checks the GPU).
export CUDA_VISIBLE_DEVICES=
check=$1 train=$2; shift 2
mpirun=("$@")
work=$(mktemp -d)
marker="--seed 4242$$"  # finds this test's ranks among other processes
trap 'pkill -KILL -f -- "$marker" 2>/dev/null; rm -rf "$work"' EXIT
args=(--model gpt-tiny --stages 3 --micro-batches 2 --micro-batch-size 2 --seed "4242$$")

start_job() {  # start_job LOG ARGS...: the job in the background; sets job_pid
  ( "${mpirun[@]}" -np 3 "$train" "${args[@]}" "${@:2}" >"$work/$1" 2>&1; echo "status=$?" >>"$work/$1" ) &
  job_pid=$!
}
a_rank() {  # the pid of one rank, once training runs
  for _ in $(seq 1 100); do
    if grep -q "^step " "$work/$1" 2>/dev/null; then
      # A rank: a pipe-train process of this job (not mpirun, whose command line matches too).
      for p in $(pgrep -f -- "$marker"); do [ "$(cat /proc/$p/comm 2>/dev/null)" = pipe-train ] && echo "$p"; done | tail -1
      return
    fi
    sleep 0.2
  done
}
status_of() { sed -n 's/^status=//p' "$work/$1"; }

case $check in
  sigkill)
    start_job kill.log --steps 100000
    pid=$(a_rank kill.log); [ -n "$pid" ] || { echo "FAIL: the job never started"; cat "$work/kill.log"; exit 1; }
    t0=$(date +%s%N); kill -KILL "$pid"
    wait "$job_pid"
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    pgrep -f -- "$marker" >/dev/null && { echo "FAIL: ranks left running"; exit 1; }
    echo "job ended ${ms} ms after SIGKILL of rank pid $pid (status $(status_of kill.log))"
    [ "$ms" -le 10000 ] || { echo "FAIL: more than 10 s"; exit 1; }
    [ "$(status_of kill.log)" != 0 ] || { echo "FAIL: a job with a killed rank exited 0"; exit 1; } ;;
  sigterm | sigusr1)
    start_job term.log --steps 100000 --save "$work/ck"
    pid=$(a_rank term.log); [ -n "$pid" ] || { echo "FAIL: the job never started"; cat "$work/term.log"; exit 1; }
    if [ "$check" = sigterm ]; then
      kill -TERM "$pid"
    else  # to mpirun, which forwards SIGUSR1 to every rank
      kill -USR1 "$(pgrep -P "$job_pid" | head -1)"
    fi
    wait "$job_pid"
    cat "$work/term.log" | grep -E "stopped|checkpoint saved"
    [ "$(status_of term.log)" = 3 ] || { echo "FAIL: exit status $(status_of term.log), expected 3"; exit 1; }
    grep -q "pipe-train: stopped by SIGTERM, SIGINT or SIGUSR1 after step" "$work/term.log" || { echo "FAIL: no stop line"; exit 1; }
    step=$(sed -n 's/.*stopped by SIGTERM, SIGINT or SIGUSR1 after step \([0-9]*\).*/\1/p' "$work/term.log")
    grep -q "^step-$(printf %08d "$step")$" "$work/ck/latest" || { echo "FAIL: latest is not step $step"; exit 1; }
    "${mpirun[@]}" -np 3 "$train" "${args[@]}" --steps $((step + 2)) --load "$work/ck" >"$work/resume.log" 2>&1 ||
      { echo "FAIL: the saved checkpoint does not resume"; cat "$work/resume.log"; exit 1; }
    grep -q "resumed from $work/ck at step $step" "$work/resume.log" || { echo "FAIL: no resume"; exit 1; } ;;
  timeout)
    start_job hang.log --steps 100000 --comm-timeout 3
    pid=$(a_rank hang.log); [ -n "$pid" ] || { echo "FAIL: the job never started"; cat "$work/hang.log"; exit 1; }
    t0=$(date +%s%N); kill -STOP "$pid"
    for _ in $(seq 1 60); do grep -q "^status=" "$work/hang.log" && break; sleep 0.5; done
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    kill -KILL "$pid" 2>/dev/null
    wait "$job_pid"
    grep "comm-timeout" "$work/hang.log" | head -3
    grep -q "^status=" "$work/hang.log" || { echo "FAIL: still hanging after 30 s"; exit 1; }
    grep -q "error: --comm-timeout: waited more than 3 s for .* (rank [0-9]*)" "$work/hang.log" ||
      { echo "FAIL: no timeout message"; cat "$work/hang.log"; exit 1; }
    echo "job ended ${ms} ms after a rank stopped" ;;
  nonfinite)
    "${mpirun[@]}" -np 3 "$train" "${args[@]}" --steps 5 --lr 1e30 --clip-grad-norm 0 >"$work/nan.log" 2>&1
    status=$?
    cat "$work/nan.log" | grep "error"
    [ "$status" = 4 ] || { echo "FAIL: exit status $status, expected 4"; exit 1; }
    [ "$(grep -c "pipe-train: error: step 2 produced a non-finite gradient in layer 0 (Embedding) on stage 0" "$work/nan.log")" = 1 ] ||
      { echo "FAIL: message"; cat "$work/nan.log"; exit 1; }
    "${mpirun[@]}" -np 3 "$train" "${args[@]}" --steps 5 --lr 1e30 --clip-grad-norm 0 --skip-nonfinite >"$work/skip.log" 2>&1 ||
      { echo "FAIL: --skip-nonfinite exited non-zero"; cat "$work/skip.log"; exit 1; }
    grep -q "pipe-train: 4 non-finite steps skipped" "$work/skip.log" || { echo "FAIL: skips not counted"; cat "$work/skip.log"; exit 1; } ;;
  startup)
    t0=$(date +%s%N)
    # Rank 1 stops itself (Open MPI's rank variable) before it execs pipe-train, so it never reaches MPI_Init.
    timeout -k 5 60 "${mpirun[@]}" -np 2 sh -c '[ "$OMPI_COMM_WORLD_RANK" = 1 ] && kill -STOP $$; exec "$0" "$@"' \
      "$train" "${args[@]}" --stages 2 --steps 2 --comm-timeout 3 >"$work/start.log" 2>&1
    status=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    grep "comm-timeout" "$work/start.log"
    [ "$status" != 0 ] && [ "$status" != 124 ] || { echo "FAIL: exit status $status"; cat "$work/start.log"; exit 1; }
    [ "$(grep -c "^pipe-train: rank 0: error: --comm-timeout: MPI_Init (the start of every rank) did not finish within 3 s" "$work/start.log")" = 1 ] ||
      { echo "FAIL: no single line naming the wait"; cat "$work/start.log"; exit 1; }
    pgrep -f -- "$marker" >/dev/null && { echo "FAIL: ranks left running"; exit 1; }
    echo "job ended ${ms} ms after start with a rank stopped before MPI_Init" ;;
  savelock)
    start_job first.log --steps 100000 --save "$work/ck" --save-every 1000
    pid=$(a_rank first.log); [ -n "$pid" ] || { echo "FAIL: the job never started"; cat "$work/first.log"; exit 1; }
    out=$("${mpirun[@]}" -np 1 "$train" --model gpt-tiny --steps 2 --save "$work/ck" 2>&1) &&
      { echo "FAIL: a second job saving into the same folder ran"; echo "$out"; exit 1; }
    grep -q "is in use by another pipe-train job (pid [0-9]* on " <<<"$out" ||
      { echo "FAIL: the refusal does not name the first job"; echo "$out"; exit 1; }
    echo "refused: $(grep -o 'error: .*' <<<"$out" | head -1)"
    kill -TERM "$pid"
    wait "$job_pid"
    [ "$(status_of first.log)" = 3 ] || { echo "FAIL: the first job did not stop and save"; cat "$work/first.log"; exit 1; }
    grep -q "^step-" "$work/ck/latest" || { echo "FAIL: the first job's checkpoint is missing"; exit 1; } ;;
  fulldisk)
    if [ -z "${PIPE_FAULT_IN_MOUNT_NAMESPACE:-}" ]; then
      unshare -m --propagation private true 2>/dev/null ||
        { echo "SKIPPED: cannot make a private mount namespace here (unshare -m needs root or CAP_SYS_ADMIN)"; exit 77; }
      rm -rf "$work"; trap - EXIT
      PIPE_FAULT_IN_MOUNT_NAMESPACE=1 exec unshare -m --propagation private "$0" fulldisk "$train" "${mpirun[@]}"
    fi
    disk=$work/disk
    mkdir "$disk"
    trap 'pkill -KILL -f -- "$marker" 2>/dev/null; umount "$disk" 2>/dev/null; rm -rf "$work"' EXIT
    # gpt-tiny's checkpoint is about 9.6 MB: two fit in 24 MB, a third does not.
    mount -t tmpfs -o size=24m tmpfs "$disk" 2>/dev/null ||
      { echo "SKIPPED: cannot mount a tmpfs here"; exit 77; }
    "${mpirun[@]}" -np 3 "$train" "${args[@]}" --steps 4 --save "$disk/ck" --save-every 2 >"$work/first.log" 2>&1 ||
      { echo "FAIL: the first run failed"; cat "$work/first.log"; exit 1; }
    [ "$(ls "$disk/ck")" = "$(printf 'latest\nstep-00000002\nstep-00000004')" ] ||
      { echo "FAIL: after two saves the folder holds:"; ls "$disk/ck"; exit 1; }
    [ "$(cat "$disk/ck/latest")" = step-00000004 ] || { echo "FAIL: latest is not step 4"; exit 1; }
    # Resume from step 2 and save step 4 again: it goes beside the good one and fills the disk on the way.
    "${mpirun[@]}" -np 3 "$train" "${args[@]}" --steps 4 --load "$disk/ck/step-00000002" --save "$disk/ck" \
      --save-every 2 >"$work/resave.log" 2>&1
    status=$?
    grep "error" "$work/resave.log" | head -3
    [ "$status" != 0 ] || { echo "FAIL: a save onto a full disk exited 0"; cat "$work/resave.log"; exit 1; }
    grep -q "failed (No space left on device)" "$work/resave.log" || { echo "FAIL: the error does not name the full disk"; cat "$work/resave.log"; exit 1; }
    [ "$(cat "$disk/ck/latest")" = step-00000004 ] || { echo "FAIL: latest moved to $(cat "$disk/ck/latest")"; exit 1; }
    # The cut-off save never got a checkpoint's name: it stays step-00000004.partial, which nothing loads.
    [ ! -e "$disk/ck/step-00000004.1" ] && [ -d "$disk/ck/step-00000004.partial" ] ||
      { echo "FAIL: the failed save is not (only) a .partial directory"; ls "$disk/ck"; exit 1; }
    "${mpirun[@]}" -np 3 "$train" "${args[@]}" --steps 5 --load "$disk/ck" >"$work/resume.log" 2>&1 ||
      { echo "FAIL: the checkpoint latest names no longer loads"; cat "$work/resume.log"; exit 1; }
    grep -q "resumed from $disk/ck at step 4" "$work/resume.log" || { echo "FAIL: no resume"; cat "$work/resume.log"; exit 1; }
    echo "the disk filled during the re-save; latest still names step 4, which resumed" ;;
  *) echo "unknown check $check"; exit 2 ;;
esac
