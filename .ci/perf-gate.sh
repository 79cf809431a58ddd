#!/usr/bin/env bash
# The performance gate of a change: runs SCENARIO on this build (the candidate) and on
# BASE_REV (the baseline, built in a temporary git worktree), interleaved A B B A in one run,
# gates the result and writes the reports into OUT_DIR: run/results.json, summary.md (for the
# job summary or a pull-request comment), junit.xml, bencher.json, benchmark-bigger.json and
# benchmark-smaller.json (github-action-benchmark). Exit code: the gate's (0 pass,
# 1 regression, 2 unusable input, 3 inconclusive with --strict in GATE_ARGS).
# Used by .github/workflows/perf.yml; harness/tests/gate.rs runs it as CI does.
#
# usage: .ci/perf-gate.sh BASE_REV SCENARIO OUT_DIR [more bench arguments...]
# env:   VMBENCH (default target/release/vmbench), GATE_ARGS (e.g. "--threshold 10 --strict"),
#        VMBENCH_AB_TARGET_DIR (a cargo target directory to keep between runs)
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 BASE_REV SCENARIO OUT_DIR [bench arguments...]" >&2
    exit 2
fi
base=$1 scenario=$2 out=$3
shift 3
vmbench=${VMBENCH:-target/release/vmbench}
mkdir -p "$out"
"$vmbench" bench "$scenario" --ab-rev "$base" --out "$out/run" "$@"
set +e
# shellcheck disable=SC2086 # GATE_ARGS is a list of flags
"$vmbench" gate --ab "$out/run/results.json" ${GATE_ARGS:-} --markdown \
    --junit "$out/junit.xml" --bencher "$out/bencher.json" \
    --github-benchmark "$out/benchmark" > "$out/summary.md"
rc=$?
set -e
cat "$out/summary.md"
exit $rc
