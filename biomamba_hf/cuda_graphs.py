"""CUDA graphs for inference forwards: capture ``model(**inputs)`` once per input shape, then replay it.

A forward launches hundreds of small kernels per batch of windows; a CUDA graph records those launches once and
replays them with one call (on an H200 at 32 x 384 in bf16: +18% for Mamba-2, +28% for BERT-base, +3% for Mamba-1,
whose time is in its kernels rather than in their launches; BENCHMARKS.md, sixth session). Unlike
``torch.compile(mode="reduce-overhead")``, capture does not trace Python: it records whatever kernels run, so it
covers mamba-ssm's CUDA and Triton kernels (where ``torch.compile`` breaks the graph at each layer) and BERT-style
models alike. mamba-ssm's own generation loop captures its decoding step the same way.

What a graph needs, and what :class:`CUDAGraphCalls` does about it:

- fixed shapes: one graph per combination of input shapes, dtypes and constant arguments (with length buckets,
  :func:`biomamba_hf.qa.pad_to_bucket`, a QA workload meets a handful of shapes);
- fixed addresses: inputs are copied into buffers captured with the graph, and outputs are copied out of the graph's
  memory after each replay (the next replay overwrites it);
- no host synchronisation inside the forward (transformers skips its mask shortcuts while a stream captures);
- inference only: a graph cannot record autograd, so calls with gradients enabled are refused;
- the same weights: a graph reads parameters and buffers at the addresses they had at capture. In-place updates
  (an optimizer step) are seen by the next replay; a parameter or buffer replaced by another tensor (``model.to``,
  a LoRA merge, loading a state dict with ``assign=True``) drops every graph, and the next call captures anew.

Captured graphs share one memory pool. Warm-up calls run before each capture (on a side stream, as PyTorch
recommends): they autotune and compile mamba-ssm's Triton kernels for the shape, which must not happen inside a
capture.
"""

from __future__ import annotations

#: Eager calls at a new shape before it is captured (kernel autotuning and lazy initialisation happen there).
DEFAULT_WARMUP_CALLS = 2


def check_cuda_graphs(enabled, device, name: str = "cuda_graphs") -> bool:
    """``enabled`` as a bool, refusing what cannot work: a non-bool, or graphs for a model that is not on CUDA.
    ``name`` is the argument as the user wrote it (``--cuda_graphs_inference`` for run_qa)."""
    import torch

    if enabled is None or enabled is False:
        return False
    if enabled is not True:
        raise ValueError(f"{name} must be True or False, got {enabled!r}.")
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(
            f"{name} needs the model on a CUDA device, but it runs on {device}: run on a GPU (e.g. "
            f"pipeline(..., device=0)), or leave {name} off (length buckets and compile work on any device)."
        )
    return True


def check_one_graph_lever(compile_config, cuda_graphs: bool) -> None:
    """Refuse ``compile`` together with ``cuda_graphs``: one graph mechanism at a time."""
    if cuda_graphs and compile_config is not None:
        raise ValueError(
            "Pass either compile or cuda_graphs, not both: compile's default mode (reduce-overhead) already replays "
            "CUDA graphs of the compiled segments, and a graph cannot be captured around a compiled forward that "
            "manages its own."
        )


def clone_tensors(value):
    """``value`` (a ``ModelOutput``, tuple, dict or tensor) with every tensor copied: outputs that own their memory.

    transformers registers ``ModelOutput`` with ``torch.utils._pytree``, so one ``tree_map`` covers every form."""
    import torch
    from torch.utils._pytree import tree_map_only

    return tree_map_only(torch.Tensor, torch.clone, value)


class CUDAGraphCalls:
    """A callable that runs ``module``'s forward by capturing one CUDA graph per input signature and replaying it.

    Install it with :func:`biomamba_hf.qa.inference_levers` (callers that hold the module, such as the Trainer, then
    go through it) or call it directly with the forward's arguments. Tensor arguments become the graph's inputs (copied
    into its buffers at each call); other arguments (``None``, bools, numbers, strings) are constants of the graph and
    part of its key. Returned tensors are fresh copies. The autocast state at call time is part of the key too.

    Attributes:
        captures (`int`): graphs captured so far (one per distinct signature).
        replays (`int`): calls answered by replaying a graph.
    """

    def __reduce__(self):
        # A copy or a pickle of the model carries an empty cache: graphs, their pool and buffers belong to this
        # process and these weights (CUDA graphs cannot be copied); the copy captures anew at its first call.
        return type(self), (self.module, self.warmup_calls)

    #: Where inputs must be (a subclass that simulates graphs for tests on a CPU changes it).
    device_type = "cuda"

    def __init__(self, module, warmup_calls: int = DEFAULT_WARMUP_CALLS):
        if not isinstance(warmup_calls, int) or warmup_calls < 1:
            raise ValueError(f"warmup_calls must be a positive integer, got {warmup_calls!r}.")
        self.module = module
        self.warmup_calls = warmup_calls
        self.captures = 0
        self.replays = 0
        self._graphs: dict[tuple, tuple] = {}
        self._pool = None
        self._weights = None  # the addresses, dtypes and shapes of the weights the graphs read

    # -- the key of a call ---------------------------------------------------------------------------------------
    def _describe(self, name, value):
        import torch

        if isinstance(value, torch.Tensor):
            if value.device.type != self.device_type:
                raise ValueError(
                    f"cuda_graphs: input {name!r} is on {value.device}; CUDA graphs replay on the GPU, so move the "
                    "inputs to the model's device."
                )
            return ("tensor", tuple(value.shape), value.dtype, str(value.device))
        if value is None or isinstance(value, (bool, int, float, str)):
            return ("constant", value)
        raise ValueError(
            f"cuda_graphs: argument {name!r} is a {type(value).__name__}; a CUDA-graphed forward takes tensors and "
            "constants (None, bool, int, float, str) only. Call the model without CUDA graphs for this input."
        )

    @staticmethod
    def _tensors(args, kwargs) -> list:
        """The tensor arguments in a fixed order (positional, then keyword by name): the graph's inputs."""
        import torch

        values = (*args, *(kwargs[name] for name in sorted(kwargs)))
        return [value for value in values if isinstance(value, torch.Tensor)]

    def _key(self, args, kwargs) -> tuple:
        import torch

        described = tuple(self._describe(i, value) for i, value in enumerate(args))
        described += tuple((name, self._describe(name, kwargs[name])) for name in sorted(kwargs))
        autocast = torch.is_autocast_enabled("cuda")
        return described, autocast, torch.get_autocast_dtype("cuda") if autocast else None

    def _weights_signature(self) -> tuple:
        tensors = (*self.module.parameters(), *self.module.buffers())
        return tuple((t.data_ptr(), t.dtype, tuple(t.shape)) for t in tensors)

    # -- capture and replay ----------------------------------------------------------------------------------------
    def _run(self, args, kwargs):
        return self.module._call_impl(*args, **kwargs)

    def _new_graph(self, args, kwargs, device):
        """Warm up on a side stream, then capture one call: ``(replay, static_output)``."""
        import torch

        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup_calls):
                self._run(args, kwargs)
        torch.cuda.current_stream(device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = self._run(args, kwargs)
        return graph.replay, output

    def __call__(self, *args, **kwargs):
        import torch

        if torch.is_grad_enabled():
            raise RuntimeError(
                "cuda_graphs is an inference lever: a CUDA graph cannot record autograd. Call the model under "
                "torch.no_grad() or torch.inference_mode(), or turn cuda_graphs off for training."
            )
        key = self._key(args, kwargs)
        tensors = self._tensors(args, kwargs)
        weights = self._weights_signature()
        if weights != self._weights:  # new weight tensors: graphs would read freed memory
            self._graphs.clear()
            self._pool = None
            self._weights = weights
        # Buffers and replays live in inference mode whatever the caller's no-grad flavour; the copies returned
        # are made in the caller's mode.
        with torch.inference_mode():
            entry = self._graphs.get(key)
            if entry is None:
                device = tensors[0].device if tensors else torch.device("cuda", torch.cuda.current_device())
                static_args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
                static_kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
                replay, static_output = self._new_graph(static_args, static_kwargs, device)
                entry = self._graphs[key] = (self._tensors(static_args, static_kwargs), replay, static_output)
                self.captures += 1
            static_inputs, replay, static_output = entry
            for static, value in zip(static_inputs, tensors):
                static.copy_(value)
            replay()
        self.replays += 1
        return clone_tensors(static_output)


def cuda_graph_calls(model) -> CUDAGraphCalls:
    """The :class:`CUDAGraphCalls` kept on ``model`` (made at the first call; its graphs are reused)."""
    calls = model.__dict__.get("_biomamba_cuda_graph_calls")
    if calls is None:
        calls = model.__dict__["_biomamba_cuda_graph_calls"] = CUDAGraphCalls(model)
    return calls
