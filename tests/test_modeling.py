import pytest
import torch
from helpers import tiny_config
from transformers import (
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    MambaForCausalLM,
    MambaModel,
)
from transformers.modeling_outputs import QuestionAnsweringModelOutput

import biomamba_hf
from biomamba_hf import MambaForQuestionAnswering, MambaForSequenceClassification

BATCH, SEQ, VOCAB = 3, 7, 99


@pytest.fixture
def qa_model():
    torch.manual_seed(0)
    return MambaForQuestionAnswering(tiny_config(VOCAB))


def test_qa_output_shapes_and_type(qa_model):
    ids = torch.randint(2, VOCAB, (BATCH, SEQ))
    out = qa_model(input_ids=ids)
    assert isinstance(out, QuestionAnsweringModelOutput)
    assert out.loss is None
    assert out.start_logits.shape == out.end_logits.shape == (BATCH, SEQ)
    # start/end logits come first in the tuple form, as for every transformers QA head
    start, end = qa_model(input_ids=ids, return_dict=False)
    torch.testing.assert_close(start, out.start_logits)
    torch.testing.assert_close(end, out.end_logits)


def test_qa_loss_gradients_reach_head_and_backbone(qa_model):
    ids = torch.randint(2, VOCAB, (BATCH, SEQ))
    out = qa_model(input_ids=ids, start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([2, 2, 5]))
    assert out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    for name in ("qa_outputs.weight", "backbone.embeddings.weight", "backbone.layers.0.mixer.in_proj.weight"):
        grad = qa_model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_qa_positions_outside_sequence_are_ignored(qa_model):
    ids = torch.randint(2, VOCAB, (2, SEQ))
    both = qa_model(input_ids=ids, start_positions=torch.tensor([1, 500]), end_positions=torch.tensor([3, 500]))
    first = qa_model(input_ids=ids[:1], start_positions=torch.tensor([1]), end_positions=torch.tensor([3]))
    torch.testing.assert_close(both.loss, first.loss)


def test_qa_ignores_token_type_ids_and_never_builds_a_cache(qa_model, monkeypatch):
    ids = torch.randint(2, VOCAB, (BATCH, SEQ))
    seen = {}
    original = qa_model.backbone.forward

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(qa_model.backbone, "forward", spy)
    plain = qa_model(input_ids=ids)
    typed = qa_model(input_ids=ids, token_type_ids=torch.ones_like(ids))
    torch.testing.assert_close(plain.start_logits, typed.start_logits)
    assert seen["use_cache"] is False


def test_qa_config_records_layout():
    assert MambaForQuestionAnswering(tiny_config(VOCAB)).config.qa_layout == "question_first"
    model = MambaForQuestionAnswering(tiny_config(VOCAB, qa_layout="repeat_context"))
    assert model.config.qa_layout == "repeat_context"
    message = "config.qa_layout 'sideways' is not a QA layout; use one of question_first, repeat_context"
    with pytest.raises(ValueError, match=message):
        MambaForQuestionAnswering(tiny_config(VOCAB, qa_layout="sideways"))


def test_auto_classes_reuse_causal_lm_backbone(clm_dir):
    clm = MambaForCausalLM.from_pretrained(clm_dir)
    qa, info = AutoModelForQuestionAnswering.from_pretrained(clm_dir, output_loading_info=True)
    assert type(qa) is MambaForQuestionAnswering
    assert set(info["missing_keys"]) == {"qa_outputs.weight", "qa_outputs.bias"}
    clm_state = clm.backbone.state_dict()
    for name, tensor in qa.backbone.state_dict().items():
        torch.testing.assert_close(tensor, clm_state[name], msg=name)
    cls = AutoModelForSequenceClassification.from_pretrained(clm_dir, num_labels=3)
    assert type(cls) is MambaForSequenceClassification
    torch.testing.assert_close(cls.backbone.embeddings.weight, clm.backbone.embeddings.weight)
    # AutoModel is untouched: stock MambaModel
    assert type(AutoModel.from_pretrained(clm_dir)) is MambaModel


def test_save_load_round_trip_gives_identical_logits(tmp_path, qa_model):
    ids = torch.randint(2, VOCAB, (BATCH, SEQ))
    qa_model.eval()
    qa_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path).eval()
    assert loaded.config.qa_layout == qa_model.config.qa_layout
    with torch.no_grad():
        a, b = qa_model(input_ids=ids), loaded(input_ids=ids)
    assert torch.equal(a.start_logits, b.start_logits) and torch.equal(a.end_logits, b.end_logits)


def test_registration_is_idempotent():
    from transformers.pipelines import PIPELINE_REGISTRY

    before = dict(PIPELINE_REGISTRY.supported_tasks["question-answering"])
    biomamba_hf.register()
    biomamba_hf.register()
    assert PIPELINE_REGISTRY.supported_tasks["question-answering"] == before
    assert before["impl"] is biomamba_hf.QuestionAnsweringPipeline
    config = tiny_config(VOCAB)
    assert type(AutoModelForQuestionAnswering.from_config(config)) is MambaForQuestionAnswering


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
def test_sequence_classification_pools_last_real_token(num_labels):
    torch.manual_seed(0)
    model = MambaForSequenceClassification(tiny_config(VOCAB, num_labels=num_labels)).eval()
    ids = torch.randint(2, VOCAB, (1, 5))
    padded = torch.cat([ids, torch.full((1, 3), 1)], dim=1)  # pad id 1 on the right
    mask = torch.cat([torch.ones(1, 5), torch.zeros(1, 3)], dim=1).long()
    with torch.no_grad():
        alone = model(input_ids=ids).logits
        with_mask = model(input_ids=padded, attention_mask=mask).logits
        by_pad_id = model(input_ids=padded).logits
    assert alone.shape == (1, num_labels)
    torch.testing.assert_close(alone, with_mask)
    torch.testing.assert_close(alone, by_pad_id)


def test_sequence_classification_loss_and_gradients():
    model = MambaForSequenceClassification(tiny_config(VOCAB, num_labels=3))
    ids = torch.randint(2, VOCAB, (BATCH, SEQ))
    out = model(input_ids=ids, labels=torch.tensor([0, 2, 1]))
    out.loss.backward()
    assert model.config.problem_type == "single_label_classification"
    assert model.score.weight.grad.abs().sum() > 0
    assert model.backbone.embeddings.weight.grad.abs().sum() > 0


def test_bfloat16_weights(qa_model):
    ids = torch.randint(2, VOCAB, (BATCH, SEQ))
    model = qa_model.to(torch.bfloat16).eval()
    with torch.no_grad():
        out = model(input_ids=ids)
    assert out.start_logits.dtype == torch.bfloat16 and torch.isfinite(out.start_logits.float()).all()
