#!/usr/bin/env bash
# Reproduce disentanglement_lib's unsupervised study on dSprites (Locatello et al. 2019, "Challenging
# Common Assumptions in the Unsupervised Learning of Disentangled Representations", ICML; protocol
# google-research/disentanglement_lib config/unsupervised_study_v1): 6 objectives x 6 strengths x
# 50 seeds of 300,000 steps, every run scored, then the study report.
#
# Before it starts, it prints an estimate of the duration on the device it finds (`vaelab study
# --estimate`: a timed burst of steps per objective, its runs vmapped as the study trains them, and one
# timed scoring, multiplied out). Run it again to continue a stopped study: trained runs are kept, a
# stopped run resumes from its newest checkpoint, scored runs are not scored again.
#
#   DSPRITES=/path/to/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz bash scripts/reproduce_dsprites_study.sh
#
# Settings (environment):
#   DSPRITES   the official dSprites npz (default: vaelab's data directory, `vaelab data fetch dsprites`)
#   SEEDS      how many seeds per setting (default: all 50 of the protocol; SEEDS=5 runs seeds 0..4)
#   MODELS     comma-separated objectives (default: all six: betavae,factorvae,dipvae1,dipvae2,btcvae,annealedvae)
#   STEPS      steps per run (default: the protocol's 300,000), or SCALE=F for F x 300,000
#   OUT        the study folder (default: runs/unsupervised_study_v1)
#   ESTIMATE_ONLY=1   print the estimate and stop;  NO_ESTIMATE=1   skip it
#   EXTRA      more `vaelab study` options, e.g. EXTRA="--backend ray --ray-address auto"
set -euo pipefail
cd "$(dirname "$0")/.."
VAELAB="${VAELAB:-vaelab}"
if ! command -v "$VAELAB" >/dev/null 2>&1; then
  VAELAB="${PYTHON:-python3} -m vaelab"
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi

args=(study unsupervised_study_v1 --out "${OUT:-runs/unsupervised_study_v1}")
if [[ -n "${SEEDS:-}" ]]; then
  seeds=(); for ((i = 0; i < SEEDS; i++)); do seeds+=("$i"); done
  args+=(--seeds "$(IFS=,; echo "${seeds[*]}")")
fi
[[ -n "${MODELS:-}" ]] && args+=(--models "$MODELS")
[[ -n "${STEPS:-}" ]] && args+=(--steps "$STEPS")
[[ -n "${SCALE:-}" ]] && args+=(--scale "$SCALE")
[[ -n "${DSPRITES:-}" ]] && args+=(--set "data.root=$DSPRITES")
# shellcheck disable=SC2206
extra=(${EXTRA:-})

echo "vaelab ${args[*]} ${extra[*]}"
if [[ -z "${NO_ESTIMATE:-}" ]]; then
  # the estimate measures this machine: no --backend ray here
  $VAELAB "${args[@]}" --estimate
fi
if [[ -n "${ESTIMATE_ONLY:-}" ]]; then
  exit 0
fi
$VAELAB "${args[@]}" "${extra[@]}"
