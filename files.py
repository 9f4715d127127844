"""Files and records, the machinery below the training code: atomic writes, folders published whole, strict
JSON and CSV, what produced a result, and one process at a time. An interruption never leaves a partial file or
half a folder; readers name the file (and the row) of anything they cannot use, and refuse non-finite numbers.
"""

import contextlib
import csv
import ctypes
import fcntl
import io
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import tempfile

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))


def atomic_write(path, data):
    """Write bytes or str to `path` via a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # .<name>.<pid>.<random>.tmp: whose it is, so that a clean-up can tell an orphan (its process gone)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path, value):
    """Strict JSON (NaN and infinities raise before anything is written), atomically."""
    atomic_write(path, json.dumps(value, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def read_json(path, maker=None):
    """A JSON file's value; a malformed file or a NaN/Infinity in it raises ValueError naming the file and `maker`,
    the command that writes it."""
    def refuse(constant):
        raise ValueError(f"{constant} is not a finite number")

    def finite(text):  # 1e999 parses as inf
        return float(text) if math.isfinite(float(text)) else refuse(text)

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, parse_constant=refuse, parse_float=finite)
    except ValueError as error:
        raise ValueError(f"{path}: {error}; {remedy(maker)}") from None


def write_csv(path, header, rows):
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    atomic_write(path, out.getvalue())


def read_csv(path, maker=None):
    """Rows of a CSV file as dicts with numbers converted; a value that is not a finite number where the column
    holds numbers raises ValueError naming the file, row, column and `maker`."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        for key, value in row.items():
            for kind in (int, float):
                with contextlib.suppress(ValueError, TypeError):
                    row[key] = kind(value)
                    break
            if isinstance(row[key], float) and not math.isfinite(row[key]):
                raise ValueError(f"{path}, line {number}, column {key}: {value!r} is not a finite number; "
                                 f"{remedy(maker)}")
    return rows


def remedy(maker):
    return f"`{maker}` writes it anew" if maker else "restore it with `git checkout`"


def markdown_table(header, rows, align=None):
    """A Markdown table; align is a string of 'l'/'r' per column (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]) + "\n"


# ---------------------------------------------------------------------------------------
# Folders published whole, and one process at a time
# ---------------------------------------------------------------------------------------

def check_replaceable(folder, owned, what):
    """Raise ValueError unless `folder` is absent or holds only the files named in `owned` (never others')."""
    foreign = sorted(set(os.listdir(folder)) - set(owned)) if os.path.isdir(folder) else []
    if os.path.exists(folder) and not os.path.isdir(folder):
        foreign = [os.path.basename(folder)]
    if foreign:
        raise ValueError(f"{folder} holds files that {what} did not write ({', '.join(foreign[:6])}"
                         f"{', ...' if len(foreign) > 6 else ''}), which replacing it would delete; "
                         f"name a folder of its own (the default is safe)")


def staging_folder(final):
    """A new empty folder beside `final` to fill before publish_folder(); removes leftovers whose process is gone."""
    parent, name = os.path.split(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    _recover(final)
    for entry in os.listdir(parent):
        pid = entry.removeprefix(f".{name}.staging-").split("-")[0]
        if entry.startswith(f".{name}.staging-") and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{name}.staging-{os.getpid()}-")
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700; published, it is a normal folder
    return staging


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def publish_folder(staging, final):
    """Put the folder `staging` in the place of `final` at once, so that `final` holds its previous contents or the
    new ones, whole. Linux exchanges the two atomically (renameat2); elsewhere `final` is renamed aside first, and a
    later call puts it back if an interruption came between the two renames."""
    final = os.path.abspath(final)
    aside = _recover(final)
    if os.path.isdir(final) and _exchange(staging, final):
        shutil.rmtree(staging)  # it now holds the previous contents
        return
    if os.path.isdir(final):
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(final, aside)
    os.rename(staging, final)
    shutil.rmtree(aside, ignore_errors=True)


def _recover(final):
    """Put back `final` if a publish_folder was interrupted between its renames; returns its name set aside."""
    aside = os.path.abspath(final) + ".previous"
    if os.path.isdir(aside) and not os.path.exists(final):
        os.rename(aside, final)
    return aside


def _exchange(a, b):
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0  # AT_FDCWD, RENAME_EXCHANGE
    except (AttributeError, OSError):
        return False


@contextlib.contextmanager
def exclusive(path, what):
    """Hold an exclusive lock on `path` (released when the process ends, however it ends); if
    another process holds it, raise RuntimeError naming `what` and that process."""
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RuntimeError(f"another {what} is in progress (pid {f.read().strip() or '?'}); wait for it to "
                               "finish, then run again") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)


@contextlib.contextmanager
def signals_deferred():
    """Hold back SIGINT and SIGTERM until the block is done, so that its few renames happen together;
    yields the list of the signals that came meanwhile, for the caller to act on after."""
    caught = []
    previous = {s: signal.signal(s, lambda number, _: caught.append(number)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


# ---------------------------------------------------------------------------------------
# Provenance: what produced a set of results
# ---------------------------------------------------------------------------------------

def git_commit():
    """HEAD's commit, marked when .py files have uncommitted changes; SOURCE_COMMIT names it for a copy
    of the tree whose own git is missing or stale (a lent machine's)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    given = os.environ.get("SOURCE_COMMIT")
    if given:
        return f"{given} (given by SOURCE_COMMIT, not checked)"
    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes to .py files)" if git("status", "--porcelain", "--", "*.py") else "")


def run_info(device, **parameters):
    """What produced a set of results: its parameters, the commit, library versions and the machine."""
    import torchvision  # only for its version; importing it costs a second
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    return {"parameters": parameters, "git_commit": git_commit(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "python": platform.python_version(),
            "device": device_name(device), "threads": torch.get_num_threads()}


def short_commit(commit):
    """'31295ad (with uncommitted changes to .py files)' from a run_info commit: short, nothing dropped."""
    hash_, _, rest = commit.partition(" ")
    return f"{hash_[:7]} {rest}".strip()


def device_name(device):
    """The GPU's name, or the CPU's model and core count (timings hold for that machine only)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"CPU: {model}, {os.cpu_count()} cores"
