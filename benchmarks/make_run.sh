#!/usr/bin/env bash
# Time `make run` with an empty runs/ (every variant trains) in fresh clones of two commits, alternating
# after, before, after, before, and write what it measured to benchmarks/make_run.txt (only if all went
# well; the file is left as it was otherwise):
#
#   bash benchmarks/make_run.sh BEFORE_COMMIT AFTER_COMMIT
#
# Run it with nothing else loading the machine. The repository's .venv and data/ are linked into each
# clone, so nothing is installed or fetched and only make run is timed. It exits 1 if any make run
# fails or the histories differ (every column but seconds).
set -euo pipefail
fail() { echo "make_run.sh: $*" >&2; exit 1; }
cd "$(git rev-parse --show-toplevel)"
[ $# -eq 2 ] || fail "usage: bash benchmarks/make_run.sh BEFORE_COMMIT AFTER_COMMIT"
before=$(git rev-parse --short "$1^{commit}") || fail "$1 is not a commit here"
after=$(git rev-parse --short "$2^{commit}") || fail "$2 is not a commit here"
[ -f .venv/.run-installed ] && [ -d data/MNIST ] || fail "needs .venv and data/MNIST in $PWD: run make run here once"
PY="$PWD/.venv/bin/python"
work=$(mktemp -d) || fail "cannot make a temporary folder"
trap 'rm -rf "$work"' EXIT
names=(after1 before1 after2 before2)
{
    echo "# time make run in fresh clones (git clone; .venv and data/ linked in, so nothing is installed or fetched;"
    echo "# runs/ empty, so all 3 variants train), alternating, on $("$PY" -c 'import files, torch; print(files.device_name(torch.device("cpu")))'), $(date -u +%F) UTC"
    echo "# before: commit $before; after: commit $after"
} > "$work/make_run.txt"
for name in "${names[@]}"; do
    commit=$after
    if [[ $name == before* ]]; then commit=$before; fi
    git clone -q . "$work/$name" || fail "git clone into $work/$name failed"
    git -C "$work/$name" checkout -q "$commit" || fail "checkout of $commit failed"
    ln -s "$PWD/.venv" "$work/$name/.venv"
    ln -s "$PWD/data" "$work/$name/data"
    rm -f "$work/$name/Images/notebook/history.csv"  # so that only what this make run writes is compared
    touch .venv/.run-installed  # newer than the clone's requirements.txt: make installs nothing
    start=$("$PY" -c 'import time; print(time.time())')
    if ! (cd "$work/$name" && make run > make.log 2>&1); then
        tail "$work/$name/make.log" >&2
        fail "$name (commit $commit): make run failed, its log's end is above"
    fi
    echo "$name: commit $commit, ended $(date -u +%T) UTC, real $("$PY" -c "import time; print(f'{time.time() - $start:.1f}')") s" \
        >> "$work/make_run.txt"
done
"$PY" - "$work" "${names[@]}" >> "$work/make_run.txt" <<'PYTHON' || { cat "$work/make_run.txt" >&2; fail "the histories differ (above)"; }
import sys
import utils
work, names = sys.argv[1], sys.argv[2:]
runs = {name: {norm: history for norm, by_seed in utils.load_histories(f"{work}/{name}/Images/notebook/history.csv").items()
               for history in by_seed.values()} for name in names}  # the notebook's one seed per norm
print("# each run's training seconds (history.csv, sum over epochs), B / L / G:")
for name in names:
    print(f"{name}: " + " / ".join(f"{sum(runs[name][norm]['seconds']):.0f}" for norm in "BLG"))
digits = {name: {norm: {k: v for k, v in h.items() if k != "seconds"} for norm, h in runs[name].items()} for name in names}
differ = [name for name in names if digits[name] != digits[names[0]]]
print(f"# the {len(names)} histories, every column but seconds, identical to every digit: {not differ}")
sys.exit(f"differ from {names[0]}'s: {', '.join(differ)}" if differ else 0)
PYTHON
mv "$work/make_run.txt" benchmarks/make_run.txt
cat benchmarks/make_run.txt
