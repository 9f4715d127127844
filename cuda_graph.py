"""The GPU fast path: one training step, captured in a CUDA graph and replayed.

A network of 8,000 parameters is launch-bound on a GPU: each step is hundreds of tiny kernels,
and eager PyTorch spends longer launching them than the GPU spends running them. A CUDA graph
records the whole step once (forward, loss with L1, backward, optimizer step) and replays it
with one launch. The captured function is the eager step itself, so there is one maths path.
"""

import torch


class GraphStep:
    """step(images, labels), replayed from a CUDA graph.

    The first WARMUP full batches run eagerly on a side stream (as the CUDA graph docs ask);
    then the step is captured once, and each later full batch is copied into static buffers
    and replayed. Batches of another size (the last of an epoch) run eagerly. If capture
    fails, it says so in one line and stays eager. The optimizer must keep its state on the
    device (AdamW(capturable=True)) and its learning rate in a tensor the scheduler updates
    in place, since a graph replays fixed memory.
    """

    WARMUP = 3

    def __init__(self, step, optimizer, batch_size):
        self.step, self.optimizer, self.batch_size = step, optimizer, batch_size
        self.graph, self.failed, self.calls = None, False, 0

    def __call__(self, images, labels):
        self.calls += 1
        if self.failed or len(images) != self.batch_size:
            return self.step(images, labels)
        if self.graph is None and self.calls <= self.WARMUP:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(images, labels)
            torch.cuda.current_stream().wait_stream(side)
            return out
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
        return self.static_out

    def capture(self, images, labels):
        """Record the step on static buffers; nothing runs until the first replay."""
        self.static_images, self.static_labels = images.clone(), labels.clone()
        self.optimizer.zero_grad(set_to_none=True)  # so backward allocates grads in the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self.step(self.static_images, self.static_labels)
