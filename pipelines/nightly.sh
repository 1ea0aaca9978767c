#!/bin/bash
# alexctl's nightly job, made for cron: one night's pipeline, its own log with a time stamp on every line,
# one job at a time. docs/cron.md explains it; tests/test_pipelines.py runs it under `env -i`.
#
#   crontab:  30 1 * * *  /srv/alexctl/pipelines/nightly.sh SRC=/srv/images/train EPOCHS=90
#
# Arguments are make variables for the pipeline. Settings from the environment (or the crontab line):
#   PIPELINE  which pipeline under pipelines/ (default imagenette.mk)
#   OUT       where this night's files go (default ROOT/nightly/YYYY-MM-DD)
#   LOGS      where the logs and the job's lock go (default ROOT/logs; created)
# Exit status: 0 done (or nothing left to do); 3 another nightly job, or a stage of this night's pipeline,
# is still running; otherwise make's (2 when a stage failed or refused its input: the `alexctl status`
# table at the end of the log says which and why).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PATH="/usr/local/bin:/usr/bin:/bin${PATH:+:$PATH}"  # cron's PATH is minimal
NIGHT=$(date +%F)
LOGS=${LOGS:-$ROOT/logs}
OUT=${OUT:-$ROOT/nightly/$NIGHT}
PIPELINE=${PIPELINE:-imagenette.mk}
ALEXCTL="$ROOT/.venv/bin/python -m alexctl"

stamp() {  # every line of the log begins with the date and time it was written
    while IFS= read -r line; do printf '%s %s\n' "$(date '+%F %T')" "$line"; done
}

night() {
    exec 9>"$LOGS/nightly.lock"
    if ! flock -n 9; then
        echo "nightly: another nightly job holds $LOGS/nightly.lock; not starting a second one."
        return 3
    fi
    local dirs=("$OUT/data" "$OUT"/runs/* "$OUT/ensemble")
    if [ -d "$OUT" ] && $ALEXCTL status "${dirs[@]}" 2>/dev/null | grep -q "	running	"; then
        echo "nightly: a stage in $OUT is still running (alexctl status says so); not starting."
        return 3
    fi
    echo "nightly: make -f pipelines/$PIPELINE OUT=$OUT $*"
    make --no-print-directory -f "$ROOT/pipelines/$PIPELINE" OUT="$OUT" "$@"
    local status=$?
    dirs=("$OUT/data" "$OUT"/runs/* "$OUT/ensemble")
    $ALEXCTL status "${dirs[@]}"  # what the log ends with
    echo "nightly: exit $status"
    return $status
}

mkdir -p "$LOGS" || { echo "nightly: cannot create the log folder $LOGS." >&2; exit 2; }
night "$@" 2>&1 | stamp >>"$LOGS/nightly-$NIGHT.log"
exit "${PIPESTATUS[0]}"
