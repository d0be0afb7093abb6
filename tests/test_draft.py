"""Drafted (prompt-lookup) decoding: the n-gram drafter, the acceptance rule, the auto policy,
the batch-cost calibration cache, and end to end on the real demo model."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from starchat_cli.engine.llamacpp import internals
from starchat_cli.engine.params import GenerationParams
from starchat_cli.engine.prompting.formats import Message
from starchat_cli.engine.speculative.calibrate import CurveCache, measure_curve
from starchat_cli.engine.speculative.lookup import NgramDrafter
from starchat_cli.engine.speculative.policy import DraftPolicy, best_draft, expected_tokens, relative_cost
from starchat_cli.engine.speculative.verify import accept_sampled, target_probs, verify_greedy, verify_sampled

CPU_CURVE = {1: 1.0, 2: 2.0, 4: 3.3, 8: 4.9, 16: 8.6}  # measured on this CPU (issue 13)
GPU_CURVE = {1: 1.0, 2: 1.02, 4: 1.05, 8: 1.1, 16: 1.3}  # memory-bound decoding


# -- the n-gram drafter ---------------------------------------------------------------


def test_drafter_proposes_what_followed_the_longest_recent_ngram() -> None:
    d = NgramDrafter([1, 2, 3, 4, 5, 9, 2, 3, 7, 8])
    d.extend([1, 2, 3])  # suffix 1 2 3: the 3-gram occurred at the start, followed by 4 5 9
    assert d.propose(3) == [4, 5, 9]
    assert d.propose(1) == [4]
    d2 = NgramDrafter([5, 2, 3, 7, 8, 6, 2, 3, 4, 4])
    d2.extend([9, 2, 3])  # only the 2-gram "2 3" matches: its most recent occurrence wins
    assert d2.propose(2) == [4, 4]


def test_drafter_no_match_and_min_n() -> None:
    d = NgramDrafter([1, 2, 3, 4])
    d.append(9)
    assert d.propose(4) == []  # a 1-gram is not enough (MIN_N = 2)
    assert NgramDrafter([1, 2, 3], min_n=1, max_n=2).propose(0) == []
    single = NgramDrafter([1, 2, 3, 1], min_n=1, max_n=2)
    assert single.propose(2) == [2, 3]


def test_drafter_index_is_incremental_and_sees_its_own_output() -> None:
    d = NgramDrafter([10, 11])
    for tok in [20, 21, 22, 23, 10, 11]:
        d.append(tok)
    assert d.propose(3) == [20, 21, 22]
    d.extend([20, 21, 99, 20, 21])  # "20 21" now last followed by 99
    assert d.propose(2) == [99, 20]


def test_drafter_uses_the_prediction_source_when_the_context_lacks_it() -> None:
    prediction = [7, 8, 9, 10, 11, 12]
    d = NgramDrafter([1, 2, 3, 8, 9], source=prediction)
    assert d.propose(3) == [10, 11, 12]
    assert NgramDrafter([1, 2, 3, 8, 9]).propose(3) == []


def test_drafter_is_linear_not_quadratic() -> None:
    import time

    tokens = list(np.random.default_rng(0).integers(0, 50, 20000))
    t0 = time.perf_counter()
    d = NgramDrafter(tokens[:10000])
    for tok in tokens[10000:]:
        d.append(int(tok))
        d.propose(8)
    assert time.perf_counter() - t0 < 5.0  # a rescan per step would be ~10^8 tuple builds


# -- the acceptance rule ------------------------------------------------------------


def _empirical(probs: np.ndarray, drafted: int, trials: int = 20000) -> np.ndarray:
    rng = np.random.default_rng(1234)
    counts = np.zeros(len(probs))
    for _ in range(trials):
        _, tok = accept_sampled(probs, drafted, rng)
        counts[tok] += 1
    return counts / trials


@pytest.mark.parametrize("drafted", [0, 4])  # a high- and a low-probability draft
def test_acceptance_rule_keeps_the_target_distribution(drafted: int) -> None:
    probs = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    freq = _empirical(probs, drafted)
    assert np.abs(freq - probs).max() < 0.015, freq  # 4+ standard errors at 20k trials
    # the naive rule (keep the draft whenever it is in the top-p set) would give p(x) = 1
    assert freq[drafted] < 0.55


def test_acceptance_rate_equals_the_drafts_probability() -> None:
    probs = np.array([0.1, 0.6, 0.3])
    rng = np.random.default_rng(7)
    hits = sum(accept_sampled(probs, 1, rng)[0] for _ in range(20000))
    assert abs(hits / 20000 - 0.6) < 0.015


def test_target_probs_top_p_then_temperature() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    p = target_probs(logits, 1.0, 0.75)  # keeps the top two (0.5 + 0.3 passes 0.75)
    assert p[2] == 0 and p[3] == 0
    assert p[0] == pytest.approx(0.5 / 0.8) and p[1] == pytest.approx(0.3 / 0.8)
    cold = target_probs(logits, 0.5, 1.0)
    assert cold[0] == pytest.approx(0.25 / (0.25 + 0.09 + 0.0225 + 0.0025))
    for scale in (1.0, 8.0):  # the full-sort fallback (flat) and the argpartition shortcut (peaked)
        big = np.random.default_rng(3).normal(size=5000) * scale
        assert target_probs(big, 0.7, 0.95) == pytest.approx(_reference_probs(big, 0.7, 0.95), abs=1e-12)


def _reference_probs(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep, total = [], 0.0
    for i in order:
        keep.append(i)
        total += p[i]
        if total >= top_p:
            break
    out = np.zeros(len(logits))
    z = logits[keep] / temperature
    e = np.exp(z - z.max())
    out[keep] = e / e.sum()
    return out


def test_verify_greedy_and_sampled_on_rows() -> None:
    rows = np.array([[0, 5, 1], [9, 0, 1], [0, 0, 3], [1, 0, 0]], dtype=float)
    assert verify_greedy(rows, [1, 0, 2]) == (3, 0)  # all accepted + the bonus token
    assert verify_greedy(rows, [1, 2, 2]) == (1, 0)  # the second draft is not the argmax: 0 instead
    sharp = rows * 100  # near one-hot: sampling agrees with greedy
    rng = np.random.default_rng(0)
    assert verify_sampled(sharp, [1, 0, 2], 1.0, 1.0, rng) == (3, 0)
    assert verify_sampled(sharp, [2], 1.0, 1.0, rng) == (0, 1)


# -- the auto policy -----------------------------------------------------------------


def test_expected_tokens_and_cost_interpolation() -> None:
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)
    assert expected_tokens(1.0, 3) == 4
    assert relative_cost(CPU_CURVE, 3) == pytest.approx(2.65)
    assert relative_cost(CPU_CURVE, 32) == pytest.approx(8.6 + (8.6 - 4.9) / 8 * 16)


def test_auto_stays_out_of_the_way_on_a_near_linear_curve() -> None:
    policy = DraftPolicy("auto", CPU_CURVE)
    assert policy.length() == 0
    for _ in range(30):  # even a good 80% acceptance does not pay at this cost
        policy.observe(4, 4)
        policy.observe(4, 2)
    assert 0.7 < policy.rate < 0.9
    assert policy.length() == 0


def test_auto_drafts_on_a_flat_curve_and_stops_when_drafts_fail() -> None:
    policy = DraftPolicy("auto", GPU_CURVE)
    assert policy.length() > 0  # even the prior acceptance pays when a batch costs ~1 token
    for _ in range(200):
        policy.observe(8, 0)
    assert policy.length() == 0
    k, gain = best_draft(0.9, GPU_CURVE)
    assert k >= 8 and gain > 3
    assert best_draft(0.99, {1: 1.0, 2: 1.05})[0] == 1  # no guess beyond the measured sizes


def test_auto_learns_from_shadow_drafts() -> None:
    policy = DraftPolicy("auto", {1: 1.0, 2: 1.6, 4: 2.2, 8: 3.0, 16: 5.0})
    before = policy.length()
    for _ in range(60):  # the lookup would have been right every time
        policy.shadow([1, 2, 3, 4])
        for tok in [1, 2, 3, 4]:
            policy.shadow_next(tok)
    assert policy.rate > 0.95
    assert policy.length() > before


def test_on_adapts_k_off_never() -> None:
    on = DraftPolicy("on")
    start = on.length()
    for _ in range(50):
        on.observe(on.length(), on.length())
    assert on.length() > start
    for _ in range(100):
        on.observe(on.length(), 0)
    assert on.length() == 1
    assert DraftPolicy("off", GPU_CURVE).length() == 0
    with pytest.raises(ValueError):
        DraftPolicy("sometimes")


# -- the calibration cache ------------------------------------------------------------


def test_measure_curve_is_relative_to_one_token() -> None:
    import time

    def run(size: int) -> None:
        time.sleep(0.02 * size)

    curve = measure_curve(run, sizes=(1, 2, 4), repeats=3)
    assert curve[1] == 1.0
    assert 1.4 < curve[2] < 2.6 and 2.8 < curve[4] < 5.5


def test_curve_cache_roundtrip_and_corrupt_file(tmp_path: Path) -> None:
    cache = CurveCache(tmp_path / "sub" / "cost.json")
    assert cache.get("k") is None
    cache.put("k", {1: 1.0, 2: 1.9}, 0.2)
    assert CurveCache(cache.path).get("k") == {1: 1.0, 2: 1.9}
    assert list(cache.path.parent.iterdir()) == [cache.path]  # no temp file left
    cache.path.write_text("{not json")
    assert cache.get("k") is None
    cache.path.write_text(json.dumps({"k": {"curve": {"1": "x"}}}))
    assert cache.get("k") is None


# -- end to end on the demo model ------------------------------------------------------

CODE = "\n".join(
    f"def py_make_scanner_{i}(text):\n    return py_make_scanner(text, {i}) + [{i}]" for i in range(2)
)  # short enough that prompt + reply stay within 256 KV cells, where batches are exact on any CPU
EDIT = (
    "Rewrite this file, renaming py_make_scanner to make_python_scanner everywhere. "
    f"Reply with the whole file in a code block.\n\n```python\n{CODE}\n```"
)
PROMPTS = [EDIT, "Write a short poem about autumn leaves.", "Repeat after me: one two three, one two three."]


def _gen(engine, prompt: str, **kw):
    params = GenerationParams(temperature=kw.pop("temperature", 0.0), **kw)
    gen = engine.generate([Message("user", prompt)], params)
    text = "".join(gen)
    return text, gen.stats


@pytest.fixture
def engine(demo_engine, demo_backend, tmp_path: Path):
    """A fresh engine on the shared model: its cost curve, stops and where batches are exact are
    learnt afresh by each test, the curve cached in ``tmp_path / "cost.json"``."""
    from starchat_cli.engine.llamacpp.engine import LocalEngine

    cache = CurveCache(tmp_path / "cost.json")
    fmt, system = demo_engine.prompt_format, demo_engine.info.default_system
    return LocalEngine(demo_backend, fmt, system, curve_cache=cache)


def restarted(engine, backend, tmp_path: Path):
    """The engine as a new process makes it: the same model file and cost-curve cache, nothing
    learnt in memory."""
    from starchat_cli.engine.llamacpp.engine import LocalEngine

    cache = CurveCache(tmp_path / "cost.json")
    return LocalEngine(backend, engine.prompt_format, engine.default_system, curve_cache=cache)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_drafted_text_equals_plain(engine, prompt: str) -> None:
    plain, s0 = _gen(engine, prompt, max_tokens=70, draft="off")
    drafted, s1 = _gen(engine, prompt, max_tokens=70, draft="on")
    assert drafted == plain
    assert s1.generated_tokens == s0.generated_tokens and s1.stop_reason == s0.stop_reason
    # plain: one pass per token after the first, and one more when a stop token was sampled
    assert s0.decode_steps == s0.generated_tokens - (s0.stop_reason == "length") and s0.drafted_tokens == 0
    if prompt == EDIT:
        assert s1.accepted_tokens > 10 and s1.decode_steps < s0.decode_steps
    assert s1.accepted_tokens <= s1.drafted_tokens


def _recorded(engine, monkeypatch):
    """Wrap the engine's token source: every (token, drafted) pair the loop consumed."""
    seen: list[tuple[int, bool]] = []
    original = type(engine)._source

    def source(self, *args, **kwargs):
        for pair in original(self, *args, **kwargs):
            seen.append(pair)
            yield pair

    monkeypatch.setattr(type(engine), "_source", source)
    return seen


def _mid_run_indexes(seen: list[tuple[int, bool]]) -> list[int]:
    """Positions inside accepted runs: drafted, with drafted tokens after them."""
    found = [i for i in range(10, len(seen) - 2) if seen[i][1] and seen[i + 1][1] and seen[i + 2][1]]
    assert found, "no accepted run of 3 tokens in the edit reply"
    return found


def test_token_stop_and_max_tokens_inside_an_accepted_run(engine, demo_backend, monkeypatch) -> None:
    seen = _recorded(engine, monkeypatch)
    _gen(engine, EDIT, max_tokens=80, draft="on")
    tokens = [t for t, _ in seen]
    j = _mid_run_indexes(seen)[0]
    plain_n, _ = _gen(engine, EDIT, max_tokens=j + 1, draft="off")
    seen.clear()
    text_n, s = _gen(engine, EDIT, max_tokens=j + 1, draft="on")
    assert text_n == plain_n and s.generated_tokens == j + 1 and s.stop_reason == "length"
    assert s.accepted_tokens > 0 and len(seen) == j + 1  # nothing past the limit was handed out
    backend = demo_backend
    assert backend.n_past <= s.prompt_tokens + s.generated_tokens  # drafts after the cut were dropped
    # a token-id stop at the first occurrence of tokens[j], also inside the run
    first = tokens.index(tokens[j])
    engine._stops()
    engine._stop_ids = frozenset({*engine._stop_ids, tokens[j]})
    seen.clear()
    text_s, s2 = _gen(engine, EDIT, max_tokens=80, draft="on")
    assert s2.stop_reason == "stop" and s2.generated_tokens == first
    plain_s, p2 = _gen(engine, EDIT, max_tokens=80, draft="off")
    assert text_s == plain_s and p2.generated_tokens == first
    assert backend.n_past <= s2.prompt_tokens + s2.generated_tokens
    kept = internals.tokens(backend.load())
    assert kept[s2.prompt_tokens :] == tokens[: backend.n_past - s2.prompt_tokens]


def test_text_stop_inside_an_accepted_run(engine, demo_backend, monkeypatch) -> None:
    seen = _recorded(engine, monkeypatch)
    full, _ = _gen(engine, EDIT, max_tokens=80, draft="on")
    backend = demo_backend
    for j in _mid_run_indexes(seen):  # a stop whose first occurrence ends inside a run
        upto = b"".join(backend.piece(t) for t, _ in seen[: j + 1]).decode("utf-8", "replace")
        stop = upto[-8:]
        if stop.strip() and upto.find(stop) == len(upto) - len(stop):
            break
    else:
        raise AssertionError("no unique stop text inside an accepted run")
    seen.clear()
    text, s = _gen(engine, EDIT, max_tokens=80, draft="on", stop=(stop,))
    assert seen[-1][1] is True  # the stop was completed by an accepted drafted token
    plain, p = _gen(engine, EDIT, max_tokens=80, draft="off", stop=(stop,))
    assert text == plain and s.stop_reason == "stop" == p.stop_reason
    assert stop not in text and len(text) < len(full)
    assert s.generated_tokens == p.generated_tokens


def test_cancel_between_batches(engine) -> None:
    cancel = threading.Event()
    gen = engine.generate([Message("user", EDIT)], GenerationParams(temperature=0, draft="on"), cancel=cancel)
    pieces = []
    for piece in gen:
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
            steps = gen.stats.decode_steps
    assert gen.stats.stop_reason == "cancelled"
    assert gen.stats.decode_steps == steps  # no forward pass after the cancel
    assert gen.stats.generated_tokens < 60


def test_sampled_drafting_with_a_seed_is_valid_and_repeatable(engine) -> None:
    a, s = _gen(engine, EDIT, max_tokens=60, draft="on", temperature=0.7, seed=11)
    b, _ = _gen(engine, EDIT, max_tokens=60, draft="on", temperature=0.7, seed=11)
    assert a == b and a.strip()
    assert s.stop_reason in ("stop", "length") and s.drafted_tokens > 0
    assert 0 < s.generated_tokens <= 60


def test_prompt_cache_reuses_the_prefix_after_a_drafted_reply(engine, demo_backend) -> None:
    params = GenerationParams(temperature=0, max_tokens=50, draft="on")
    gen = engine.generate([Message("user", EDIT)], params)
    reply = "".join(gen)
    first = gen.stats
    kept = internals.tokens(demo_backend.load())
    assert kept[: first.prompt_tokens] == engine.render_tokens(
        engine.build_messages([Message("user", EDIT)], None)
    )
    turns = [Message("user", EDIT), Message("assistant", reply), Message("user", "Thanks. Now explain it.")]
    again = engine.generate(turns, GenerationParams(temperature=0, max_tokens=5, draft="on"))
    "".join(again)
    assert again.stats.cached_from == "memory"
    assert again.stats.cached_tokens >= first.prompt_tokens


def test_auto_measures_after_the_first_reply_caches_and_remeasures_a_corrupt_file(
    engine, demo_backend, monkeypatch, tmp_path
) -> None:
    import starchat_cli.engine.speculative.calibrate as calibrate

    calls, events = [], []
    real = calibrate.measure_curve

    def counting(run_batch):
        calls.append(1)

        def recorded(size: int):
            took = run_batch(size)
            events.append("batch")
            return took

        return real(recorded, sizes=(1, 2, 4), repeats=1)

    monkeypatch.setattr(calibrate, "measure_curve", counting)
    plain, _ = _gen(engine, EDIT, max_tokens=40, draft="off")
    gen = engine.generate(
        [Message("user", EDIT)], GenerationParams(temperature=0.0, max_tokens=40, draft="auto")
    )
    for _chunk in gen:
        events.append("chunk")
    # The first reply never waits for the measurement: it decodes without drafting (same text) and
    # every measured batch runs after its last chunk, once it has released the model.
    assert gen.text == plain and gen.stats.drafted_tokens == 0
    curve = engine.auto_curve.wait(timeout=60)
    assert curve is not None and curve[1] == 1.0 and len(calls) == 1
    assert "batch" in events and events.index("batch") > max(i for i, e in enumerate(events) if e == "chunk")
    data = json.loads((tmp_path / "cost.json").read_text())
    (entry,) = data.values()
    assert entry["curve"]["1"] == 1.0 and "4" in entry["curve"]
    text, _ = _gen(engine, EDIT, max_tokens=40, draft="auto")  # the measured curve, no new measurement
    assert text == plain and len(calls) == 1
    _gen(restarted(engine, demo_backend, tmp_path), EDIT, max_tokens=5, draft="auto")  # the file is reused
    assert len(calls) == 1
    (tmp_path / "cost.json").write_text("garbage")
    again = restarted(engine, demo_backend, tmp_path)
    _gen(again, EDIT, max_tokens=5, draft="auto")
    assert again.auto_curve.wait(timeout=60) is not None and len(calls) == 2
    assert json.loads((tmp_path / "cost.json").read_text())


# -- where a drafted batch is exact (engine/speculative/exact_batches.py) ----------------------------------


class _ViewBackend:
    """A stand-in decoder whose batched rows differ from one-token steps once the attention
    view reaches ``split_from`` cells (as llama.cpp's split-KV attention does with 2+ threads)."""

    def __init__(self, n_past: int, split_from: int = 512, n_ctx: int = 2048) -> None:
        self.n_past, self.split_from, self.n_ctx = n_past, split_from, n_ctx
        self.calls: list[str] = []
        self._last = None

    def _logits(self, token: int, pos: int, batched: bool) -> np.ndarray:
        from starchat_cli.engine.speculative.exact_batches import ExactBatches

        row = np.full(8, float(token * 1000 + pos), dtype=np.float32)
        if batched and ExactBatches(self).view(pos + 1) >= self.split_from:
            row[0] += 1e-3
        return row

    def decode_one(self, token: int) -> None:
        self.calls.append("one")
        self._last = self._logits(token, self.n_past, False)
        self.n_past += 1

    def last_logits(self) -> np.ndarray:
        return self._last.copy()

    def decode_batch(self, tokens) -> np.ndarray:
        self.calls.append(f"batch{len(tokens)}")
        rows = [self._logits(t, self.n_past + i, True) for i, t in enumerate(tokens)]
        self.n_past += len(tokens)
        return np.stack(rows)

    def truncate(self, n: int) -> None:
        self.n_past = min(self.n_past, n)


def test_exact_batches_checks_once_per_view_and_never_crosses_one() -> None:
    from starchat_cli.engine.speculative.exact_batches import ExactBatches

    backend = _ViewBackend(n_past=100)
    exact = ExactBatches(backend)
    assert exact.room(5, [6, 7, 8]) == 3 and backend.n_past == 100  # checked, sequence as it was
    assert backend.calls == ["one", "one", "batch2"]
    assert exact.room(5, [6, 7, 8]) == 3 and len(backend.calls) == 3  # the view's verdict is kept
    backend.n_past = 250  # the batch may not run past cell 256, the end of this view
    assert exact.room(5, list(range(10))) == 5
    backend.n_past = 255  # [token, draft] fills cells 255 and 256: the 512-cell view, checked there
    assert exact.room(5, [6]) == 0 and exact.failed_here() and backend.n_past == 255
    assert backend.calls[3:] == ["one", "one", "batch2"]
    backend.n_past = 300  # the same view: its verdict is kept, nothing evaluated
    assert exact.room(5, [6, 7]) == 0 and exact.failed_here() and len(backend.calls) == 6
    assert exact.verdicts == {256: True, 512: False}
    assert exact.room(5, []) == 0


def test_drafting_stops_where_batches_are_not_exact(engine, monkeypatch) -> None:
    """A check that fails (forced here) turns every drafted step into a plain one, and says where."""
    from starchat_cli.engine.speculative.exact_batches import ExactBatches

    monkeypatch.setattr(ExactBatches, "check", lambda self, tokens: False)
    plain, s0 = _gen(engine, EDIT, max_tokens=60, draft="off")
    drafted, s1 = _gen(engine, EDIT, max_tokens=60, draft="on")
    assert drafted == plain
    assert s1.accepted_tokens == 0 and s1.drafted_tokens == 0 and s1.decode_steps == s0.decode_steps
    assert s1.draft_stopped_at >= s1.prompt_tokens and s0.draft_stopped_at == 0


def test_greedy_drafted_text_equals_plain_past_512_cells(engine, demo_backend) -> None:
    """Issue 23's case: a prompt of more than 256 tokens, so that the attention reads 512 KV
    cells, on two threads: llama.cpp's one-token steps then add the attention in another order
    than a batch does, and drafted text used to differ from plain text from character 76 on."""
    import json.scanner

    source = Path(json.scanner.__file__).read_text()
    prompt = (
        f"```python\n{source}\n```\n\n"
        "Repeat this code exactly, then rename py_make_scanner to make_python_scanner."
    )
    demo_backend.truncate(0)  # both runs evaluate the whole prompt: only drafting differs
    plain, s0 = _gen(engine, prompt, max_tokens=120, draft="off")
    demo_backend.truncate(0)
    drafted, s1 = _gen(engine, prompt, max_tokens=120, draft="on")
    assert s0.prompt_tokens > 256 and s0.cached_tokens == s1.cached_tokens == 0
    assert drafted == plain
    assert s1.generated_tokens == s0.generated_tokens
