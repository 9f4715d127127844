"""The GPU fast path: a training step's forward and backward, captured in a CUDA graph.

A network of 8,000 parameters is launch-bound on a GPU: each step is hundreds of tiny kernels,
and eager PyTorch spends longer launching them than the GPU spends running them. A CUDA graph
records the forward pass, the loss with its L1 term and the backward pass once and replays
them with one launch. The optimizer step then runs as in the eager step (a fused AdamW is one
kernel), outside the graph, because OneCycleLR changes the learning rate and AdamW's beta1
between steps as Python numbers, which a graph would freeze at their values at capture.
"""

import torch


class GraphStep:
    """step(images, labels) for full batches: forward_backward replayed from a CUDA graph,
    then optimizer.step(); the same maths as `step`, the eager train step, which it falls back to.

    The first WARMUP full batches run `step` eagerly on a side stream (as the CUDA graph docs
    ask); then forward_backward is captured once, with .grad unset so that backward writes
    fresh gradients into the graph's memory on every replay (equivalent to zeroing them).
    Batches of another size (the last of an epoch) run `step` eagerly. If capture fails, it
    says so in one line and stays eager.
    """

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
