# Shared by the experiments' sweep.sh scripts (sourced after they set PY, OUT and the array COMMON).
# train <name> <overrides...>: beatgans-train into $OUT/<name>, the overrides first, then "${COMMON[@]}". A run
# that already finished (its metrics.json written) is kept, so an interrupted script can be re-run.
train() {
  local dir=$1; shift
  [ -f "$OUT/$dir/metrics.json" ] && { echo "keeping $OUT/$dir"; return; }
  "$PY" -m beatgans.cli.train "$@" "${COMMON[@]}" hydra.run.dir="$OUT/$dir"
}
