"""Mamba-2 only: tokenizer fit, the Mamba2-130m configs, the README section and LoRA. The heads' shared semantics are
tested for both families in tests/test_modeling.py."""

import pytest
import torch
from helpers import tiny_mamba2_config
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Mamba2ForCausalLM

from biomamba_hf import prepare_tokenizer_for_qa
from biomamba_hf.modeling import Mamba2ForQuestionAnswering

VOCAB = 99


def random_ids(batch, seq):
    return torch.randint(2, VOCAB, (batch, seq))  # ids 0 and 1 are eos and pad


def test_prepare_tokenizer_for_qa_fits_the_padded_mamba2_vocabulary(mamba2_clm_dir):
    """Like mamba2-130m (50,277 tokens, 50,288 rows), the padded rows hold the separator: no resize."""
    tokenizer = AutoTokenizer.from_pretrained(mamba2_clm_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(mamba2_clm_dir)
    rows = model.get_input_embeddings().num_embeddings
    assert rows > len(tokenizer)
    prepare_tokenizer_for_qa(tokenizer, model)
    assert tokenizer.sep_token == "<|sep|>" and tokenizer.pad_token == "<|padding|>"
    assert model.get_input_embeddings().num_embeddings == rows
    assert (model.config.pad_token_id, model.config.sep_token_id) == (tokenizer.pad_token_id, tokenizer.sep_token_id)
    assert tokenizer.sep_token_id < rows


def test_prepare_tokenizer_for_qa_resizes_a_full_mamba2_vocabulary(tokenizer):
    model = Mamba2ForQuestionAnswering(tiny_mamba2_config(len(tokenizer)))
    prepare_tokenizer_for_qa(tokenizer, model)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == tokenizer.sep_token_id + 1
    ids = tokenizer("Which gene? <|sep|> CFTR.", return_tensors="pt")["input_ids"]
    assert tokenizer.sep_token_id in ids[0].tolist()
    assert model(input_ids=ids).start_logits.shape == ids.shape


@pytest.mark.parametrize("name", ["mamba2_130m_scratch", "mamba2_130m_continued"])
def test_mamba2_130m_configs_parse_with_run_clm(name, tmp_path):
    """The example configs parse with run_clm's own parser and, from scratch, give the Mamba2-130m shape."""
    from helpers import ROOT, example_script, stand_in_data_dir
    from transformers import AutoModelForCausalLM

    from biomamba_hf.script_utils import config_from_overrides

    data = stand_in_data_dir(tmp_path)  # the configs' data paths, only parsed here
    with example_script("run_clm") as run_clm:
        # bf16 needs a GPU: parsed here without it (flags after the file override it, as on the command line)
        model_args, data_args, args = run_clm.parse_args(
            [str(ROOT / "examples/configs" / f"{name}.yaml"), "--bf16=false", "--data_dir", str(data)]
        )
    assert data_args.block_size == 2048 and args.tokens_per_step == 524288 and args.max_steps == 4800
    assert (args.learning_rate, args.adam_beta2, args.weight_decay, args.max_grad_norm) == (6e-4, 0.95, 0.1, 1.0)
    if name.endswith("continued"):
        assert model_args.model_name_or_path == "checkpoints/mamba2-130m" and model_args.model_type is None
        return
    assert model_args.model_type == "mamba2"
    config = config_from_overrides(model_args.model_type, model_args.config_overrides)
    shape = ("hidden_size", "num_hidden_layers", "state_size", "head_dim", "num_heads", "expand", "n_groups")
    assert [getattr(config, key) for key in shape] == [768, 24, 128, 64, 24, 2, 1]
    assert (config.chunk_size, config.vocab_size, config.tie_word_embeddings) == (256, 50288, True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert model.lm_head.weight is model.backbone.embeddings.weight
    assert 128e6 < sum(p.numel() for p in model.parameters()) < 130e6  # "130m"


def test_gpt_neox_tokenizer_fits_a_mamba2_checkpoint_and_the_pipeline_answers(tmp_path):
    """The real GPT-NeoX tokenizer (50,277 tokens) on a Mamba-2 checkpoint's 50,288 rows: the separator fits."""
    from helpers import data_dir
    from transformers import pipeline

    tokenizer = AutoTokenizer.from_pretrained(data_dir() / "tokenizers" / "gpt-neox-20b")
    assert len(tokenizer) == 50277 and tokenizer.pad_token is None and tokenizer.sep_token is None
    Mamba2ForCausalLM(tiny_mamba2_config(50288, pad_token_id=0)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    qa = pipeline("question-answering", model=str(tmp_path))
    assert type(qa.model) is Mamba2ForQuestionAnswering
    assert qa.model.get_input_embeddings().num_embeddings == 50288
    assert (qa.tokenizer.pad_token, qa.tokenizer.pad_token_id) == ("<|padding|>", 1)
    assert (qa.tokenizer.sep_token, qa.tokenizer.sep_token_id) == ("<|sep|>", 50277)
    context = "Cystic fibrosis results from mutations in the CFTR chloride channel."
    answer = qa(question="Which gene is mutated in cystic fibrosis?", context=context)
    assert answer["answer"] and context[answer["start"] : answer["end"]] == answer["answer"]


def test_readme_mamba2_section_runs(mamba2_clm_dir, monkeypatch, capsys):
    """The README's Mamba-2 snippets work as written, with a tiny local folder standing in for the converted one."""
    import re

    from helpers import ROOT

    from biomamba_hf import convert

    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Mamba-2\n", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    program, *argv = command.split()
    assert program == "biomamba-convert"
    calls = []
    monkeypatch.setattr(convert, "convert_mamba_ssm_checkpoint", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert convert.main(argv) == 0
    assert calls[0][0] == ("state-spaces/mamba2-130m", "checkpoints/mamba2-130m")
    assert calls[0][1]["tokenizer"] == "EleutherAI/gpt-neox-20b"

    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2 and '"checkpoints/mamba2-130m"' in blocks[0]
    namespace: dict = {}
    for block in blocks:
        code = block.replace('"checkpoints/mamba2-130m"', repr(str(mamba2_clm_dir)))
        exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "Mamba2ForQuestionAnswering question_first" in printed
    assert "Mamba2ForSequenceClassification torch.Size([2, 3])" in printed
    context = "Cystic fibrosis is caused by mutations in the CFTR gene, a chloride channel."
    answer = namespace["answer"]
    assert answer["answer"] and context[answer["start"] : answer["end"]] == answer["answer"]


# ---------------------------------------------------------------- LoRA on Mamba-2

#: With mamba-ssm importable, transformers would hand these CPU tensors to its GPU kernels.
cpu_mamba2_training_only = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mamba_ssm") is not None,
    reason="mamba-ssm is installed: transformers would send these CPU tensors to its GPU kernels",
)
QA_INPUTS = {"start_positions": torch.tensor([1, 2]), "end_positions": torch.tensor([2, 3])}


def lora_qa_model():
    torch.manual_seed(0)
    return Mamba2ForQuestionAnswering(tiny_mamba2_config(VOCAB))


@cpu_mamba2_training_only
def test_add_lora_on_mamba2_trains_in_proj_embeddings_and_the_head():
    pytest.importorskip("peft")
    from biomamba_hf.lora import add_lora, default_lora_targets

    assert default_lora_targets(lora_qa_model()) == ("in_proj", "embeddings")
    model = add_lora(lora_qa_model(), r=4, alpha=8)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(("lora_" in name) or ("modules_to_save" in name and "qa_outputs" in name) for name in trainable)
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable if "lora_" in name} == {
        "in_proj",
        "embeddings",
    }
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    input_ids = random_ids(2, 12)
    for _ in range(3):
        model(input_ids=input_ids, **QA_INPUTS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed == trainable  # every adapter weight and the head moved; nothing else did


@cpu_mamba2_training_only
def test_mamba2_adapters_train_on_the_fused_kernel_path(monkeypatch):
    """transformers' Mamba-2 training step calls in_proj as a module and hands its *output* to the fused
    mamba_split_conv1d_scan_combined, with conv1d.weight and out_proj.weight raw. A stand-in for that kernel (it
    multiplies by the raw out_proj weight, as the real one does) shows that in_proj and embedding adapters get
    gradients on that path with no rerouting, and pins the raw weights behind the out_proj/conv1d refusals."""
    pytest.importorskip("peft")
    from transformers.models.mamba2 import modeling_mamba2

    from biomamba_hf.lora import add_lora

    calls = []

    def fused_stand_in(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, **kwargs):
        calls.append((conv1d_weight, kwargs["outproj_weight"]))
        inner = kwargs["outproj_weight"].shape[1]
        return torch.nn.functional.silu(zxbcdt[..., :inner]) @ kwargs["outproj_weight"].t()

    monkeypatch.setattr(modeling_mamba2, "mamba2_split_conv1d_scan_combined", fused_stand_in)
    model = add_lora(lora_qa_model(), r=4, alpha=8).train()
    model(input_ids=random_ids(2, 8), **QA_INPUTS).loss.backward()
    mixers = [layer.mixer for layer in model.base_model.model.backbone.layers]
    assert len(calls) == len(mixers)  # every mixer took the fused path
    for (conv1d_weight, outproj_weight), mixer in zip(calls, mixers):
        assert outproj_weight is mixer.out_proj.weight  # raw: an out_proj adapter would be skipped
        assert conv1d_weight.data_ptr() == mixer.conv1d.weight.data_ptr()  # raw (a view): likewise for conv1d
    # per adapted module, the gradient of its adapter (peft zero-initialises one factor, so one of the two moves)
    moved: dict[str, bool] = {}
    for name, p in model.named_parameters():
        if ".lora_" in name:
            module = name.split(".lora_")[0]
            moved[module] = moved.get(module, False) or (p.grad is not None and bool(p.grad.abs().sum() > 0))
    assert len(moved) == len(mixers) + 1  # in_proj of each mixer + the embeddings
    assert all(moved.values()), moved


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("out_proj", r"'out_proj' .* on Mamba-2: .*\(mamba_split_conv1d_scan_combined\) multiplies by out_proj"),
        ("conv1d", "'conv1d' cannot take a LoRA adapter on Mamba-2: .*conv1d.weight directly"),
        ("x_proj", "Mamba-2 has no x_proj: B, C and dt come out of in_proj. Use the modules that train: in_proj,"),
        ("dt_proj", "Mamba-2 has no dt_proj"),
        ("qa_outputs", "'qa_outputs' is the task head"),
        ("gate_proj", "no module named 'gate_proj'; its adaptable modules are embeddings, in_proj"),
    ],
)
def test_add_lora_on_mamba2_refuses_modules_that_would_not_train(target, message):
    pytest.importorskip("peft")
    from biomamba_hf.lora import add_lora

    with pytest.raises(ValueError, match=message):
        add_lora(lora_qa_model(), target_modules=[target])
