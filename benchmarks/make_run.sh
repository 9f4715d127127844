#!/usr/bin/env bash
# Time `make run` with an empty runs/ (every variant trains) in fresh clones of two commits, alternating
# after, before, after, before, and print what it measured (benchmarks/make_run.txt):
#
#   bash benchmarks/make_run.sh BEFORE_COMMIT AFTER_COMMIT > benchmarks/make_run.txt
#
# Run it from the repository root with nothing else loading the machine. The root's .venv and data/
# are linked into each clone, so nothing is installed or fetched and only make run is timed.
set -euo pipefail
usage="usage: bash benchmarks/make_run.sh BEFORE_COMMIT AFTER_COMMIT (from the repository root)"
before=$(git rev-parse --short "${1:?$usage}^{commit}") && after=$(git rev-parse --short "${2:?$usage}^{commit}")
if [ ! -f .venv/.run-installed ] || [ ! -d data/MNIST ]; then
    echo "make_run.sh needs .venv and data/MNIST in $PWD: run make run (or make test) here once" >&2; exit 1
fi
PY="$PWD/.venv/bin/python"
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT
echo "# time make run in fresh clones (git clone; .venv and data/ linked in, so nothing is installed or fetched;"
echo "# runs/ empty, so all 3 variants train), alternating, on $("$PY" -c 'import files, torch; print(files.device_name(torch.device("cpu")))'), $(date -u +%F) UTC"
echo "# before: commit $before; after: commit $after"
names=(after1 before1 after2 before2)
for name in "${names[@]}"; do
    commit=$after && [[ $name == before* ]] && commit=$before
    git clone -q . "$work/$name" && git -C "$work/$name" checkout -q "$commit"
    ln -s "$PWD/.venv" "$work/$name/.venv" && ln -s "$PWD/data" "$work/$name/data"
    touch .venv/.run-installed  # newer than the clone's requirements.txt: make installs nothing
    start=$("$PY" -c 'import time; print(time.time())')
    (cd "$work/$name" && make run > make.log 2>&1) || { tail "$work/$name/make.log" >&2; echo "$name: make run failed" >&2; exit 1; }
    echo "$name: commit $commit, ended $(date -u +%T) UTC, real $("$PY" -c "import time; print(f'{time.time() - $start:.1f}')") s"
done
echo "# each run's training seconds (history.csv, sum over epochs), B / L / G:"
"$PY" - "$work" "${names[@]}" <<'PYTHON'
import csv, sys
work, names = sys.argv[1], sys.argv[2:]
rows = {name: list(csv.DictReader(open(f"{work}/{name}/Images/notebook/history.csv"))) for name in names}
for name in names:
    print(f"{name}: " + " / ".join(f"{sum(float(r['seconds']) for r in rows[name] if r['norm'] == n):.0f}" for n in "BLG"))
same = len({str([{k: v for k, v in r.items() if k != "seconds"} for r in rows[name]]) for name in names}) == 1
print(f"# the {len(names)} histories, every column but seconds, identical to every digit: {same}")
PYTHON
