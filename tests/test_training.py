"""utils.py training: the run configuration, the L1 term, run() on tiny data, determinism."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import utils
from model import Net

TINY = dict(batch_size=32, eval_batch_size=16)


def test_l1_changes_the_gradient_by_exactly_lambda_sign_w(make_data):
    torch.manual_seed(0)
    model = Net("B")
    x, y, _, _ = make_data(8, 0)
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


def test_config_defaults_are_the_recipe_and_resolve_per_variant():
    b, l, g = (utils.RunConfig(norm=n) for n in ("bn", "LayerNorm", "g"))
    assert (b.norm, l.norm, g.norm) == ("B", "L", "G")
    assert b.l1_lambda == 1e-5 and l.l1_lambda == 0 and g.l1_lambda == 0  # λ for BatchNorm only
    assert (b.groups, l.groups, g.groups) == (None, None, 2)
    assert b.label == "BatchNorm + L1 (λ=1e-05)" and l.label == "LayerNorm"
    assert utils.RunConfig(norm="G", groups=7).label == "GroupNorm (7 groups)"
    assert utils.RunConfig(norm="B", l1_lambda=0.0).label == "BatchNorm"
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.seed = 2


@pytest.mark.parametrize("norm", ["B", "L", "G"])
def test_run_trains_a_few_steps_per_norm(make_data, norm):
    model, history = utils.run(norm, epochs=2, data=make_data(), progress=False, **TINY)
    assert isinstance(model, Net) and model.norm == norm
    assert set(history) == set(utils.HISTORY_KEYS)
    assert all(len(values) == 2 for values in history.values())
    assert all(math.isfinite(v) for values in history.values() for v in values)
    assert all(0 <= a <= 100 for a in history["train_accuracy"] + history["test_accuracy"])
    assert not model.training  # left in eval mode by the last evaluation


def test_run_learns_the_tiny_task(make_data):
    _, history = utils.run("B", epochs=6, data=make_data(320, 80), progress=False, rotation=0.0,
                           translation=0.0, elastic=0.0, **TINY)  # the label is the patch position: no shifts
    assert history["test_accuracy"][-1] > 50  # chance is 10%
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_clean_epochs_train_the_last_epochs_on_the_images_as_they_are(make_data, monkeypatch):
    augment, calls = utils.augment, []

    def counting(x, *args, **kwargs):
        calls.append(len(x))
        return augment(x, *args, **kwargs)

    monkeypatch.setattr(utils, "augment", counting)
    utils.run("L", epochs=3, clean_epochs=2, data=make_data(64, 16), progress=False, **TINY)
    assert sum(calls) == 64  # the first epoch only
    calls.clear()
    utils.run("L", epochs=3, data=make_data(64, 16), progress=False, **TINY)
    assert sum(calls) == 3 * 64  # by default none of 3 epochs: 3 per 20, rounded down


def test_clean_epochs_default_to_3_per_20_epochs_rounded_down():
    assert [utils.RunConfig(epochs=e).clean_epochs for e in (1, 6, 7, 13, 14, 20, 40)] == [0, 0, 1, 1, 2, 3, 6]
    assert utils.RunConfig(epochs=20, clean_epochs=0).clean_epochs == 0  # an explicit value stays


def test_same_seed_gives_identical_histories_on_cpu(make_data):
    def once(seed):
        _, history = utils.run("G", epochs=2, seed=seed, data=make_data(), progress=False, **TINY)
        return {k: v for k, v in history.items() if k != "seconds"}

    assert once(3) == once(3)
    assert once(3) != once(4)


def test_run_loads_tiny_mnist_from_root(tiny_mnist_root):
    _, history = utils.run("L", epochs=1, root=str(tiny_mnist_root), train_limit=30, test_limit=12,
                           device="cpu", progress=False, **TINY)
    assert len(history["test_accuracy"]) == 1


def test_run_data_applies_limits_and_the_validation_split(tiny_mnist_root, monkeypatch):
    import data

    monkeypatch.setattr(data, "VALIDATION_IMAGES", 10)  # the tiny root has 50 training images
    config = utils.RunConfig(validation=True, train_limit=30)
    train_x, _, test_x, _ = utils.run_data(config, torch.device("cpu"), str(tiny_mnist_root))
    all_train_x = data.load_tensors(str(tiny_mnist_root))[0]
    assert torch.equal(train_x, all_train_x[:30]) and torch.equal(test_x, all_train_x[40:])


def test_evaluate_sums_the_loss_over_the_set_and_leaves_bn_stats_alone(make_data):
    torch.manual_seed(0)
    model = Net("B")
    _, _, x, y = make_data()
    batch_norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    running_mean = batch_norm.running_mean.clone()
    loss, accuracy = utils.evaluate(model, x, y, batch_size=7)
    model.eval()
    with torch.no_grad():
        log_probs = model(x)
    assert math.isclose(loss, F.nll_loss(log_probs, y).item(), rel_tol=1e-5)
    assert math.isclose(accuracy, 100 * (log_probs.argmax(1) == y).float().mean().item(), rel_tol=1e-6)
    assert torch.equal(batch_norm.running_mean, running_mean)


def test_augment_without_rotation_or_shift_is_the_identity(make_data):
    x = make_data(8, 0)[0]
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(utils.augment(x, 0.0, 0.0, g), x, atol=1e-5)
    moved = utils.augment(x, 7.0, 0.1, g)
    assert moved.shape == x.shape and not torch.allclose(moved, x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(norm="X"), "norm"),
    (dict(epochs=0), "epochs"),
    (dict(epochs=2.5), "epochs"),
    (dict(epochs=True), "epochs"),
    (dict(l1_lambda=-1e-5), "l1_lambda"),
    (dict(norm="G", groups=3), "groups"),
    (dict(norm="B", groups=2), "groups.*GroupNorm"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=True), "batch_size"),
    (dict(max_lr=True), "max_lr"),
    (dict(max_lr=1e3), "max_lr"),
    (dict(max_lr=float("nan")), "max_lr"),
    (dict(rotation=1e9), "rotation"),
    (dict(weight_decay=1e6), "weight_decay"),
    (dict(optimizer="adam"), "unknown setting.*optimizer"),
    (dict(learning_rate=0.1), "unknown setting.*learning_rate"),
    (dict(seed="a"), "seed"),
    (dict(seed=2**70), "seed"),
    (dict(seed=-1), "seed"),
    (dict(validation="yes"), "validation"),
    (dict(clean_epochs=2), "clean_epochs"),  # more than the run's one epoch
    (dict(train_limit=60_001), "train_limit"),
    (dict(test_limit=20_000), "test_limit.*10,000"),  # the test set has 10,000 images
])
def test_bad_arguments_raise_naming_the_argument(make_data, kwargs, match):
    arguments = {**dict(norm="B", epochs=1, data=make_data(), progress=False), **kwargs}
    if "train_limit" in kwargs or "test_limit" in kwargs:
        arguments.pop("data")  # checked before any data is loaded
    with pytest.raises(ValueError, match=match):
        utils.run(**arguments)


def test_validation_limits_follow_the_split():
    with pytest.raises(ValueError, match="train_limit=60000 must be an integer from 1 to 50,000"):
        utils.RunConfig(train_limit=60_000, validation=True)
    assert utils.RunConfig(train_limit=50_000, test_limit=10_000, validation=True).test_limit == 10_000


def test_a_run_that_learns_nothing_is_named_with_its_epoch():
    history = {key: [] for key in utils.HISTORY_KEYS}

    def epoch(train_loss, train_accuracy, test_loss):
        for key, value in zip(("train_loss", "train_accuracy", "test_loss"), (train_loss, train_accuracy, test_loss)):
            history[key].append(value)

    epoch(2.1, 25.0, 2.0)
    assert utils.learning_failure(history, 1, 469) is None
    epoch(2.3, 11.0, 2.3)  # at chance in the second epoch, past 200 steps
    assert "training accuracy was 11.0% in epoch 2, at chance" in utils.learning_failure(history, 2, 938)
    assert utils.learning_failure(history, 2, 6) is None  # a tiny run is not judged on its accuracy
    epoch(2.0, 60.0, 956.0)
    assert "test loss was 956 after epoch 3" in utils.learning_failure(history, 3, 1407)
    epoch(2.0, 60.0, float("nan"))
    assert "test loss was nan" in utils.learning_failure(history, 4, 1876)


@pytest.mark.parametrize("conflict", [dict(train_limit=10), dict(test_limit=5), dict(validation=True)])
def test_limits_or_validation_with_data_are_refused(make_data, conflict):
    with pytest.raises(ValueError, match=f"{next(iter(conflict))}.*data="):
        utils.run("B", epochs=1, data=make_data(), progress=False, **conflict)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_raises(make_data):
    with pytest.raises(ValueError, match="device='cuda'.*no CUDA GPU"):
        utils.run("B", epochs=1, device="cuda", data=make_data(), progress=False)


def test_blur_is_a_zero_padded_gaussian_convolution():
    x = torch.rand(3, 1, 12, 10)
    sigma, radius = 1.5, 5
    kernel = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    expected = F.conv2d(F.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, radius)),
                        kernel.view(1, 1, -1, 1), padding=(radius, 0))
    assert torch.allclose(utils.blur(x, sigma), expected, atol=1e-6)


def test_elastic_moves_pixels_only_when_asked(make_data):
    x = make_data(8, 0)[0]
    identity = utils.augment(x, 0.0, 0.0, torch.Generator().manual_seed(0), elastic=0.0)
    assert torch.allclose(identity, x, atol=1e-5)
    moved = utils.augment(x, 0.0, 0.0, torch.Generator().manual_seed(0), elastic=20.0)
    assert not torch.allclose(moved, x, atol=1e-3)
    again = utils.augment(x, 0.0, 0.0, torch.Generator().manual_seed(0), elastic=20.0)
    assert torch.equal(moved, again)  # seeded: the same distortion
