"""The task heads of both families (Mamba and Mamba-2): one implementation, so one set of tests, run on tiny random
shapes of each family (Mamba-2 with one and with two groups). Mamba-2-only behaviour: tests/test_modeling_mamba2.py."""

from dataclasses import dataclass
from functools import partial

import pytest
import torch
from helpers import tiny_config, tiny_mamba2_config
from transformers import (
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    Mamba2Config,
    Mamba2ForCausalLM,
    Mamba2Model,
    MambaConfig,
    MambaForCausalLM,
    MambaModel,
)
from transformers.modeling_outputs import QuestionAnsweringModelOutput, SequenceClassifierOutput

import biomamba_hf
from biomamba_hf.modeling import (
    Mamba2ForQuestionAnswering,
    Mamba2ForSequenceClassification,
    MambaForQuestionAnswering,
    MambaForSequenceClassification,
)

BATCH, SEQ, VOCAB = 3, 7, 99  # SEQ spans two chunks of tiny_mamba2_config's 4 tokens


@dataclass(frozen=True)
class Family:
    config: object  # tiny config builder: (vocab_size, **overrides) -> config
    config_class: type
    qa: type
    cls: type
    clm: type
    base: type
    clm_dir: str  # the conftest fixture holding a saved causal LM of the family
    trained: tuple  # parameters the QA loss must reach, besides the head, embeddings and in_proj of layer 0


MIXER = ("conv1d.weight", "A_log", "out_proj.weight")
FAMILIES = {
    "mamba": Family(
        tiny_config, MambaConfig, MambaForQuestionAnswering, MambaForSequenceClassification, MambaForCausalLM,
        MambaModel, "clm_dir", tuple(f"backbone.layers.0.mixer.{name}" for name in (*MIXER, "x_proj.weight")),
    ),
    "mamba2": Family(
        tiny_mamba2_config, Mamba2Config, Mamba2ForQuestionAnswering, Mamba2ForSequenceClassification,
        Mamba2ForCausalLM, Mamba2Model, "mamba2_clm_dir",
        (*(f"backbone.layers.0.mixer.{name}" for name in MIXER), "backbone.layers.1.mixer.norm.weight"),
    ),
}  # fmt: skip
#: (family, config overrides): Mamba-2 with one and with two groups of B/C.
VARIANTS = {"mamba": ("mamba", {}), "mamba2-g1": ("mamba2", {"n_groups": 1}), "mamba2-g2": ("mamba2", {"n_groups": 2})}


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> Family:
    return FAMILIES[request.param]


@pytest.fixture(params=sorted(VARIANTS))
def variant(request) -> tuple[Family, object]:
    """A family and its tiny config builder with the variant's overrides."""
    name, overrides = VARIANTS[request.param]
    return FAMILIES[name], partial(FAMILIES[name].config, **overrides)


@pytest.fixture
def qa_model(variant):
    family, config = variant
    torch.manual_seed(0)
    return family.qa(config(VOCAB))


def random_ids(batch=BATCH, seq=SEQ):
    return torch.randint(2, VOCAB, (batch, seq))  # ids 0 and 1 are eos and pad


def test_both_families_share_one_head_implementation():
    assert Mamba2ForQuestionAnswering.forward is MambaForQuestionAnswering.forward
    assert Mamba2ForSequenceClassification.forward is MambaForSequenceClassification.forward
    assert Mamba2ForSequenceClassification._last_token_index is MambaForSequenceClassification._last_token_index


def test_qa_output_shapes_and_type(qa_model):
    ids = random_ids()
    out = qa_model(input_ids=ids)
    assert isinstance(out, QuestionAnsweringModelOutput)
    assert out.loss is None and out.hidden_states is None
    assert out.start_logits.shape == out.end_logits.shape == (BATCH, SEQ)
    assert not torch.equal(out.start_logits, out.end_logits)
    start, end = qa_model(input_ids=ids, return_dict=False)  # start/end logits first, as in every transformers head
    torch.testing.assert_close(start, out.start_logits)
    torch.testing.assert_close(end, out.end_logits)
    hidden = qa_model(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(hidden) == qa_model.config.num_hidden_layers + 1
    assert hidden[-1].shape == (BATCH, SEQ, qa_model.config.hidden_size)


def test_qa_head_reads_the_backbone_state(qa_model):
    """The logits are the head applied to the backbone's last hidden state, token by token."""
    ids = random_ids()
    with torch.no_grad():
        hidden = qa_model.backbone(input_ids=ids).last_hidden_state
        out = qa_model(input_ids=ids)
    expected = hidden @ qa_model.qa_outputs.weight.T + qa_model.qa_outputs.bias
    torch.testing.assert_close(out.start_logits, expected[..., 0])
    torch.testing.assert_close(out.end_logits, expected[..., 1])


def test_qa_loss_gradients_reach_head_and_backbone(qa_model, variant):
    family, _ = variant
    ids = random_ids()
    out = qa_model(input_ids=ids, start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([2, 2, 5]))
    expected = (
        torch.nn.functional.cross_entropy(out.start_logits, torch.tensor([1, 2, 3]))
        + torch.nn.functional.cross_entropy(out.end_logits, torch.tensor([2, 2, 5]))
    ) / 2
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    common = ("qa_outputs.weight", "backbone.embeddings.weight", "backbone.layers.0.mixer.in_proj.weight")
    for name in (*common, *family.trained):
        grad = qa_model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_qa_positions_outside_sequence_are_ignored(qa_model):
    ids = random_ids(2)
    both = qa_model(input_ids=ids, start_positions=torch.tensor([1, 500]), end_positions=torch.tensor([3, 500]))
    first = qa_model(input_ids=ids[:1], start_positions=torch.tensor([1]), end_positions=torch.tensor([3]))
    torch.testing.assert_close(both.loss, first.loss)


def test_qa_ignores_token_type_ids_and_never_builds_a_cache(qa_model, monkeypatch):
    ids = random_ids()
    seen = {}
    original = qa_model.backbone.forward

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(qa_model.backbone, "forward", spy)
    assert qa_model.config.use_cache  # the config asks for a cache; the head must not build one
    plain = qa_model.eval()(input_ids=ids)
    typed = qa_model(input_ids=ids, token_type_ids=torch.ones_like(ids))
    torch.testing.assert_close(plain.start_logits, typed.start_logits)
    assert seen["use_cache"] is False and "token_type_ids" not in seen


def test_qa_config_records_layout(family):
    assert family.qa(family.config(VOCAB)).config.qa_layout == "question_first"
    model = family.qa(family.config(VOCAB, qa_layout="repeat_context"))
    assert model.config.qa_layout == "repeat_context"
    message = "config.qa_layout 'sideways' is not a QA layout; use one of question_first, repeat_context"
    with pytest.raises(ValueError, match=message):
        family.qa(family.config(VOCAB, qa_layout="sideways"))


def test_auto_classes_reuse_causal_lm_backbone(family, request):
    clm_dir = request.getfixturevalue(family.clm_dir)
    clm = family.clm.from_pretrained(clm_dir)
    qa, info = AutoModelForQuestionAnswering.from_pretrained(clm_dir, output_loading_info=True)
    assert type(qa) is family.qa
    # only the head is newly initialised; nothing of the checkpoint is left unused
    assert set(info["missing_keys"]) == {"qa_outputs.weight", "qa_outputs.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    clm_state = clm.backbone.state_dict()
    assert qa.backbone.state_dict().keys() == clm_state.keys()
    for name, tensor in qa.backbone.state_dict().items():
        torch.testing.assert_close(tensor, clm_state[name], msg=name)
    cls, info = AutoModelForSequenceClassification.from_pretrained(clm_dir, num_labels=3, output_loading_info=True)
    assert type(cls) is family.cls
    assert set(info["missing_keys"]) == {"score.weight"}
    torch.testing.assert_close(cls.backbone.embeddings.weight, clm.backbone.embeddings.weight)
    torch.testing.assert_close(
        cls.backbone.layers[1].mixer.in_proj.weight, clm.backbone.layers[1].mixer.in_proj.weight
    )
    # AutoModel is untouched: the stock base model
    assert type(AutoModel.from_pretrained(clm_dir)) is family.base


def test_save_load_round_trip_gives_identical_logits(tmp_path, qa_model, variant):
    family, _ = variant
    ids = random_ids()
    qa_model.config.qa_layout = "repeat_context"
    qa_model.eval().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path).eval()
    assert type(loaded) is family.qa
    assert loaded.config.qa_layout == "repeat_context"
    assert getattr(loaded.config, "n_groups", None) == getattr(qa_model.config, "n_groups", None)
    with torch.no_grad():
        a, b = qa_model(input_ids=ids), loaded(input_ids=ids)
    assert torch.equal(a.start_logits, b.start_logits) and torch.equal(a.end_logits, b.end_logits)


def test_classification_save_load_round_trip(tmp_path, family):
    torch.manual_seed(0)
    model = family.cls(family.config(VOCAB, num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is family.cls
    ids = random_ids()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_registration_is_idempotent():
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_QUESTION_ANSWERING_MAPPING,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    )
    from transformers.pipelines import PIPELINE_REGISTRY

    before = dict(PIPELINE_REGISTRY.supported_tasks["question-answering"])
    biomamba_hf.register()
    biomamba_hf.register()
    assert PIPELINE_REGISTRY.supported_tasks["question-answering"] == before
    assert before["impl"] is biomamba_hf.QuestionAnsweringPipeline
    for family in FAMILIES.values():  # each family keeps its own classes
        assert MODEL_FOR_QUESTION_ANSWERING_MAPPING[family.config_class] is family.qa
        assert MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[family.config_class] is family.cls
        config = family.config(VOCAB)
        assert type(AutoModelForQuestionAnswering.from_config(config)) is family.qa
        assert type(AutoModelForSequenceClassification.from_config(config)) is family.cls
        assert type(AutoModel.from_config(config)) is family.base


def test_import_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, biomamba_hf; heavy = [m for m in ('datasets', 'evaluate', 'peft', 'matplotlib') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("num_labels", [1, 3])
def test_sequence_classification_pools_last_real_token(num_labels, variant):
    family, config = variant
    torch.manual_seed(0)
    model = family.cls(config(VOCAB, num_labels=num_labels)).eval()
    ids = random_ids(1, 5)
    padded = torch.cat([ids, torch.full((1, 3), 1)], dim=1)  # pad id 1 on the right (across a Mamba-2 chunk boundary)
    mask = torch.cat([torch.ones(1, 5), torch.zeros(1, 3)], dim=1).long()
    with torch.no_grad():
        alone = model(input_ids=ids).logits
        with_mask = model(input_ids=padded, attention_mask=mask).logits
        by_pad_id = model(input_ids=padded).logits
        last_state = model.backbone(input_ids=ids).last_hidden_state[:, -1]
    assert alone.shape == (1, num_labels)
    torch.testing.assert_close(alone, last_state @ model.score.weight.T)
    torch.testing.assert_close(alone, with_mask)
    torch.testing.assert_close(alone, by_pad_id)


@pytest.mark.parametrize(
    ("labels", "problem_type"),
    [
        (torch.tensor([0, 2, 1]), "single_label_classification"),
        (torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "multi_label_classification"),
    ],
)
def test_sequence_classification_loss_and_gradients(labels, problem_type, family):
    torch.manual_seed(0)
    model = family.cls(family.config(VOCAB, num_labels=3))
    out = model(input_ids=random_ids(), labels=labels)
    assert isinstance(out, SequenceClassifierOutput) and out.logits.shape == (BATCH, 3)
    assert model.config.problem_type == problem_type
    if problem_type == "single_label_classification":
        torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    else:
        torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels))
    out.loss.backward()
    assert model.score.weight.grad.abs().sum() > 0
    assert model.backbone.embeddings.weight.grad.abs().sum() > 0
    assert model.backbone.layers[0].mixer.in_proj.weight.grad.abs().sum() > 0


def test_regression_uses_mean_squared_error(family):
    torch.manual_seed(0)
    model = family.cls(family.config(VOCAB, num_labels=1))
    targets = torch.tensor([0.5, -1.0, 2.0])
    out = model(input_ids=random_ids(), labels=targets)
    assert model.config.problem_type == "regression"
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), targets))


def test_gradient_checkpointing_gives_the_same_gradients(qa_model):
    ids, starts, ends = random_ids(), torch.tensor([1, 2, 3]), torch.tensor([2, 2, 5])
    qa_model.train()
    qa_model(input_ids=ids, start_positions=starts, end_positions=ends).loss.backward()
    plain = qa_model.backbone.layers[0].mixer.in_proj.weight.grad.clone()
    qa_model.zero_grad()
    # renamed activation_checkpointing_enable in recent 5.x releases; the old name warns there
    enable = getattr(qa_model, "activation_checkpointing_enable", qa_model.gradient_checkpointing_enable)
    enable()
    assert qa_model.backbone.gradient_checkpointing
    qa_model(input_ids=ids, start_positions=starts, end_positions=ends).loss.backward()
    torch.testing.assert_close(qa_model.backbone.layers[0].mixer.in_proj.weight.grad, plain)


def test_bfloat16_weights(qa_model):
    model = qa_model.to(torch.bfloat16).eval()
    with torch.no_grad():
        out = model(input_ids=random_ids())
    assert out.start_logits.dtype == torch.bfloat16 and torch.isfinite(out.start_logits.float()).all()
