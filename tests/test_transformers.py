"""A tiny Hugging Face GPT-2 and BERT, built from configs (random weights, no download).

Skipped without the optional ``transformers`` package (``pip install 'curvprune[hf]'``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

import curvprune as cp  # noqa: E402

DT = torch.float64
VOCAB = 40


def _gpt2():
    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=16,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).to(DT).eval()


def _token_batches(sizes=(3, 2)):
    gen = torch.Generator().manual_seed(0)
    out = []
    for b in sizes:
        ids = torch.randint(0, VOCAB, (b, 8), generator=gen)
        out.append(({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids))
    return out


def lm_loss(out, ids):
    """Next-token cross-entropy, mean over tokens; `out` is the model's output object."""
    logits = out.logits if hasattr(out, "logits") else out
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def test_gpt2_conv1d_weights_are_prunable_and_the_tied_head_is_not_listed_twice():
    names = list(cp.prunable_weights(_gpt2()))
    assert "transformer.h.0.attn.c_attn.weight" in names  # Conv1D, weight (in, out)
    assert "transformer.h.1.mlp.c_proj.weight" in names
    assert "lm_head.weight" not in names  # tied to transformer.wte.weight (an Embedding)
    assert len(names) == 8


def test_gpt2_fisher_equals_per_sample_autograd():
    model = _gpt2()
    batches = _token_batches()
    got = cp.score(model, "fisher", batches, loss_fn=lm_loss)
    weights = cp.prunable_weights(model)
    params = [weights[n].module.weight for n in got]
    sums = [torch.zeros_like(p) for p in params]
    count = 0
    for x, ids in batches:
        for i in range(ids.shape[0]):
            sample = {k: v[i : i + 1] for k, v in x.items()}
            grads = torch.autograd.grad(lm_loss(model(**sample), ids[i : i + 1]), params)
            for s, g in zip(sums, grads):
                s += g * g
            count += 1
    for (name, scores), p, s in zip(got.items(), params, sums):
        want = 0.5 * p.detach() ** 2 * s / count  # ½ θ² F
        torch.testing.assert_close(scores, want, rtol=1e-9, atol=1e-15, msg=name)


@pytest.mark.parametrize("criterion", ["fisher", "hts", "oba", "woodfisher"])
def test_gpt2_is_scored_and_pruned(criterion):
    model = _gpt2()
    batches = _token_batches()
    logits = {"forward": lambda m, x: m(**x).logits} if criterion == "oba" else {}
    options = {"block_size": 16} if criterion == "woodfisher" else {}
    scores = cp.score(model, criterion, batches, loss_fn=lm_loss, **logits, **options)
    assert len(scores) == 8 and all(torch.isfinite(s).all() for s in scores.values())
    result = cp.prune(model, criterion, batches, sparsity=0.5, loss_fn=lm_loss, iterations=1,
                      **logits, **options)  # fmt: skip
    assert result.sparsity == 0.5
    x, ids = batches[0]
    assert torch.isfinite(lm_loss(model(**x), ids))


def test_bert_classifier_with_logits_forward_and_default_loss():
    transformers.logging.set_verbosity_error()
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (4, 6), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0  # padding
    batches = [({"input_ids": ids, "attention_mask": mask}, torch.tensor([0, 1, 2, 1]))]
    forward = lambda m, x: m(**x).logits  # noqa: E731
    for criterion in ("fisher", "hts", "oba"):
        scores = cp.score(model, criterion, batches, forward=forward)
        assert "bert.encoder.layer.0.attention.self.query.weight" in scores
        assert all(torch.isfinite(s).all() for s in scores.values())
    pruner = cp.GradualPruner(model, "fisher", batches, sparsity=0.5, end=1, forward=forward)
    pruner.step(), pruner.step()
    assert cp.sparsity_report(model).sparsity == pytest.approx(0.5, abs=1e-3)
