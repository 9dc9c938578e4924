#!/usr/bin/env bash
# A real one-machine Slurm cluster (Debian's slurm-wlm: munged, slurmctld, slurmd on
# localhost, everything under a temporary folder) running subscope through sbatch:
# a 2-task collect with scripts/slurm/collect-cpu.sbatch and a 2-task forward equal the
# one-process runs, and a collect that gets the template's pre-time-limit signal half-way is
# requeued right after its next checkpoint, resumes from it and gives the uninterrupted result.
# Installs slurm-wlm and munge when they are missing and apt-get can (as root); otherwise,
# or without mpirun, it prints "skip: <why>" and passes nothing, like test_dist.sh.
source "$(dirname "$0")/lib.sh"
H5CMP=${TOOLBIN}h5cmp
M=models/tiny-gpt2
P=data/demo_prompts.jsonl
skip() { echo "  skip: $*"; finish; exit; }

command -v mpirun >/dev/null 2>&1 || skip "no mpirun on this machine ('make deps' installs openmpi-bin libopenmpi-dev)"
[ "$(id -u)" = 0 ] || skip "the local Slurm cluster runs slurmd as root, and this is not root"
PATH=$PATH:/usr/sbin:/sbin
have_slurm() { command -v slurmctld && command -v slurmd && command -v munged && command -v sbatch; } >/dev/null 2>&1
if ! have_slurm; then
    command -v apt-get >/dev/null 2>&1 || skip "Slurm is not installed and there is no apt-get to install slurm-wlm munge"
    echo "  (installing slurm-wlm munge with apt-get)"
    { timeout 300 apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends slurm-wlm munge; } >"$TMP/apt.log" 2>&1
    have_slurm || skip "Slurm is not installed and 'apt-get install slurm-wlm munge' failed: $(tail -n 1 "$TMP/apt.log")"
fi

# Nothing from an enclosing Slurm job may leak into ours (this suite may itself run under Slurm).
for v in $(env | sed -n 's/^\(SLURM_[A-Z_0-9]*\)=.*/\1/p'); do unset "$v"; done
export SUBSCOPE_THREADS=1 ASAN_OPTIONS=detect_leaks=0 OMPI_MCA_btl_vader_single_copy_mechanism=none
SUBSCOPE=$(cd "$(dirname "$SUBSCOPE")" && pwd)/$(basename "$SUBSCOPE")
H=$(hostname -s 2>/dev/null)
# slurmd registers under this name (-N) and slurmctld checks SlurmctldHost against it.
[ -n "$H" ] || skip "hostname -s prints nothing, so there is no node name for slurm.conf"
C=$TMP/cluster
mkdir -p "$C/munge" "$C/state" "$C/spool" "$C/log" && chmod 700 "$C/munge"
head -c 1024 /dev/urandom >"$C/munge/key" && chmod 400 "$C/munge/key"
# Ports from this shell's pid, so that two suites on one machine do not meet, below the
# kernel's ephemeral range (32768 and up on Linux: an outgoing connection of any process may
# hold such a port, and slurmctld then dies with "Address already in use"), and skipping a
# pair something already listens on.
port_busy() { ss -Htan 2>/dev/null | awk -v p=":$1\$" '$4 ~ p {f = 1} END {exit !f}'; }
PORT=$((12000 + ($$ % 9000) * 2))
for _ in $(seq 1 20); do
    port_busy $PORT || port_busy $((PORT + 1)) || break
    PORT=$((12000 + (PORT - 12000 + 2) % 18000))
done
export SLURM_CONF=$C/slurm.conf
# No cgroups (a container may not allow them): processes are tracked by parent pid.
cat >"$SLURM_CONF" <<EOF
ClusterName=sstest
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$C/munge/sock
StateSaveLocation=$C/state
SlurmdSpoolDir=$C/spool
SlurmctldPidFile=$C/slurmctld.pid
SlurmdPidFile=$C/slurmd.pid
SlurmctldLogFile=$C/log/slurmctld.log
SlurmdLogFile=$C/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName=$H NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF

# The daemons run in the foreground as children of this shell, so their pids are known and
# they are stopped on any exit, failure included.
pids=()
teardown() {
    if [ ${#pids[@]} -gt 0 ]; then
        scancel --quiet --partition=debug >/dev/null 2>&1
        for _ in $(seq 1 50); do squeue -h 2>/dev/null | grep -q . || break; sleep 0.1; done
        local i
        for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null; done
        for _ in $(seq 1 50); do
            local alive=0
            for i in "${pids[@]}"; do kill -0 "$i" 2>/dev/null && alive=1; done
            [ $alive = 0 ] && break; sleep 0.1
        done
        for i in "${pids[@]}"; do kill -9 "$i" 2>/dev/null; done
    fi
    rm -rf "$TMP"
}
trap teardown EXIT
t0=$SECONDS
munged -F --force --key-file="$C/munge/key" --socket="$C/munge/sock" --pid-file="$C/munge/pid" \
    --log-file="$C/munge/log" --seed-file="$C/munge/seed" >"$C/log/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [ -S "$C/munge/sock" ] && break; sleep 0.1; done
slurmctld -D -i -f "$SLURM_CONF" >"$C/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -N "$H" -f "$SLURM_CONF" >"$C/log/slurmd.out" 2>&1 &
pids+=($!)
# Up to 30 s, and not a moment longer once a daemon has died (sinfo without a controller
# waits for its own timeout at every call).
state=
while [ $((SECONDS - t0)) -lt 30 ]; do
    dead=0
    for i in "${pids[@]}"; do kill -0 "$i" 2>/dev/null || dead=1; done
    [ $dead = 1 ] && break
    state=$(timeout 5 sinfo -h -n "$H" -o %T 2>/dev/null)
    [ "$state" = idle ] && break
    sleep 0.2
done
if [ "$state" = idle ]; then pass "local Slurm cluster up: munged, slurmctld, slurmd; node $H (hostname -s) idle after $((SECONDS - t0)) s"
else
    fail "local Slurm cluster: node $H is '${state:-absent}' after $((SECONDS - t0)) s (port $PORT)" \
        "$(tail -n 3 "$C/log/slurmctld.log" "$C/log/slurmd.log" "$C/log/"*.out 2>&1)"
    finish; exit
fi

job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
# wait_job ID SECONDS: until the job leaves the queue; prints its final state.
wait_job() {
    local i
    for ((i = 0; i < $2 * 5; i++)); do squeue -h -j "$1" 2>/dev/null | grep -q . || break; sleep 0.2; done
    job_state "$1"
}

# job_diag ID: what Slurm says about a job that went wrong (state, reason, exit code) and the
# daemons' log lines about it, for a failure message.
job_diag() {
    scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[^ ]*\|Reason=[^ ]*\|ExitCode=[^ ]*\|Restarts=[^ ]*' | tr '\n' ' '
    echo
    grep -h -i "jobid=$1\b\|job $1\b\|job_id $1\b\|StepId=$1\." "$C/log/slurmctld.log" "$C/log/slurmd.log" 2>/dev/null | tail -n 15
    tail -n 5 "$C/log/slurmd.log" 2>/dev/null
}

# 1. A 2-task collect through the CPU template (srun --mpi=pmix: each task is an MPI rank)
# against one process: counts exact, statistics within 1e-12 (as in test_dist.sh).
awk 'NR % 3 == 0 {sub(/}$/, ", \"label\": \"a\"}")} NR % 3 {sub(/}$/, ", \"label\": \"b\"}")} {print}' $P >"$TMP/lab.jsonl"
CS='blocks.0.hook_resid_pre,blocks.*.mlp.hook_post'
"$SUBSCOPE" collect --model $M --input "$TMP/lab.jsonl" --sites "$CS" --stats mean,cov,corr --group-by label --batch 3 \
    --out "$TMP/c1.h5" 2>/dev/null
# The template's settings come from the environment (sbatch exports it; values hold commas,
# which --export=NAME=VALUE would split).
j=$(MODEL=$M INPUT="$TMP/lab.jsonl" OUT="$TMP/c2.h5" SITES="$CS" STATS=mean,cov,corr BATCH=3 EXTRA="--group-by label" \
    sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$TMP/c2.log" scripts/slurm/collect-cpu.sbatch 2>&1)
st=$(wait_job "$j" 60)
if [ "$st" != COMPLETED ]; then fail "sbatch collect-cpu.sbatch (2 tasks)" "job '$j' ended $st" "$(tail -n 4 "$TMP/c2.log" 2>&1)" "$(job_diag "$j")"
elif ! grep -q "2 ranks x 1 threads" "$TMP/c2.log"; then fail "the collect job ran 2 ranks" "$(head -n 3 "$TMP/c2.log")"
elif res=$("$H5CMP" --quiet --atol 1e-14 --rtol 1e-12 "$TMP/c1.h5" "$TMP/c2.h5" 2>&1); then
    ranks=$(h5dump -a /ranks "$TMP/c2.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
    [ "$ranks" = 2 ] && pass "sbatch collect-cpu.sbatch, 2 tasks (srun --mpi=pmix) = one process (counts exact, stats 1e-12, per label)" ||
        fail "the sbatch collect ran as 2 MPI ranks" "ranks attribute '$ranks'"
else fail "sbatch collect (2 tasks) vs one process" "$(printf '%s' "$res" | head -n 4)"; fi

# 2. forward, a plain sbatch --wrap job: per-prompt values bit for bit.
FS='blocks.*.mlp.hook_post,blocks.1.attn.hook_pattern'
"$SUBSCOPE" forward --model $M --input $P --sites "$FS" --batch 3 --out "$TMP/f1.h5" 2>/dev/null
j=$(sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$TMP/f2.log" \
    --wrap "srun --mpi=pmix --kill-on-bad-exit=1 '$SUBSCOPE' forward --model $M --input $P --sites '$FS' --batch 3 --out '$TMP/f2.h5'" 2>&1)
st=$(wait_job "$j" 60)
if [ "$st" != COMPLETED ]; then fail "sbatch forward (2 tasks)" "job '$j' ended $st" "$(tail -n 4 "$TMP/f2.log" 2>&1)" "$(job_diag "$j")"
elif res=$("$H5CMP" --quiet --atol 0 --rtol 0 "$TMP/f1.h5" "$TMP/f2.h5" 2>&1); then
    pass "sbatch forward, 2 tasks = one process, bit for bit"
else fail "sbatch forward (2 tasks) vs one process" "$(printf '%s' "$res" | head -n 4)"; fi

# 2b. Commands that run in one process: the batch step of a 2-task job runs them (it is one
# process), and `srun` with 2 tasks is refused before either task starts work.
j=$(sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$TMP/one.log" \
    --wrap "'$SUBSCOPE' tokenize --model $M --text 'The cat'; srun --mpi=pmix '$SUBSCOPE' info --model $M; echo srun-exit=\$?" 2>&1)
st=$(wait_job "$j" 60)
if [ "$st" = COMPLETED ] && grep -q "^\[335, 656\]$" "$TMP/one.log" &&
   grep -q "subscope info: error: started as one of 2 ranks (SLURM_STEP_NUM_TASKS=2)" "$TMP/one.log" &&
   grep -q "^srun-exit=[1-9]" "$TMP/one.log"; then
    pass "sbatch --ntasks=2: the batch step runs tokenize; srun -n 2 of info --model is refused"
else fail "one-process commands under Slurm" "job '$j' ended $st" "$(tail -n 6 "$TMP/one.log" 2>&1)"; fi

# 3. Requeue half-way and resume. `scancel --batch --signal=USR1` delivers what
# `#SBATCH --signal=B:USR1@600` delivers before the time limit (Slurm's own timing of that is
# coarse, tens of seconds). The template waits for the next checkpoint, requeues, and the
# restarted job (SLURM_RESTART_COUNT=1) runs with --resume.
for _ in $(seq 1 600); do cat $P; done >"$TMP/big.jsonl" # 9600 prompts
BS='blocks.*.mlp.hook_post'
"$SUBSCOPE" collect --model $M --input "$TMP/big.jsonl" --sites "$BS" --stats mean,cov --batch 8 --out "$TMP/b1.h5" 2>/dev/null
j=$(MODEL=$M INPUT="$TMP/big.jsonl" OUT="$TMP/rq.h5" SITES="$BS" STATS=mean,cov BATCH=8 CKPT_EVERY=800 \
    sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$TMP/rq.log" scripts/slurm/collect-cpu.sbatch 2>&1)
for _ in $(seq 1 300); do [ -e "$TMP/rq.h5.ckpt" ] && break; sleep 0.1; done
k0=$(h5dump -a /prompts_done "$TMP/rq.h5.ckpt" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
scancel --batch --signal=USR1 "$j"
# Slurm holds a requeued job for about 2 minutes (EligibleTime), the lifetime of the launch
# credential that the requeue revoked; release it 2 s later instead. Not at once: slurmd refuses
# a credential made in the same second as that revocation ("Job credential revoked"), and the
# job then fails without running. (StartTime=now+2 would wait for the scheduler's next
# periodic pass, up to a minute; StartTime=now schedules at once.)
st=
for _ in $(seq 1 300); do
    st=$(job_state "$j"); [ "$st" = PENDING ] && sleep 2 && scontrol update jobid="$j" StartTime=now >/dev/null 2>&1 && break
    case $st in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL) break ;; esac
    sleep 0.1
done
st2=$(wait_job "$j" 90)
restarts=$(scontrol show job "$j" 2>/dev/null | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')
k=$(sed -n 's/^resuming from .*: \([0-9]*\) of 9600 prompts done$/\1/p' "$TMP/rq.log" | tail -n 1)
if [ "$st" = PENDING ] && [ "$st2" = COMPLETED ] && [ "${restarts:-0}" = 1 ] && grep -q "checkpoint .* written; requeueing" "$TMP/rq.log" &&
   [ -n "$k" ] && [ -n "$k0" ] && [ "$k" -gt "$k0" ] && [ "$k" -lt 9600 ]; then
    pass "USR1 half-way: requeued right after the next checkpoint (prompt $k0 -> $k of 9600), restarted once with --resume"
else fail "requeue and resume" "state after the signal '$st', final '$st2', restarts '${restarts:-}', checkpoint at signal '${k0:-}', resumed at '${k:-}'" \
    "$(tail -n 12 "$TMP/rq.log")" "$(job_diag "$j")"; fi
expect_ok "the requeued and resumed collect = one uninterrupted process" "$H5CMP" --quiet --atol 1e-14 --rtol 1e-12 "$TMP/b1.h5" "$TMP/rq.h5"
[ ! -e "$TMP/rq.h5.ckpt" ] && pass "checkpoint removed once the result is whole" || fail "checkpoint left behind after the resumed job"
echo "  ($((SECONDS - t0)) s with the cluster up)"
finish
