# Checkpoint-and-requeue for subscope under Slurm; sourced by the sbatch templates in this
# folder (scripts/slurm/README.md). Needs bash, and `sbatch --requeue --signal=B:USR1@SECS`.
#
# subscope catches no signal to finish its work (on SIGTERM it only deletes its temporary files
# first): SIGTERM, SIGUSR1 or SIGKILL end it at once, and everything
# since its last checkpoint is lost. Its checkpoint (OUT.ckpt) is written by rank 0 at the end
# of each round of --checkpoint-every prompts, under a temporary name renamed into place, so a
# kill never damages it. Hence the plan here: the warning signal goes to the batch shell only
# (the B: in --signal), never to the ranks; the shell then waits for the next checkpoint to be
# renamed into place and requeues the job right after it, so little beyond the last round is
# lost. The restarted job runs the same command with --resume (any number of ranks works).

# ss_resume_flag OUT: prints --resume when this is a restart or OUT.ckpt exists.
ss_resume_flag() {
    if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] || [ -e "$1.ckpt" ]; then echo --resume; fi
}

# ss_already_done OUT: true when a restarted job finds the result whole (OUT exists, no
# checkpoint: collect renames OUT into place and then deletes the checkpoint).
ss_already_done() {
    [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && [ -e "$1" ] && [ ! -e "$1.ckpt" ]
}

# The identity of the checkpoint file now: a new rename gives a new inode and mtime.
ss_ckpt_stamp() { stat -c '%i %y' "$1" 2>/dev/null || echo none; }

# ss_run_requeueable OUT CMD...: runs CMD (srun ... subscope collect ... --out OUT) and returns
# its exit status. On SIGUSR1 it waits up to SUBSCOPE_REQUEUE_WAIT seconds (default 300; keep
# it below the --signal lead time minus KillWait) for OUT.ckpt to change, then runs
# `scontrol requeue $SLURM_JOB_ID`, which ends the steps and puts the job back in the queue.
ss_run_requeueable() {
    local out=$1; shift
    local wait_max=${SUBSCOPE_REQUEUE_WAIT:-300} asked=0 rc pid before deadline
    trap 'asked=1' USR1
    "$@" &
    pid=$!
    wait "$pid"; rc=$?
    # wait returns early (status > 128) when the trapped signal arrives.
    while [ $asked = 0 ] && kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done
    if [ $asked = 0 ]; then trap - USR1; return $rc; fi
    before=$(ss_ckpt_stamp "$out.ckpt")
    echo "subscope-slurm: $(date -u +%FT%TZ) got SIGUSR1 (time limit near); waiting up to ${wait_max}s for the next checkpoint of $out, then requeueing job ${SLURM_JOB_ID:-?}"
    deadline=$((SECONDS + wait_max))
    while kill -0 "$pid" 2>/dev/null && [ "$(ss_ckpt_stamp "$out.ckpt")" = "$before" ] && [ $SECONDS -lt $deadline ]; do
        sleep 0.5
    done
    if ! kill -0 "$pid" 2>/dev/null; then # it finished (or failed) meanwhile: nothing to requeue
        wait "$pid"; rc=$?
        trap - USR1
        echo "subscope-slurm: the run ended by itself (exit $rc) before the requeue"
        return $rc
    fi
    if [ "$(ss_ckpt_stamp "$out.ckpt")" = "$before" ]; then
        echo "subscope-slurm: no new checkpoint within ${wait_max}s; requeueing anyway (the work since $( [ "$before" = none ] && echo 'the start' || echo 'the last checkpoint') is lost)"
    else
        echo "subscope-slurm: checkpoint $out.ckpt written; requeueing"
    fi
    if ! scontrol requeue "${SLURM_JOB_ID:?not inside a Slurm job}"; then
        echo "subscope-slurm: scontrol requeue failed (was the job submitted with --requeue?); the run goes on until the time limit" >&2
        wait "$pid"; rc=$?
        trap - USR1
        return $rc
    fi
    # The requeue ends the steps and then this shell. The steps may end first (srun sees its
    # tasks killed): were the shell to exit now with their failure, a busy controller could
    # record the job as FAILED before it requeues it, so the shell waits to be ended.
    wait "$pid" 2>/dev/null
    for _ in $(seq 1 600); do sleep 0.2; done
    echo "subscope-slurm: still running 120 s after the requeue; exiting" >&2
    trap - USR1
    return 1
}
