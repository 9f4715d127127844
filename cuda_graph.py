"""The GPU fast paths: training steps replayed from CUDA graphs.

A network of 8,000 parameters is launch-bound on a GPU: eager PyTorch spends longer launching each
step's hundreds of tiny kernels than the GPU spends running them. A CUDA graph replays them with one launch.
- GraphStep (utils.setup): forward, loss and backward in a graph; the optimizer steps outside it.
- CapturedStep and OneCycleTables (grouped.train_group): the whole step in a graph, augmentation and AdamW
  included. A graph freezes Python numbers at capture, so the lr and beta1, which OneCycleLR changes every
  step, are device tensors filled from precomputed tables at a device step counter. The graph captures the
  eager step function, which the CPU, and any step no graph covers, runs as it is.
"""

import collections
import functools

import torch


class GraphStep:
    """step(images, labels): forward_backward replayed from a CUDA graph, then optimizer.step(); the maths
    of `step`, the eager train step, which runs the first WARMUP full batches (on a side stream), batches
    of another size, and all of them if capture fails (said in one line). Captured with .grad unset, so
    that backward writes fresh gradients into the graph's memory on every replay (as zeroing them would)."""

    WARMUP = 3

    def __init__(self, step, forward_backward, optimizer, batch_size):
        self.step, self.forward_backward, self.optimizer = step, forward_backward, optimizer
        self.batch_size = batch_size
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.graph, self.failed, self.full_batches = None, False, 0

    def __call__(self, images, labels):
        if self.failed or len(images) != self.batch_size:
            return self.step(images, labels)
        self.full_batches += 1
        if self.graph is None and self.full_batches <= self.WARMUP:
            return on_side_stream(self.step, images, labels)
        if self.graph is None:
            try:
                self.capture(images, labels)
            except RuntimeError as error:
                self.failed = True
                print(f"CUDA graph capture failed, training eagerly: {str(error).splitlines()[0]}")
                torch.cuda.synchronize()
                return self.step(images, labels)
        self.static_images.copy_(images)
        self.static_labels.copy_(labels)
        self.graph.replay()
        for param, grad in zip(self.params, self.static_grads):
            param.grad = grad  # an eager step in between may have replaced them
        self.optimizer.step()
        return self.static_out

    def capture(self, images, labels):
        """Record forward_backward on static buffers; nothing runs until the first replay."""
        self.static_images, self.static_labels = images.clone(), labels.clone()
        self.optimizer.zero_grad(set_to_none=True)  # so backward allocates grads in the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self.forward_backward(self.static_images, self.static_labels)
        self.static_grads = [param.grad for param in self.params]


def on_side_stream(function, *args):
    """function(*args) on a side stream, as the CUDA graph docs ask of the calls before a capture."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = function(*args)
    torch.cuda.current_stream().wait_stream(side)
    return out


@functools.lru_cache(maxsize=16)  # stepping the scheduler takes a second or two for 20 epochs
def one_cycle_tables(max_lr, epochs, steps_per_epoch):
    """((lr,), (beta1,)) as utils.setup's OneCycleLR sets them: entry k is what step k uses, the last what
    the group holds after the final step. Read off a throwaway scheduler on a one-parameter AdamW."""
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs,
                                                    steps_per_epoch=steps_per_epoch)
    optimizer.step()  # no gradient: changes nothing, but the scheduler warns unless one came first
    group, lrs, beta1s = optimizer.param_groups[0], [], []
    for step in range(epochs * steps_per_epoch + 1):
        lrs.append(group["lr"])
        beta1s.append(group["betas"][0])
        if step < epochs * steps_per_epoch:
            scheduler.step()
    return tuple(lrs), tuple(beta1s)


class OneCycleTables:
    """OneCycleLR for an AdamW whose steps may be graph replays: every param group's lr and beta1 are views
    of one float64 device tensor (as precise as the Python numbers), which apply() fills from the tables at
    the device step counter. .lrs and .beta1s keep the Python tables (lr after epoch e: lrs[e * steps_per_epoch])."""

    def __init__(self, optimizer, max_lr, epochs, steps_per_epoch):
        self.lrs, self.beta1s = one_cycle_tables(max_lr, epochs, steps_per_epoch)
        device = optimizer.param_groups[0]["params"][0].device
        self.tables = torch.tensor([self.lrs, self.beta1s], dtype=torch.float64, device=device)  # (2, steps + 1)
        self.values = self.tables[:, 0].clone()  # (2,): this step's lr and beta1
        self.step = torch.zeros(1, dtype=torch.long, device=device)  # steps taken
        for group in optimizer.param_groups:  # after the constructor, which wants both betas alike
            group["lr"], group["betas"] = self.values[0], (self.values[1], group["betas"][1])

    def apply(self):
        """Set the lr and beta1 of the step about to be taken, and count it: device ops only."""
        self.values.copy_(self.tables.index_select(1, self.step).view(2))
        self.step += 1


class CapturedStep:
    """step(index, key), a whole training step, replayed from a CUDA graph per key and shape of `index`:
    `step` reads all else from tensors it updates in place and draws from `generators`, which each graph
    registers, so that replay i draws what eager call i would. Each (key, shape) runs WARMUP times eagerly
    on a side stream, then is captured on a static copy of `index`; if capture fails, it says so and stays eager."""

    WARMUP = 3

    def __init__(self, step, generators):
        self.step, self.generators = step, generators
        self.graphs, self.calls, self.failed = {}, collections.Counter(), False

    def __call__(self, index, key):
        kind = (key, tuple(index.shape))
        self.calls[kind] += 1
        if self.failed:
            return self.step(index, key)
        if kind not in self.graphs and self.calls[kind] <= self.WARMUP:
            return on_side_stream(self.step, index, key)
        if kind not in self.graphs:
            try:
                self.graphs[kind] = self.capture(index, key)
            except (RuntimeError, AttributeError) as error:  # AttributeError: a torch without generator registration
                self.failed = True
                print(f"CUDA graph capture failed, training eagerly: {str(error).splitlines()[0]}")
                torch.cuda.synchronize()
                return self.step(index, key)
        graph, static_index = self.graphs[kind]
        static_index.copy_(index)
        graph.replay()

    def capture(self, index, key):
        """(graph, its static index) of step(index, key); the graph's memory pool is its own."""
        graph, static_index = torch.cuda.CUDAGraph(), index.clone()
        for generator in self.generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            self.step(static_index, key)
        return graph, static_index
