"""Show on a CUDA machine which Mamba-2 modules can carry a LoRA adapter that trains on the real fused kernel path.

transformers' Mamba-2 training step (``Mamba2Mixer.forward`` with ``self.training`` and no cache) calls ``in_proj`` as a
module and hands its output to mamba-ssm's fused ``mamba_split_conv1d_scan_combined`` together with the raw
``conv1d.weight``, ``dt_bias``, ``A_log``, ``D``, ``norm.weight`` and ``out_proj.weight``. An adapter on a module whose
weight is taken raw is skipped. :func:`biomamba_hf.lora.add_lora` therefore adapts ``in_proj`` and ``embeddings`` on
Mamba-2 and refuses ``out_proj`` and ``conv1d`` (peft refuses them as well). This script checks those facts with the
real kernels on a tiny random ``Mamba2ForQuestionAnswering``:

1. the fused kernel runs for every layer (it returns a tensor, not transformers' ``None`` fallback);
2. full fine-tuning: every raw mixer weight receives a gradient through the kernel (nothing is frozen by accident);
3. ``add_lora`` with its Mamba-2 defaults: every ``lora_B`` of ``in_proj`` and of the embeddings receives a non-zero
   gradient, and the kernel still runs for every layer;
4. control: a hand-made adapter (base + B @ A, exposing the base ``weight``/``bias`` as the kernel expects) on
   ``out_proj`` and on ``conv1d`` receives no gradient, i.e. the refusal is needed. If upstream starts calling these
   modules, this part fails and the refusal can be revisited.

Run from the repository root (mamba-ssm 2.x with its kernels, causal-conv1d, peft):

    PYTHONPATH=. python scripts/gpu_check_lora_mamba2.py

Exit status 0 when every check holds, 1 when one does not, 2 when the machine cannot run the check.
"""

from __future__ import annotations

import importlib.util
import sys

#: Where the check runs (the tests dry-run the logic on "cpu" with a stand-in for the kernel).
DEVICE = "cuda"


def _environment() -> None:
    import torch

    missing = [name for name in ("mamba_ssm", "causal_conv1d", "peft") if importlib.util.find_spec(name) is None]
    if not torch.cuda.is_available() or missing:
        print(f"cannot run: CUDA available={torch.cuda.is_available()}, missing packages={missing}", file=sys.stderr)
        sys.exit(2)
    import mamba_ssm
    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, mamba_ssm {mamba_ssm.__version__}, "
        f"GPU {torch.cuda.get_device_name(0)}"
    )


def _model():
    import torch
    from transformers import Mamba2Config

    from biomamba_hf.modeling import Mamba2ForQuestionAnswering

    torch.manual_seed(0)
    config = Mamba2Config(
        vocab_size=1024,
        hidden_size=256,
        expand=2,
        head_dim=64,
        num_heads=8,
        n_groups=1,
        state_size=64,
        num_hidden_layers=2,
        chunk_size=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=0,
    )
    return Mamba2ForQuestionAnswering(config).to(DEVICE).train()


def _with_hand_made_adapter(base, rank: int = 4):
    """``base`` wrapped as base(x) + B(A(x)), exposing the base ``weight``/``bias`` as the fused kernel reads them."""
    from torch import nn

    class Adapted(nn.Module):
        def __init__(self):
            super().__init__()
            self.base_layer = base
            if isinstance(base, nn.Linear):
                self.lora_A = nn.Linear(base.in_features, rank, bias=False)
                self.lora_B = nn.Linear(rank, base.out_features, bias=False)
                nn.init.normal_(self.lora_B.weight, std=0.02)
            else:  # the depthwise causal convolution: a second depthwise convolution of the same shape
                self.lora_A = nn.Conv1d(
                    base.in_channels,
                    base.out_channels,
                    base.kernel_size[0],
                    groups=base.groups,
                    padding=base.padding[0],
                    bias=False,
                )
                self.lora_B = nn.Identity()
            nn.init.normal_(self.lora_A.weight, std=0.02)

        @property
        def weight(self):
            return self.base_layer.weight

        @property
        def bias(self):
            return self.base_layer.bias

        def forward(self, x):
            return self.base_layer(x) + self.lora_B(self.lora_A(x))

    return Adapted().to(base.weight.device)


def main() -> int:
    _environment()
    import torch
    from transformers.models.mamba2 import modeling_mamba2

    from biomamba_hf.lora import add_lora, default_lora_targets

    torch.backends.cuda.matmul.allow_tf32 = False
    fused_ran: list[bool] = []
    kernel = modeling_mamba2.mamba2_split_conv1d_scan_combined

    def spy(*args, **kwargs):
        output = kernel(*args, **kwargs)
        fused_ran.append(output is not None)
        return output

    modeling_mamba2.mamba2_split_conv1d_scan_combined = spy
    inputs = {
        "input_ids": torch.randint(2, 1024, (2, 256), device=DEVICE),
        "start_positions": torch.tensor([10, 20], device=DEVICE),
        "end_positions": torch.tensor([12, 25], device=DEVICE),
    }
    failures: list[str] = []

    def check(condition: bool, what: str) -> None:
        print(f"  [{'ok' if condition else 'FAIL'}] {what}")
        if not condition:
            failures.append(what)

    print("1-2. full fine-tuning step")
    model = _model()
    layers = model.config.num_hidden_layers
    model(**inputs).loss.backward()
    check(fused_ran == [True] * layers, f"the fused kernel ran for all {layers} layers (got {fused_ran})")
    for name in (
        "in_proj.weight",
        "conv1d.weight",
        "conv1d.bias",
        "dt_bias",
        "A_log",
        "D",
        "norm.weight",
        "out_proj.weight",
    ):
        grad = model.backbone.layers[0].mixer.get_parameter(name).grad
        check(grad is not None and grad.abs().sum().item() > 0, f"raw mixer weight {name} receives a gradient")

    print(f"3. add_lora with the Mamba-2 defaults {default_lora_targets(model)}")
    fused_ran.clear()
    peft_model = add_lora(_model(), r=4, alpha=8)
    peft_model(**inputs).loss.backward()
    check(fused_ran == [True] * layers, "the fused kernel still ran for every layer")
    # per adapted module, the gradient of its adapter (peft zero-initialises one factor, so one of the two moves)
    moved: dict[str, bool] = {}
    for name, p in peft_model.named_parameters():
        if ".lora_" in name:
            module = name.split(".lora_")[0]
            moved[module] = moved.get(module, False) or (p.grad is not None and p.grad.abs().sum().item() > 0)
    check(len(moved) == layers + 1, f"{len(moved)} adapted modules ({layers} in_proj + embeddings)")
    for module, ok in sorted(moved.items()):
        check(ok, f"the adapter of {module} receives a non-zero gradient")

    print("4. control: hand-made adapters on out_proj and conv1d (what add_lora refuses)")
    for target in ("out_proj", "conv1d"):
        fused_ran.clear()
        model = _model()
        for layer in model.backbone.layers:
            setattr(layer.mixer, target, _with_hand_made_adapter(getattr(layer.mixer, target)))
        model(**inputs).loss.backward()
        check(fused_ran == [True] * layers, f"{target}: the fused kernel ran for every layer")
        grads = [
            p.grad
            for layer in model.backbone.layers
            for name, p in getattr(layer.mixer, target).named_parameters()
            if name.startswith("lora_")
        ]
        skipped = all(g is None or g.abs().sum().item() == 0 for g in grads)
        check(skipped, f"{target}: the adapter receives no gradient (the kernel reads {target}.weight raw)")

    modeling_mamba2.mamba2_split_conv1d_scan_combined = kernel
    print("PASS" if not failures else f"FAIL: {len(failures)} check(s): {failures}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
