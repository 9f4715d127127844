"""Many runs as one network (grouped.py) computes what the runs apart compute, on tiny data on the
CPU: the grouped network's outputs and gradients, a grouped training run's histories against
utils.run's, the weights split back into plain Nets, the precomputed OneCycle schedule;
CapturedStep's bookkeeping against a stand-in for CUDA graphs; on a GPU (skipped elsewhere) the
whole step replayed from CUDA graphs against the same step run eagerly; and benchmarks/gpu.py's
logic in its tiny CPU mode."""

import contextlib
import re

import pytest
import torch

import grouped
import utils
from benchmarks import gpu
from config import RunConfig
from cuda_graph import CapturedStep, OneCycleTables, one_cycle_tables
from model import Net

SEEDS = [1, 2, 3]
VARIANTS = [dict(norm="B"), dict(norm="L"), dict(norm="G", groups=7), dict(norm="B", norm_batch=8)]
# 2 epochs, the second unaugmented; 88 images in batches of 32 end each epoch on a partial batch of 24
SETTINGS = dict(epochs=2, clean_epochs=1, batch_size=32, eval_batch_size=64)
# Grouped and apart differ by float32 rounding only: the grouped convolutions and reductions add in
# another order (1e-7 relative in one forward pass) and the learning rate and beta1 are device tensors;
# over these 6 steps the histories' losses were seen to differ by at most 2.5e-7 relative. A real
# difference moves them far more: dropping BatchNorm's L1 term 6e-6, 1% more max_lr 6e-4, another seed's
# stream or an augmented last epoch 1e-2 or more. Accuracies may differ by one image at most.
RELATIVE = 2e-6
IMAGES = {"train_accuracy": 88, "test_accuracy": 40}


def close(key, a, b, relative=RELATIVE):
    """Whether history values a and b agree: accuracies to one image, the rest relatively."""
    return abs(a - b) <= (100 / IMAGES[key] + 1e-9 if key in IMAGES else relative * abs(a))


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread, as the golden runs: the same kernels for the runs apart and grouped, and quick."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nets_of(variant, seeds=SEEDS):
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(RunConfig(**variant).net())
    return nets


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_the_grouped_network_computes_each_nets_outputs_gradients_and_batch_statistics(variant):
    nets = nets_of(variant)
    net = grouped.GroupedNet(nets)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(20, len(nets), 28, 28, generator=generator)  # run m's batch in channel m
    labels = torch.randint(0, 10, (20, len(nets)), generator=generator)
    log_probs = net(images)  # (20, M, 10)
    objective, losses = grouped.group_loss(net, log_probs, labels, l1_lambda=0.1)  # an L1 term that shows
    objective.backward()
    for m, single in enumerate(nets):
        single_log_probs = single(images[:, m:m + 1])
        single_objective, single_loss = utils.training_loss(single, single_log_probs, labels[:, m], 0.1)
        single_objective.backward()
        torch.testing.assert_close(log_probs[:, m], single_log_probs, atol=1e-6, rtol=0)
        torch.testing.assert_close(losses[m], single_loss, atol=1e-6, rtol=0)
        for (name, param), (_, single_param) in zip(net.named_parameters(), single.named_parameters()):
            torch.testing.assert_close(param.grad.chunk(len(nets))[m], single_param.grad, atol=1e-6, rtol=0, msg=name)
        for key, value in net.split()[m].items():  # the running statistics after one step: each run's own
            torch.testing.assert_close(value, single.state_dict()[key], atol=1e-6, rtol=0, msg=key)


def test_the_split_weights_are_the_nets_own_and_load_into_plain_nets_and_back():
    nets = nets_of(dict(norm="B"))
    net = grouped.GroupedNet(nets)
    for single, state in zip(nets, net.split()):
        plain = Net("B")
        plain.load_state_dict(state)  # strict: every key, every shape
        assert all(torch.equal(value, single.state_dict()[key]) for key, value in plain.state_dict().items())
    other = grouped.GroupedNet(nets_of(dict(norm="B"), seeds=[4, 5, 6]))
    other.load_runs(net.split())
    assert all(torch.equal(value, net.state_dict()[key]) for key, value in other.state_dict().items())


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_a_grouped_run_of_three_seeds_trains_as_the_three_runs_apart(make_data, variant):
    data = make_data(88, 40)
    apart = [utils.run(data=data, device="cpu", progress=False, seed=seed, **variant, **SETTINGS) for seed in SEEDS]
    together = grouped.train_group([RunConfig(seed=seed, **variant, **SETTINGS) for seed in SEEDS], data,
                                   torch.device("cpu"))
    for (model, history), (grouped_model, grouped_history) in zip(apart, together):
        for key in utils.HISTORY_KEYS[:-1]:  # all but seconds
            for a, b in zip(history[key], grouped_history[key], strict=True):
                assert close(key, a, b), (key, a, b)
        assert not grouped_model.training
        for key, value in grouped_model.state_dict().items():  # to a fraction of one AdamW step (lr <= 0.005):
            # a weight whose gradient is near zero moves by an amount that rounding changes (seen: 2e-5)
            torch.testing.assert_close(value, model.state_dict()[key], atol=2e-4, rtol=0, msg=key)


def test_a_run_whose_loss_is_not_finite_comes_back_as_its_error_and_the_others_are_kept(make_data, monkeypatch):
    real, calls, epochs = grouped.group_loss, [], []

    def second_step_nan_for_seed_2(*args):  # as if run 1 diverged at its second step
        objective, losses = real(*args)
        calls.append(1)
        return objective, losses * torch.tensor([1.0, float("nan") if len(calls) == 2 else 1.0, 1.0])

    monkeypatch.setattr(grouped, "group_loss", second_step_nan_for_seed_2)
    results = grouped.train_group([RunConfig(norm="L", seed=seed, **SETTINGS) for seed in SEEDS], make_data(88, 40),
                                  torch.device("cpu"), on_epoch=lambda run, epoch, history: epochs.append((run, epoch)))
    assert isinstance(results[1], utils.TrainingDiverged)
    assert "seed 2: the training loss became NaN or infinite at epoch 1, step 2 of 3;" in str(results[1])
    assert [len(history["test_loss"]) for _, history in (results[0], results[2])] == [2, 2]
    assert epochs == [(0, 1), (2, 1), (0, 2), (2, 2)]


def test_runs_that_learn_nothing_fail_as_they_do_apart(make_data):
    data, settings = make_data(88, 40), dict(SETTINGS, max_lr=10.0)
    apart = []
    for seed in SEEDS:
        with pytest.raises(utils.TrainingDiverged) as error:
            utils.run("B", data=data, device="cpu", progress=False, seed=seed, **settings)
        apart.append(str(error.value))
    together = grouped.train_group([RunConfig(norm="B", seed=seed, **settings) for seed in SEEDS], data, torch.device("cpu"))
    assert [re.sub(r"\d[\d.e+]*", "#", str(e)) for e in together] == [re.sub(r"\d[\d.e+]*", "#", m) for m in apart]


def test_train_group_refuses_configs_that_differ_in_more_than_their_seeds(make_data):
    for configs in ([RunConfig(seed=1), RunConfig(seed=2, max_lr=0.02)], [RunConfig(seed=1), RunConfig(seed=1)], []):
        with pytest.raises(ValueError, match="differ only in their seeds"):
            grouped.train_group(configs, make_data(), torch.device("cpu"))


def test_the_precomputed_schedule_is_onecyclelr_step_by_step():
    config = RunConfig(epochs=3)
    model, optimizer, scheduler, _, _ = utils.setup(config, torch.device("cpu"), steps_per_epoch=7)
    lrs, beta1s = one_cycle_tables(config.max_lr, config.epochs, 7)
    assert len(lrs) == len(beta1s) == 3 * 7 + 1
    tables = OneCycleTables(torch.optim.AdamW(Net().parameters()), config.max_lr, config.epochs, 7)
    group = optimizer.param_groups[0]
    for step in range(3 * 7 + 1):
        assert (group["lr"], group["betas"][0]) == (lrs[step], beta1s[step])  # the same floats, exactly
        if step < 3 * 7:
            tables.apply()
            assert tables.values.tolist() == [lrs[step], beta1s[step]] and int(tables.step) == step + 1
            optimizer.step()
            scheduler.step()
    assert beta1s[0] == 0.95 and 0.85 <= min(beta1s) < 0.851  # OneCycle cycles AdamW's beta1 down and back


class FakeGraph:
    """torch.cuda.CUDAGraph on the CPU: records the one step called under capture, replays it."""
    capturing = None

    def register_generator_state(self, generator):
        self.generators = getattr(self, "generators", []) + [generator]

    def replay(self):
        self.step(*self.args)


@contextlib.contextmanager
def fake_capture(graph):
    FakeGraph.capturing = graph
    try:
        yield
    finally:
        FakeGraph.capturing = None


@pytest.mark.parametrize("capture_fails", [False, True])
def test_captured_step_warms_up_captures_each_kind_once_and_replays_on_a_static_copy(monkeypatch, capsys, capture_fails):
    for name, fake in dict(Stream=FakeGraph, current_stream=FakeGraph, stream=lambda stream: contextlib.nullcontext(),
                           CUDAGraph=FakeGraph, graph=fake_capture, synchronize=lambda: None).items():
        monkeypatch.setattr(torch.cuda, name, fake, raising=False)
    monkeypatch.setattr(FakeGraph, "wait_stream", lambda self, other: None, raising=False)
    ran, generator = [], torch.Generator()

    def step(index, key):
        if capture_fails and FakeGraph.capturing:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        if FakeGraph.capturing:  # recorded, not run
            FakeGraph.capturing.step, FakeGraph.capturing.args = step, (index, key)
        else:
            ran.append((key, index.tolist(), id(index)))

    captured = CapturedStep(step, [generator])
    calls = [(torch.tensor([[i, i + 1]]), True) for i in range(5)] + [(torch.tensor([[9]]), True), (torch.tensor([[7, 8]]), False)]
    for index, key in calls:
        captured(index, key)
    assert [(key, values) for key, values, _ in ran] == [(key, index.tolist()) for index, key in calls]  # all, in order
    if capture_fails:
        assert "CUDA graph capture failed, training eagerly: operation not permitted" in capsys.readouterr().out
        assert not captured.graphs
    else:  # (True, (1, 2)): 3 warm-up calls, then captured and replayed twice from one static index
        assert list(captured.graphs) == [(True, (1, 2))] and captured.graphs[True, (1, 2)][0].generators == [generator]
        assert len({address for _, _, address in ran[3:5]}) == 1 and ran[3][2] not in {ran[0][2], ran[5][2]}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("norm", ["B", "L"])
def test_on_a_gpu_the_whole_step_replayed_from_cuda_graphs_trains_as_it_does_eagerly(make_data, monkeypatch, norm):
    device = torch.device("cuda")
    data = tuple(t.to(device) for t in make_data(88, 40))
    captures = []
    monkeypatch.setattr(CapturedStep, "WARMUP", 1)
    capture = CapturedStep.capture
    monkeypatch.setattr(CapturedStep, "capture", lambda self, *args: captures.append(args[1]) or capture(self, *args))
    settings = dict(SETTINGS, epochs=4)
    eager, graphed = (grouped.train_group([RunConfig(norm=norm, seed=s, cuda_graph=g, **settings) for s in SEEDS],
                                          data, device) for g in (False, True))
    assert sorted(captures) == [False, True, True]  # augmented: full and partial batches; unaugmented: full
    for (_, history), (_, graphed_history) in zip(eager, graphed):
        for key in utils.HISTORY_KEYS[:-1]:
            for a, b in zip(history[key], graphed_history[key], strict=True):
                assert close(key, a, b, relative=1e-4), (key, a, b)  # the same kernels, but cuDNN's may vary


def test_the_gpu_benchmark_runs_end_to_end_in_its_tiny_cpu_mode_and_cuts_a_step_at_its_deadline(tmp_path, capsys):
    gpu.main(["--dry-run", "--out", str(tmp_path)])
    text = (tmp_path / "speed_gpu.txt").read_text()
    for what in ("B: one epoch eager", "whole-step graph", "3 runs grouped", "notebook's three variants",
                 "G: 3 seeds x 2 epochs grouped", "first >= 99.5%", "CPU, committed, 20 seeds", "# done"):
        assert what in text, what
    assert (tmp_path / "seeds" / "history.csv").exists()
    assert str(tmp_path / "speed_gpu.txt") in capsys.readouterr().out
    gpu.main(["--dry-run", "--out", str(tmp_path), "--budget", "0"])
    text = (tmp_path / "speed_gpu.txt").read_text()
    assert "B: eager: cut at its deadline" in text and "notebook L: cut at its deadline" in text and "# done" in text
