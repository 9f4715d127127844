"""utils.py training: the L1 term, run() on tiny data, determinism and argument checks."""

import math

import pytest
import torch
import torch.nn.functional as F

import utils
from model import Net


def tiny_data(n_train=96, n_test=40, seed=0):
    """Random 'digits' whose label is recoverable from a bright patch's position."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    x = torch.randn(n_train + n_test, 1, 28, 28, generator=g) * 0.3
    for i, label in enumerate(y.tolist()):
        x[i, 0, 2 + 2 * label:6 + 2 * label, 10:18] += 2.0
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


TINY = dict(batch_size=32, eval_batch_size=16)


def test_l1_changes_the_gradient_by_exactly_lambda_sign_w():
    torch.manual_seed(0)
    model = Net("B")
    x, y, _, _ = tiny_data(8, 0)
    lam = 0.01

    def gradients(l1_lambda):
        model.zero_grad()
        objective, _ = utils.training_loss(model, model(x), y, l1_lambda)
        objective.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    without, with_l1 = gradients(0.0), gradients(lam)
    for name, p in model.named_parameters():
        difference = with_l1[name] - without[name]
        is_conv_weight = name.endswith("weight") and p.dim() == 4
        expected = lam * torch.sign(p.detach()) if is_conv_weight else torch.zeros_like(p)
        assert torch.allclose(difference, expected, atol=1e-6), name


def test_l1_penalty_covers_conv_weights_only():
    model = Net("B")
    expected = sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.isclose(utils.l1_penalty(model), expected)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(5.0)
    assert torch.isclose(utils.l1_penalty(model), expected)


def test_training_loss_is_cross_entropy_of_the_logits():
    logits = torch.randn(6, 10)
    y = torch.randint(0, 10, (6,))
    objective, loss = utils.training_loss(Net("L"), F.log_softmax(logits, 1), y, 0.0)
    assert torch.isclose(loss, F.cross_entropy(logits, y)) and objective is loss


@pytest.mark.parametrize("norm", ["B", "L", "G"])
def test_run_trains_a_few_steps_per_norm(norm):
    model, history = utils.run(norm, epochs=2, data=tiny_data(), progress=False, **TINY)
    assert isinstance(model, Net) and model.norm == norm
    assert set(history) == set(utils.HISTORY_KEYS)
    assert all(len(values) == 2 for values in history.values())
    assert all(math.isfinite(v) for values in history.values() for v in values)
    assert all(0 <= a <= 100 for a in history["train_accuracy"] + history["test_accuracy"])
    assert not model.training  # left in eval mode by the last evaluation


def test_run_learns_the_tiny_task():
    _, history = utils.run("B", epochs=6, data=tiny_data(320, 80), progress=False, rotation=0.0,
                           translation=0.0, **TINY)  # the label is the patch position: no shifts
    assert history["test_accuracy"][-1] > 50  # chance is 10%
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_same_seed_gives_identical_histories_on_cpu():
    def once(seed):
        _, history = utils.run("G", epochs=2, seed=seed, data=tiny_data(), progress=False, **TINY)
        return {k: v for k, v in history.items() if k != "seconds"}

    assert once(3) == once(3)
    assert once(3) != once(4)


def test_run_loads_tiny_mnist_from_root(tmp_path, monkeypatch):
    from test_data import tiny_pickle  # noqa: E402 (shared tiny-file helper)
    import hashlib

    files = utils.idx_files_from_pickle(tiny_pickle(40, 10, 20))
    monkeypatch.setattr(utils, "MNIST_MD5", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, content in files.items():
        (raw / name).write_bytes(content)
    _, history = utils.run("L", epochs=1, root=str(tmp_path), train_limit=30, test_limit=12,
                           device="cpu", progress=False, **TINY)
    assert len(history["test_accuracy"]) == 1


def test_evaluate_sums_the_loss_over_the_set_and_leaves_bn_stats_alone():
    torch.manual_seed(0)
    model = Net("B")
    _, _, x, y = tiny_data()
    batch_norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    running_mean = batch_norm.running_mean.clone()
    loss, accuracy = utils.evaluate(model, x, y, batch_size=7)
    model.eval()
    with torch.no_grad():
        log_probs = model(x)
    assert math.isclose(loss, F.nll_loss(log_probs, y).item(), rel_tol=1e-5)
    assert math.isclose(accuracy, 100 * (log_probs.argmax(1) == y).float().mean().item(), rel_tol=1e-6)
    assert torch.equal(batch_norm.running_mean, running_mean)


def test_augment_without_rotation_or_shift_is_the_identity():
    x = tiny_data(8, 0)[0]
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(utils.augment(x, 0.0, 0.0, g), x, atol=1e-5)
    moved = utils.augment(x, 7.0, 0.1, g)
    assert moved.shape == x.shape and not torch.allclose(moved, x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(norm="X"), "norm"),
    (dict(epochs=0), "epochs"),
    (dict(epochs=2.5), "epochs"),
    (dict(l1_lambda=-1e-5), "l1_lambda"),
    (dict(groups=3), "groups"),
    (dict(batch_size=0), "batch_size"),
    (dict(optimizer="adam"), "optimizer"),
    (dict(learning_rate=0.1), "unknown hyperparameter"),
    (dict(bf16="yes"), "bf16"),
    (dict(seed="a"), "seed"),
    (dict(train_limit=0), "train_limit"),
    (dict(test_limit=-5), "test_limit"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, match):
    arguments = {**dict(norm="B", epochs=1, data=tiny_data(), progress=False), **kwargs}
    with pytest.raises(ValueError, match=match):
        utils.run(**arguments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_raises():
    with pytest.raises(ValueError, match="device='cuda'.*no CUDA GPU"):
        utils.run("B", epochs=1, device="cuda", data=tiny_data(), progress=False)
