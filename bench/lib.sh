# Shared by the bench scripts (sourced): builds the release binary into $S and the shared
# 2 GB dataset into $W/ds once (kept across runs; `.complete` marks a whole one).
# Needs $here (the checkout) and $W (the work folder).
(cd "$here" && cargo build --release --locked -q)
S="$here/target/release/steward"
mkdir -p "$W"
if [ ! -f "$W/ds/.complete" ]; then
  rm -rf "$W/ds"
  python3 "$here/../shared/bench/make_dataset.py" "$W/ds" --mb 2048 >&2
  touch "$W/ds/.complete"
fi
