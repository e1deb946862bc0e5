"""Issue 29, parts 1 and 2: price bases with their published sources (`--price-basis all`),
and build against buy (embedding API list prices beside the measured plan). Rows are made
here; nothing touches the network."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_plan import MONTH, cpu_rows, demand, frame, row, write_store

from analysis import buy as buying
from analysis.planner import PlanError, make_plan
from analysis.planview import plan_tables
from analysis.references import BUY_MARKER
from harness import hardware
from harness.plan import main

INF2 = hardware.PROFILES["inf2"].price_per_hour


def inf2_row(**kw) -> dict:
    """A measured inf2 point (neuron bf16) at the HF on-demand price it was measured at."""
    where = {"hw_type": "inf2", "host_name": "inf2-box", "price_per_hour": INF2}
    what = {"engine": "neuron", "image": "neuron/bf16", "precision": "bf16", "batch_size": 16}
    speed = {"throughput_req_per_sec": 500.0, "p99_latency_ms": 20.0}
    return row(**{**where, **what, **speed, **kw})


def embedding_row(**kw) -> dict:
    """A measured CPU embedding point whose inputs averaged 100 tokens."""
    what = {"task": "embedding", "model_name": "gte-modernbert", "batch_size": 1}
    speed = {"throughput_req_per_sec": 20.0, "p99_latency_ms": 50.0, "avg_tokens": 100.0}
    return row(**{**what, **speed, **kw})


def api(*prices: tuple[str, float, float | None]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(
                provider="OpenAI",
                model=m,
                usd_per_1m_tokens=std,
                usd_per_1m_tokens_batch=batch,
                source=f"test: {m} price page",
                date="2026-12",
            )
            for m, std, batch in prices
        ]
    )


def one_line_refusal(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# -- price bases --------------------------------------------------------------------------------


def test_a_reserved_inf2_plan_uses_the_published_ri_effective_rate():
    rows = frame(inf2_row())
    o = make_plan(rows, demand(basis="reserved")).options[0]
    assert o.price_per_hour == 0.328
    assert o.monthly_cost == pytest.approx(o.instances * 0.328 * MONTH)
    assert "RI-Effective hourly rate" in o.price_source and "Neuron" in o.price_source
    assert o.price_source.endswith("(2024-09-16)")
    # the same instances on demand cost the HF on-demand price
    od = make_plan(rows, demand()).options[0]
    assert od.instances == o.instances and od.price_per_hour == INF2


def test_the_published_ri_rate_reproduces_awss_printed_inf2_costs():
    refs = pd.read_csv(buying.references.PUBLISHED)
    aws = refs[refs["reference_id"].str.startswith("aws-inf2")]
    for cost, thr in zip(aws["cost_per_1m_inf"], aws["throughput_req_per_sec"], strict=True):
        assert round(0.328 * 1e6 / (3600 * thr), 3) == pytest.approx(cost)


def test_a_basis_without_a_figure_is_refused_in_one_line_with_its_reason(tmp_path, capsys):
    store = write_store(tmp_path / "cpu-box", cpu_rows())
    argv = [str(store), "--rate", "100", "--p99-ms", "100"]
    for basis in ("reserved", "spot"):
        err = one_line_refusal(capsys, [*argv, "--price-basis", basis])
        assert f"no {basis} price for cpu (its profile has no published figure)" in err
        assert "pass --price cpu=<$/hr>" in err
    # inf2 has a reserved figure but no spot one
    with pytest.raises(PlanError, match="no spot price for inf2"):
        make_plan(frame(inf2_row()), demand(basis="spot"))


def test_price_basis_all_shows_the_three_bases_side_by_side(tmp_path, capsys):
    store = write_store(tmp_path / "box", [*cpu_rows(), inf2_row()])
    argv = [str(store), "--rate", "100", "--peak", "2", "--p99-ms", "100", "--price-basis", "all"]
    assert main([*argv, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["demand"]["price_basis"] == "on-demand"  # the plan itself; the bases beside it
    by_hw = {b["hw_type"]: b for b in out["price_bases"]}
    assert set(by_hw) == {"cpu", "inf2"}
    inf2 = by_hw["inf2"]["bases"]
    n = by_hw["inf2"]["instances"]
    assert inf2["on-demand"]["monthly_cost"] == pytest.approx(n * INF2 * MONTH)
    assert inf2["reserved"]["monthly_cost"] == pytest.approx(n * 0.328 * MONTH)
    assert inf2["reserved"]["effective_cost_per_1b"] == pytest.approx(
        n * 0.328 * MONTH / (100 * MONTH * 3600 / 1e9)
    )
    assert inf2["spot"] == {
        "refused": "no spot price for inf2: no published figure; pass --price inf2=<$/hr>"
    }
    assert "refused" in by_hw["cpu"]["bases"]["reserved"]
    # the table: every basis a $/1B and a $/month column, "—" with the reason where refused
    plan = make_plan(frame(*cpu_rows(), inf2_row()), demand(), all_bases=True)
    t = next(t for t in plan_tables(plan) if t.caption.startswith("price bases side by side"))
    for basis in ("on-demand", "reserved", "spot"):
        assert f"{basis} $/1B" in t.headers and f"{basis} $/month" in t.headers
    cells = dict(zip(t.headers, next(r for r in t.rows if r[2] == "inf2"), strict=True))
    assert cells["spot $/1B"] == "—" and "no published figure" in cells["spot $/month"]
    assert cells["reserved $/month"].startswith("$")
    # the default plan is unchanged: no bases table, no price_bases key
    assert main([*argv[:-2], "--format", "json"]) == 0
    assert "price_bases" not in json.loads(capsys.readouterr().out)


# -- build against buy --------------------------------------------------------------------------


def test_buy_rows_convert_api_prices_with_the_measured_tokens_per_input():
    rows = frame(embedding_row())
    d = demand()
    plan = make_plan(rows, d, api_prices=api(("text-embedding-3-small", 0.02, 0.01)))
    std, batch = plan.buy
    # 100 tokens × 1e9 inputs × $0.02 / 1M tokens = $2,000 per 1B; batch at $0.01: $1,000
    assert (std.tier, std.cost_per_1b) == ("standard", pytest.approx(2000.0))
    assert (batch.tier, batch.cost_per_1b) == ("batch", pytest.approx(1000.0))
    month_of_inputs = d.rate * MONTH * 3600
    assert std.monthly_cost == pytest.approx(2000.0 * month_of_inputs / 1e9)
    build = plan.best("embedding", "gte-modernbert").effective_cost_per_1b
    assert std.build_cost_per_1b == build
    assert std.ratio == pytest.approx(2000.0 / build)
    assert std.tokens_per_input == 100.0
    assert std.tokens_from == "median avg_tokens of 1 measured row(s)"
    expect = f"build is {2000 / build:,.1f}× cheaper" if build < 2000 else "buy is"
    assert std.verdict.startswith(expect)


def test_the_verdict_says_which_side_is_cheaper_and_by_how_much():
    def opt(buy: float, build: float) -> buying.BuyOption:
        o = buying.BuyOption(*(["x"] * 4), "standard", 0.02, 100.0, "x", buy, 0.0, build, "x",
                             buy / build, "x", "x")  # fmt: skip
        return o

    assert opt(2000.0, 500.0).verdict == "build is 4.0× cheaper"
    assert opt(500.0, 2000.0).verdict == "buy is 4.0× cheaper"


def test_tokens_per_input_is_the_median_of_the_rows_and_says_so():
    rows = frame(
        embedding_row(avg_tokens=80.0),
        embedding_row(batch_size=8, avg_tokens=100.0, throughput_req_per_sec=25.0),
        embedding_row(batch_size=16, avg_tokens=150.0, throughput_req_per_sec=30.0),
    )
    tokens, how = buying.tokens_per_input(rows)
    assert tokens == 100.0 and how == "median avg_tokens of 3 measured row(s), range 80.0–150.0"


def test_no_buy_rows_for_classification_and_only_embeddings_get_them():
    prices = api(("text-embedding-3-small", 0.02, None))
    assert make_plan(frame(*cpu_rows()), demand(), api_prices=prices).buy == []
    mixed = make_plan(frame(*cpu_rows(), embedding_row()), demand(), api_prices=prices)
    assert {(b.task, b.model_name) for b in mixed.buy} == {("embedding", "gte-modernbert")}
    assert [b.tier for b in mixed.buy] == ["standard"]  # no batch tier offered: none shown
    tables = plan_tables(mixed)
    buy = next(t for t in tables if t.caption.startswith(BUY_MARKER))
    assert all(r[0] == BUY_MARKER and r[1] == "embedding" for r in buy.rows)
    assert set(buy.classes) == {"buy"}


def test_buy_rows_are_never_ranked_or_the_answer_even_when_cheaper(tmp_path, capsys):
    # a slow CPU row: the API is far cheaper, and still the plan answers with a measured row
    rows = frame(embedding_row(throughput_req_per_sec=1.0))
    plan = make_plan(rows, demand(), api_prices=api(("text-embedding-3-small", 0.02, 0.01)))
    assert all(b.cost_per_1b < b.build_cost_per_1b for b in plan.buy)
    assert [o.hw_type for o in plan.options] == ["cpu"] and plan.options[0].rank == 1
    assert not any(isinstance(o, buying.BuyOption) for o in plan.options)
    assert plan.buy[0].verdict.startswith("buy is")
    # the CLI: buy rows only with --references, in their own JSON key, each with its source
    store = write_store(tmp_path / "box", [embedding_row(throughput_req_per_sec=1.0)])
    argv = [str(store), "--rate", "100", "--p99-ms", "100", "--format", "json"]
    assert main(argv) == 0
    assert "buy" not in json.loads(capsys.readouterr().out)
    assert main([*argv, "--references"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {p["hw_type"] for p in out["plans"]} == {"cpu"}
    small = [b for b in out["buy"] if b["api_model"] == "text-embedding-3-small"]
    assert {b["tier"]: b["cost_per_1b"] for b in small} == {
        "standard": pytest.approx(2000.0),
        "batch": pytest.approx(1000.0),
    }
    assert all(b["buy"] and b["source"] and b["date"] and b["verdict"] for b in out["buy"])


def test_console_names_the_buy_rows_their_sources_and_the_ratio(tmp_path, capsys):
    store = write_store(tmp_path / "box", [embedding_row()])
    assert main([str(store), "--rate", "100", "--p99-ms", "100", "--references"]) == 0
    out = capsys.readouterr().out
    assert f"{BUY_MARKER} OpenAI text-embedding-3-small (standard, $0.02/1M tokens × 100.0" in out
    assert "$2,000.00 per 1B" in out and "× cheaper" in out
    assert f"{BUY_MARKER} OpenAI text-embedding-3-small: OpenAI API docs" in out


def test_shipped_api_prices_have_sources_dates_and_the_cited_figures():
    df = buying.read_api_prices().set_index("model")
    assert df.loc["text-embedding-3-small", "usd_per_1m_tokens"] == 0.02
    assert df.loc["text-embedding-3-small", "usd_per_1m_tokens_batch"] == 0.01
    assert df.loc["text-embedding-3-large", "usd_per_1m_tokens"] == 0.13
    assert df.loc["text-embedding-3-large", "usd_per_1m_tokens_batch"] == 0.065
    assert df["source"].str.len().gt(20).all() and df["date"].notna().all()


@pytest.mark.parametrize(
    "change,why",
    [
        ({"usd_per_1m_tokens": 0.0}, "a price must be > 0"),
        ({"source": None}, "needs its source and date"),
    ],
)
def test_api_price_file_is_refused_when_it_breaks_its_contract(tmp_path, change, why):
    bad = api(("m", 0.02, None)).assign(**change)
    path = tmp_path / "api.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(buying.BuyError, match=why):
        buying.read_api_prices(path)
