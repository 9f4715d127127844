"""Net.fused() (BatchNorm folded into the convolution before it) and the inference benchmark on tiny inputs."""

import pytest
import torch
from torch import nn

import utils
from benchmarks import inference
from model import Net, state_digest


def with_statistics(norm, **options):
    """A Net whose norms are not the identity: scales and shifts moved off 1 and 0 and, for
    BatchNorm, running statistics gathered by a few training-mode passes; returned in eval mode."""
    generator = torch.Generator().manual_seed(0)
    net = utils.RunConfig(norm=norm, **options).net()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(module.bias.shape, generator=generator) - 0.5)
        net.train()
        for _ in range(3):
            net(torch.randn(16, 1, 28, 28, generator=generator) * 2 + 0.5)
    return net.eval()


@pytest.mark.parametrize("options", [{}, {"norm_batch": 4}], ids=["BatchNorm", "ghost batches of 4"])
def test_folded_batchnorm_computes_what_the_unfolded_network_does(options):
    net = with_statistics("B", **options)
    first = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.allclose(first.running_mean, torch.zeros(14))  # statistics that fold into something
    fused = net.fused()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert all(m.bias is not None for m in fused.features.modules() if isinstance(m, nn.Conv2d))
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm", ["L", "G"])
def test_layernorm_and_groupnorm_come_back_unchanged_in_eval_mode(norm):
    net = with_statistics(norm).train()
    fused = net.fused()
    assert fused is not net and not fused.training and net.training
    assert state_digest(fused.state_dict()) == state_digest(net.state_dict())
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(fused(x), net(x))


def test_fusing_leaves_the_original_and_the_global_random_state_alone():
    net = with_statistics("B").train()
    digest, rng = state_digest(net.state_dict()), torch.get_rng_state()
    fused = net.fused()
    assert torch.equal(torch.get_rng_state(), rng)
    assert state_digest(net.state_dict()) == digest and net.training and not fused.training
    assert isinstance(net.features[1][1], nn.BatchNorm2d) and net.features[1][0].bias is None


@pytest.mark.integration
def test_the_committed_batchnorm_net_folded_scores_its_recorded_accuracy():
    net = Net.pretrained("B")
    _, _, test_x, test_y = utils.load_tensors("data")
    log_probs, folded = utils.predict(net, test_x), utils.predict(net.fused(), test_x)
    assert (log_probs.argmax(1) != folded.argmax(1)).sum() <= 1
    accuracy = 100.0 * (folded.argmax(1) == test_y).sum().item() / len(test_y)
    assert abs(accuracy - net.info["test_accuracy"]) <= 100 / len(test_y) + 1e-9
    torch.testing.assert_close(folded, log_probs, atol=1e-5, rtol=1e-6)


def test_the_benchmark_times_every_network_and_form_and_prints_the_ratio(capsys):
    inference.main(["--quick"])
    out = capsys.readouterr().out
    for label in inference.NETWORKS:
        assert any(line.startswith(label + " ") for line in out.splitlines()), label
    assert "TorchScript" in out and out.rstrip().splitlines()[-1].startswith("folded BatchNorm over LayerNorm and over GroupNorm: eager latency ")
