"""Task heads for Mamba and Mamba-2 that transformers does not ship: extractive QA and sequence classification.

The heads follow the layout of transformers' ``models/mamba/modeling_mamba.py``: they subclass
``MambaPreTrainedModel`` (``Mamba2PreTrainedModel`` for Mamba-2), keep the body at ``self.backbone`` (so checkpoints
of ``MambaForCausalLM``/``Mamba2ForCausalLM`` such as ``state-spaces/mamba-130m-hf``, or ``state-spaces/mamba2-130m``
once converted from mamba_ssm's format by ``biomamba-convert``, load into them with only the head newly initialised), call ``post_init()`` last and return the standard
``ModelOutput`` dataclasses.

Both backbones take the same arguments and return ``last_hidden_state``, so the head logic is written once, in
:class:`QuestionAnsweringHeadMixin` and :class:`SequenceClassificationHeadMixin`; each model class only names its
backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import (
    Mamba2Config,
    Mamba2Model,
    Mamba2PreTrainedModel,
    MambaConfig,
    MambaModel,
    MambaPreTrainedModel,
)
from transformers.modeling_outputs import QuestionAnsweringModelOutput, SequenceClassifierOutput

#: Input layouts for extractive QA with a left-to-right model (see :mod:`biomamba_hf.qa`).
QA_LAYOUTS = ("question_first", "repeat_context")
DEFAULT_QA_LAYOUT = "question_first"


def check_qa_layout(layout, source: str, allowed: Sequence[str] = QA_LAYOUTS) -> str:
    """Return ``layout`` if it is one of ``allowed`` (by default :data:`QA_LAYOUTS`), else raise.

    This is the one place the rule lives; every reader of a QA layout (model configs, script flags, feature
    preparation) calls it. ``source`` says where the value came from (``"config.qa_layout"``, ``"--qa_layout"``,
    ``"layout="``) and is named in the error.

    >>> check_qa_layout("repeat_context", "--qa_layout")
    'repeat_context'
    >>> check_qa_layout("sideways", "--qa_layout")
    Traceback (most recent call last):
    ...
    ValueError: --qa_layout 'sideways' is not a QA layout; use one of question_first, repeat_context.
    """
    if layout not in allowed:
        raise ValueError(f"{source} {layout!r} is not a QA layout; use one of {', '.join(allowed)}.")
    return layout


def get_qa_layout(config) -> str:
    """The QA input layout a config records (``config.qa_layout``), defaulting to ``"question_first"``."""
    return check_qa_layout(getattr(config, "qa_layout", None) or DEFAULT_QA_LAYOUT, "config.qa_layout")


class QuestionAnsweringHeadMixin:
    """The span-extraction head shared by :class:`MambaForQuestionAnswering` and :class:`Mamba2ForQuestionAnswering`.

    A linear layer (``self.qa_outputs``) gives start and end logits for every token of ``self.backbone``'s last
    hidden state. The model reads the sequence built by :func:`biomamba_hf.qa.prepare_qa_features` for
    ``config.qa_layout``. It never builds a recurrent cache and accepts (and ignores) ``token_type_ids`` so that
    generic QA code written for BERT-style models can call it unchanged.

    A class using it subclasses a ``PreTrainedModel`` after the mixin and calls :meth:`_init_qa_head` in its
    ``__init__`` after creating ``self.backbone``, then ``post_init()``.
    """

    def _init_qa_head(self, config) -> None:
        if getattr(config, "qa_layout", None) is None:
            config.qa_layout = DEFAULT_QA_LAYOUT
        get_qa_layout(config)  # validates
        self.qa_outputs = nn.Linear(config.hidden_size, 2)

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, new_embeddings):
        self.backbone.set_input_embeddings(new_embeddings)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | QuestionAnsweringModelOutput:
        r"""
        start_positions / end_positions (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Token indices of the answer span, for the loss. Positions outside the sequence are ignored.
        token_type_ids: accepted for compatibility with BERT-style callers and ignored.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.qa_outputs(outputs.last_hidden_state.to(self.qa_outputs.weight.dtype))
        start_logits, end_logits = logits.split(1, dim=-1)
        start_logits = start_logits.squeeze(-1).contiguous()
        end_logits = end_logits.squeeze(-1).contiguous()

        loss = None
        if start_positions is not None and end_positions is not None:
            # As in BERT: positions outside the sequence are clamped to an ignored index.
            ignored_index = start_logits.size(1)
            start_positions = start_positions.reshape(-1).clamp(0, ignored_index)
            end_positions = end_positions.reshape(-1).clamp(0, ignored_index)
            loss_fct = nn.CrossEntropyLoss(ignore_index=ignored_index)
            loss = (loss_fct(start_logits.float(), start_positions) + loss_fct(end_logits.float(), end_positions)) / 2

        if not return_dict:
            output = (start_logits, end_logits) + ((outputs.hidden_states,) if output_hidden_states else ())
            return ((loss,) + output) if loss is not None else output
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
        )


class SequenceClassificationHeadMixin:
    """The classification head shared by :class:`MambaForSequenceClassification` and
    :class:`Mamba2ForSequenceClassification`: a linear layer (``self.score``) on the state of the last real token.

    A left-to-right model has read the whole input only at its last token, so that is what is pooled. With an
    ``attention_mask`` the last position whose mask is 1 is used (left or right padding both work); without one, the
    last token before the first ``config.pad_token_id``.

    A class using it subclasses a ``PreTrainedModel`` after the mixin and calls :meth:`_init_classification_head`
    in its ``__init__`` after creating ``self.backbone``, then ``post_init()``.
    """

    def _init_classification_head(self, config) -> None:
        self.num_labels = config.num_labels
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, new_embeddings):
        self.backbone.set_input_embeddings(new_embeddings)

    def _last_token_index(self, input_ids, attention_mask, inputs_embeds) -> torch.Tensor:
        if attention_mask is not None:
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            return (attention_mask.bool() * positions).argmax(-1)
        if input_ids is None or self.config.pad_token_id is None:
            length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
            batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
            return torch.full((batch,), length - 1, dtype=torch.long, device=self.device)
        is_pad = (input_ids == self.config.pad_token_id).int()
        # index of the first pad token minus one; sequences without padding end at their last position
        first_pad = torch.where(is_pad.any(-1), is_pad.argmax(-1), torch.full_like(is_pad[:, 0], input_ids.shape[1]))
        return (first_pad - 1).clamp(min=0)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SequenceClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class indices (cross-entropy), or float targets when `config.num_labels == 1` (mean squared error) or
            `config.problem_type == "multi_label_classification"` (binary cross-entropy).
        token_type_ids: accepted for compatibility with BERT-style callers and ignored.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden = outputs.last_hidden_state
        index = self._last_token_index(input_ids, attention_mask, inputs_embeds).to(hidden.device)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
        logits = self.score(pooled)

        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                loss = nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float().reshape(-1))
            elif self.config.problem_type == "single_label_classification":
                loss = nn.functional.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())

        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if output_hidden_states else ())
            return ((loss,) + output) if loss is not None else output
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class MambaForQuestionAnswering(QuestionAnsweringHeadMixin, MambaPreTrainedModel):
    """Mamba with a span-extraction head (see :class:`QuestionAnsweringHeadMixin` for inputs and outputs)."""

    def __init__(self, config: MambaConfig):
        super().__init__(config)
        self.backbone = MambaModel(config)
        self._init_qa_head(config)
        self.post_init()


class MambaForSequenceClassification(SequenceClassificationHeadMixin, MambaPreTrainedModel):
    """Mamba with a classification head on the last real token (see :class:`SequenceClassificationHeadMixin`)."""

    def __init__(self, config: MambaConfig):
        super().__init__(config)
        self.backbone = MambaModel(config)
        self._init_classification_head(config)
        self.post_init()


class Mamba2ForQuestionAnswering(QuestionAnsweringHeadMixin, Mamba2PreTrainedModel):
    """Mamba-2 with a span-extraction head (see :class:`QuestionAnsweringHeadMixin` for inputs and outputs).

    Loads ``Mamba2ForCausalLM`` checkpoints (e.g. ``state-spaces/mamba2-130m`` after ``biomamba-convert``) with only
    ``qa_outputs`` new.
    """

    def __init__(self, config: Mamba2Config):
        super().__init__(config)
        self.backbone = Mamba2Model(config)
        self._init_qa_head(config)
        self.post_init()


class Mamba2ForSequenceClassification(SequenceClassificationHeadMixin, Mamba2PreTrainedModel):
    """Mamba-2 with a classification head on the last real token (see :class:`SequenceClassificationHeadMixin`).

    Loads ``Mamba2ForCausalLM`` checkpoints (e.g. ``state-spaces/mamba2-130m`` after ``biomamba-convert``) with only
    ``score`` new.
    """

    def __init__(self, config: Mamba2Config):
        super().__init__(config)
        self.backbone = Mamba2Model(config)
        self._init_classification_head(config)
        self.post_init()
