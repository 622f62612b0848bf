"""Each argument is checked once on its way to the kernel, and CFT's weight has its own name.

The checks are counted by wrapping the one check function in every module that imports it, so a
check that comes back in a wrapper (or a second name for the same concept) fails here.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator

import pytest
import torch

import igdbeam.ops.label_weights as label_weights_mod
import igdbeam.training.loss as loss_mod
import igdbeam.training.loss_func as loss_func_mod
from igdbeam import ItemTrie, cft_loss, igd_loss, igd_loss_from_log_probs, pos_loss
from igdbeam.native import checks
from igdbeam.training.loss_func import IGDLossFunc
from oracles.loss import reference_cft_loss

IGNORE = -100
I = IGNORE  # noqa: E741
PATHS = [[10, 11, 12, 2], [10, 11, 13, 2], [10, 14, 2], [20, 21, 2]]
V = 24
LABELS = torch.tensor([[I, I, 10, 11, 12, 2, I, I], [I, 20, 21, 2, I, I, I, I]])
CF_LABELS = torch.tensor([[I, 10, 11, 12, 2, I], [I, 20, 21, 2, I, I]])


@pytest.fixture(scope="module")
def trie() -> ItemTrie:
    return ItemTrie.from_token_ids(PATHS, vocab_size=V)


def _logits(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(shape, generator=g)


@pytest.fixture
def beta_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count the ``[0, 1]`` checks by argument name, wherever the loss path calls them."""
    seen: Counter[str] = Counter()
    real = checks.check_unit_interval

    def counting(name: str, value: float) -> float:
        seen[name] += 1
        return real(name, value)

    for mod in (checks, label_weights_mod, loss_mod, loss_func_mod):
        if hasattr(mod, "check_unit_interval"):
            monkeypatch.setattr(mod, "check_unit_interval", counting)
    yield seen


def test_igd_loss_checks_beta_once(trie: ItemTrie, beta_checks: Counter[str]) -> None:
    igd_loss(_logits(0, (2, 8, V)), LABELS, trie, 0.3)
    assert beta_checks["beta"] == 1


def test_igd_loss_from_log_probs_checks_beta_once(
    trie: ItemTrie, beta_checks: Counter[str]
) -> None:
    log_probs = torch.log_softmax(_logits(1, (2, 7, V)), -1)
    picked = log_probs.gather(-1, LABELS[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    igd_loss_from_log_probs(picked, LABELS, trie, 0.3)
    assert beta_checks["beta"] == 1


def test_pos_loss_checks_beta_once(beta_checks: Counter[str]) -> None:
    pos_loss(_logits(2, (2, 8, V)), LABELS, 0.3)
    assert beta_checks["beta"] == 1


@pytest.mark.parametrize("fn", ["igd_loss", "pos_loss"])
def test_bad_beta_still_raises(trie: ItemTrie, fn: str) -> None:
    """Removing the wrapper's check left the one in the weight function, with the same error."""
    logits = _logits(3, (2, 8, V))
    for bad in (-0.1, 1.5, float("nan"), None):
        with pytest.raises(ValueError, match="beta"):
            if fn == "igd_loss":
                igd_loss(logits, LABELS, trie, bad)  # type: ignore[arg-type]
            else:
                pos_loss(logits, LABELS, bad)  # type: ignore[arg-type]


def test_cft_weight_is_the_name() -> None:
    logits, cf_logits = _logits(4, (2, 8, V)), _logits(5, (2, 6, V))
    got = cft_loss(logits, LABELS, cf_logits, CF_LABELS, cft_weight=0.5)
    want = reference_cft_loss(
        logits.double().tolist(),
        LABELS.tolist(),
        cf_logits.double().tolist(),
        CF_LABELS.tolist(),
        0.5,
    )
    assert got.item() == pytest.approx(want, rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name never warns
        cft_loss(logits, LABELS, cf_logits, CF_LABELS, 0.5)
    with pytest.raises(ValueError, match="cft_weight"):
        cft_loss(logits, LABELS, cf_logits, CF_LABELS, cft_weight=-1.0)


def test_cft_loss_alpha_is_a_deprecated_alias() -> None:
    logits, cf_logits = _logits(6, (2, 8, V)), _logits(7, (2, 6, V))
    want = cft_loss(logits, LABELS, cf_logits, CF_LABELS, cft_weight=0.25)
    with pytest.warns(DeprecationWarning, match="cft_weight"):
        got = cft_loss(logits, LABELS, cf_logits, CF_LABELS, alpha=0.25)
    assert torch.equal(got, want)
    with pytest.raises(TypeError, match="cft_weight only"):
        cft_loss(logits, LABELS, cf_logits, CF_LABELS, cft_weight=0.5, alpha=0.25)


def test_loss_func_cft_weight_and_alias(trie: ItemTrie) -> None:
    assert IGDLossFunc(trie, loss="cft", cft_weight=0.3).cft_weight == 0.3
    assert IGDLossFunc(trie, loss="cft").cft_weight == 1.0
    with pytest.warns(DeprecationWarning, match="IGDLossFunc"):
        func = IGDLossFunc(trie, loss="cft", alpha=0.3)
    assert func.cft_weight == 0.3
    assert not hasattr(func, "alpha")  # one name per concept


def test_trainer_cft_weight_alias() -> None:
    """IGDTrainer takes ``cft_weight`` and warns on ``alpha`` (checked before the model is
    touched: the alias is resolved first)."""
    import inspect

    from igdbeam.training.trainer import IGDTrainer

    params = inspect.signature(IGDTrainer.__init__).parameters
    assert params["cft_weight"].default == 1.0
    assert params["alpha"].default is None
    with pytest.warns(DeprecationWarning, match="IGDTrainer"), pytest.raises(ValueError):
        IGDTrainer(alpha=0.3, loss="not-a-loss")  # the alias warns, then the bad loss raises


def test_loss_func_checks_beta_once_per_instance(trie: ItemTrie, beta_checks: Counter[str]) -> None:
    """IGDLossFunc checks beta when it is built; its micro-batch weights trust that check."""
    from types import SimpleNamespace

    func = IGDLossFunc(trie, 0.3, loss="igd")
    assert beta_checks["beta"] == 1
    out = SimpleNamespace(logits=_logits(8, (2, 8, V)))
    first = func(out, LABELS)
    second = func(out, LABELS)
    assert beta_checks["beta"] == 1
    assert torch.equal(first, second)
    assert first.item() == pytest.approx(igd_loss(out.logits, LABELS, trie, 0.3).item(), rel=1e-6)


def test_a_search_checks_alpha_and_temperature_once(trie: ItemTrie, monkeypatch) -> None:
    """igdbeam.generate checks alpha and temperature at its entry, not again at every step."""
    import igdbeam
    import igdbeam.decoding.arguments as arguments
    import igdbeam.decoding.inputs as inputs
    import igdbeam.ops.decode_steps as decode_steps
    from factories.models import tiny_llama

    seen: Counter[str] = Counter()
    for mod in (arguments, inputs):
        real = mod.check_real

        def counting(name: str, value: object, *a: object, _real=real, **k: object) -> float:
            seen[name] += 1
            return _real(name, value, *a, **k)

        monkeypatch.setattr(mod, "check_real", counting)
    for name in ("check_unit_interval", "check_temperature"):
        real_check = getattr(decode_steps, name)

        def counting_op(*a: object, _real=real_check, _name=name, **k: object) -> float:
            seen[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(decode_steps, name, counting_op)
    model = tiny_llama(V)
    ids = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 3]])
    out = igdbeam.generate(model, ids, torch.ones_like(ids), trie=trie, num_beams=3, alpha=0.2)
    assert out.item_ids.shape == (2, 3)
    assert seen["alpha"] == 1 and seen["temperature"] == 1
    assert seen["check_unit_interval"] == 0 and seen["check_temperature"] == 0
