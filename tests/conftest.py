"""Shared fixtures: tiny synthetic data made by the tests themselves, so they run in seconds."""

import gzip
import hashlib
import pickle

import numpy as np
import pytest

import data


def make_tiny_data(n_train=96, n_test=40, seed=0):
    """Random 'digits' whose label is a bright patch's position (data.synthetic)."""
    return data.synthetic(n_train, n_test, seed)


def make_tiny_pickle(n_train=3, n_valid=2, n_test=2, seed=0):
    """A mnist.pkl.gz in the real format: float32 k/256, ((train), (valid), (test))."""
    rng = np.random.default_rng(seed)

    def part(n):
        x = (rng.integers(0, 256, (n, 784)) / 256).astype(np.float32)
        return x, rng.integers(0, 10, n).astype(np.int64)

    return gzip.compress(pickle.dumps((part(n_train), part(n_valid), part(n_test)), protocol=2))


@pytest.fixture(scope="session")
def make_data():
    """make_tiny_data, for tests that need data of their own size."""
    return make_tiny_data


@pytest.fixture(scope="session")
def make_pickle():
    """make_tiny_pickle, for tests that need a pickle of their own size."""
    return make_tiny_pickle


@pytest.fixture
def tiny_mnist(monkeypatch):
    """Tiny raw IDX files (5 training, 2 test images) with their MD5s installed as the expected ones."""
    files = data.idx_files_from_pickle(make_tiny_pickle())
    monkeypatch.setattr(data, "MNIST_MD5", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    return files


@pytest.fixture
def tiny_mnist_root(tmp_path, monkeypatch):
    """A data root holding tiny raw files (40 + 10 training, 20 test images) that verify."""
    files = data.idx_files_from_pickle(make_tiny_pickle(40, 10, 20))
    monkeypatch.setattr(data, "MNIST_MD5", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, content in files.items():
        (raw / name).write_bytes(content)
    return tmp_path
