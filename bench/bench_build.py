"""Benchmark: the point-in-time feature + label build against one hand-written DuckDB query.

Simulates a program with ~10M raw events, then times (a) partnerscore's build of the stacked
training set (features from before each as_of, labels from the horizon) on the in-memory tables
and (b) a single DuckDB SQL query computing comparable aggregates per snapshot (counts, sums,
windowed counts and sums, first/last dates and values, medians, gaps, active periods, trends,
labels) over the same frames. Prints both (wall and CPU time, fastest of ``--repeat`` interleaved
runs), the ratios, and per-column agreement between the two. Loading (CSV parse and contract validation with ``load_raw``) is timed separately and is
not part of either figure.

    .venv/bin/python bench/bench_build.py [--partners 60000] [--event-scale 2.0] [--skip-load]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import duckdb  # noqa: E402
import pandas as pd  # noqa: E402

from partnerscore.features.config import BuildConfig, SimulateConfig  # noqa: E402
from partnerscore.features.pipeline import (  # noqa: E402
    build_features,
    build_labels,
    build_training_set,
    make_snapshots,
)
from partnerscore.features.simulate import simulate_program, write_tables  # noqa: E402
from partnerscore.features.validate import RawData, load_raw  # noqa: E402

QUERY = """
with s as (
    select partner_id, as_of, signed_at, as_of - interval 30 day as w30,
           as_of - interval 90 day as w90, as_of + interval 180 day as h_end,
           -- trend halves: the last min(90 days, age) before as_of, cut in two
           least(greatest(date_diff('second', signed_at, as_of), 0), 90 * 86400) // 2 as half,
           ceil(date_diff('second', signed_at, as_of) / (30 * 86400)) as elapsed
    from snaps
),
s2 as (
    select *, as_of - to_seconds(half) as t_mid, as_of - to_seconds(2 * half) as t_lo from s
),
act as (
    select s.partner_id, s.as_of,
           count(*) as n, count(*) filter (where a.occurred_at >= s.w30) as n30,
           count(*) filter (where a.occurred_at >= s.w90) as n90,
           count(*) filter (where a.activity_type in ('co_sell', 'joint_event')) as collab,
           median(a.response_hours) filter (
               where a.occurred_at + to_seconds(a.response_hours * 3600) < s.as_of) as resp,
           min(a.occurred_at) as first_t, max(a.occurred_at) as last_t,
           count(distinct date_diff('second', s.signed_at, a.occurred_at) // (30 * 86400))
               filter (where a.occurred_at >= s.signed_at) as periods,
           count(*) filter (where a.occurred_at >= s.t_lo and a.occurred_at < s.t_mid) as t_a,
           count(*) filter (where a.occurred_at >= s.t_mid) as t_b
    from s2 s join activities a on a.partner_id = s.partner_id and a.occurred_at < s.as_of
    group by all
),
portal as (
    select s.partner_id, s.as_of, count(*) as n,
           count(*) filter (where p.occurred_at >= s.w30) as n30,
           count(*) filter (where p.occurred_at >= s.w90) as n90, max(p.occurred_at) as last_t,
           count(distinct date_diff('second', s.signed_at, p.occurred_at) // (30 * 86400))
               filter (where p.occurred_at >= s.signed_at) as periods,
           count(*) filter (where p.occurred_at >= s.t_lo and p.occurred_at < s.t_mid) as t_a,
           count(*) filter (where p.occurred_at >= s.t_mid) as t_b
    from s2 s join portal_events p on p.partner_id = s.partner_id and p.occurred_at < s.as_of
    group by all
),
tr as (
    select s.partner_id, s.as_of, count(*) as enrolled,
           count(*) filter (where t.completed_at < s.as_of) as completed,
           count(*) filter (where t.completed_at < s.as_of and t.is_certification) as certs,
           min(t.completed_at) filter (where t.completed_at < s.as_of) as first_done,
           max(t.completed_at) filter (where t.completed_at < s.as_of) as last_done,
           count(*) filter (where t.completed_at < s.as_of and t.completed_at >= s.w90) as done90
    from s join trainings t on t.partner_id = s.partner_id and t.enrolled_at < s.as_of
    group by all
),
ld as (
    select s.partner_id, s.as_of, count(*) as created,
           count(*) filter (where l.qualified_at < s.as_of) as qualified,
           count(*) filter (where l.qualified_at < s.as_of and l.qualified_at >= s.w30) as q30,
           count(*) filter (where l.converted_at < s.as_of) as converted, min(l.created_at) as first_t,
           max(l.created_at) as last_t, count(*) filter (where l.created_at >= s.w90) as n90
    from s join leads l on l.partner_id = s.partner_id and l.created_at < s.as_of
    group by all
),
dl as (
    select s.partner_id, s.as_of, count(*) as created,
           count(*) filter (where d.closed_at < s.as_of and d.status = 'won') as won,
           sum(d.amount) filter (where d.closed_at < s.as_of and d.status = 'won') as won_amount,
           count(*) filter (where d.closed_at < s.as_of) as closed,
           median(date_diff('second', d.created_at, d.closed_at) / 86400)
               filter (where d.closed_at < s.as_of) as cycle,
           sum(d.amount) filter (where d.closed_at is null or d.closed_at >= s.as_of) as pipeline,
           min(d.closed_at) filter (where d.closed_at < s.as_of and d.status = 'won') as first_won,
           min(d.created_at) as first_deal,
           count(*) filter (where d.created_at >= s.w90) as created90,
           count(distinct date_diff('second', s.signed_at, d.created_at) // (30 * 86400))
               filter (where d.created_at >= s.signed_at) as periods
    from s join deals d on d.partner_id = s.partner_id and d.created_at < s.as_of
    group by all
),
wins as (
    select partner_id, closed_at, amount,
           date_diff('second', lag(closed_at) over (partition by partner_id order by closed_at),
                     closed_at) / 86400 as gap
    from deals where status = 'won' and closed_at is not null
),
wn as (
    select s.partner_id, s.as_of, max(w.closed_at) as last_won,
           count(*) filter (where w.closed_at >= s.w30) as won30,
           count(*) filter (where w.closed_at >= s.w90) as won90,
           sum(w.amount) filter (where w.closed_at >= s.w30) as won_amount30,
           sum(w.amount) filter (where w.closed_at >= s.w90) as won_amount90,
           arg_min(w.amount, w.closed_at) as first_won_amount, median(w.gap) as won_gap,
           sum(w.amount) filter (where w.closed_at >= s.t_lo and w.closed_at < s.t_mid) as t_a,
           sum(w.amount) filter (where w.closed_at >= s.t_mid) as t_b
    from s2 s join wins w on w.partner_id = s.partner_id and w.closed_at < s.as_of
    group by all
),
fb as (
    select s.partner_id, s.as_of, count(*) as n, avg(f.score) as score,
           arg_max(f.score, f.submitted_at) as last_score, max(f.submitted_at) as last_t
    from s join feedback f on f.partner_id = s.partner_id and f.submitted_at < s.as_of
    group by all
),
mc as (
    select s.partner_id, s.as_of, count(*) filter (where m.committed_at < s.as_of) as n,
           count(*) filter (where m.due_at < s.as_of) as due,
           count(*) filter (where m.due_at < s.as_of and m.delivered_at <= m.due_at) as on_time,
           count(*) filter (where m.committed_at < s.as_of and m.committed_at >= s.w90) as n90,
           max(m.committed_at) filter (where m.committed_at < s.as_of) as last_t
    from s join marketing_commitments m on m.partner_id = s.partner_id
    group by all
),
lab as (
    select s.partner_id, s.as_of, sum(d.amount) as revenue
    from s join deals d on d.partner_id = s.partner_id and d.status = 'won'
         and d.closed_at >= s.as_of and d.closed_at < s.h_end
    group by all
),
touch as (
    select partner_id, occurred_at as t from activities
        where activity_type in ('meeting', 'qbr', 'co_sell', 'joint_event')
    union all select partner_id, created_at from leads
    union all select partner_id, created_at from deals
),
eng as (
    select s.partner_id, s.as_of,
           count(distinct floor(date_diff('second', s.as_of, t.t) / (30 * 86400))) as periods
    from s join touch t on t.partner_id = s.partner_id and t.t >= s.as_of and t.t < s.h_end
    group by all
)
select s.partner_id, s.as_of, act.n, act.n30, act.n90, act.collab, act.resp, act.first_t,
       act.last_t, act.periods / s.elapsed as act_share,
       (act.t_b - act.t_a) / nullif(act.t_b + act.t_a, 0) as act_trend,
       portal.n as portal_n, portal.n30 as portal_n30, portal.n90 as portal_n90,
       portal.last_t as portal_last, portal.periods / s.elapsed as portal_share,
       (portal.t_b - portal.t_a) / nullif(portal.t_b + portal.t_a, 0) as portal_trend,
       tr.enrolled, tr.completed, tr.certs, tr.first_done, tr.last_done, tr.done90,
       ld.created as leads, ld.qualified, ld.q30, ld.converted, ld.last_t as lead_last,
       ld.n90 as leads90,
       dl.created as deals, dl.won, dl.won_amount, dl.closed, dl.cycle, dl.pipeline, dl.first_won,
       dl.first_deal, dl.created90, dl.periods / s.elapsed as deal_share,
       wn.last_won, wn.won30, wn.won90, wn.won_amount30, wn.won_amount90, wn.first_won_amount,
       wn.won_gap, (coalesce(wn.t_b, 0) - coalesce(wn.t_a, 0))
           / nullif(coalesce(wn.t_b, 0) + coalesce(wn.t_a, 0), 0) as won_trend,
       fb.n as fb_n, fb.score, fb.last_score, fb.last_t as fb_last,
       mc.n as mc_n, mc.due, mc.on_time, mc.n90 as mc_n90, mc.last_t as mc_last,
       coalesce(lab.revenue, 0) as label_revenue, coalesce(eng.periods, 0) >= 3 as label_engaged
from s2 s
left join act using (partner_id, as_of) left join portal using (partner_id, as_of)
left join tr using (partner_id, as_of) left join ld using (partner_id, as_of)
left join dl using (partner_id, as_of) left join wn using (partner_id, as_of)
left join fb using (partner_id, as_of) left join mc using (partner_id, as_of)
left join lab using (partner_id, as_of) left join eng using (partner_id, as_of)
"""


def timed(fn):
    """(wall seconds, CPU seconds of every thread of this process, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def agreement(ours: pd.Series, duck: pd.Series, digits: int = 6) -> float:
    """Share of rows where two columns agree (missing on both sides counts as agreeing)."""
    a = pd.to_numeric(ours, errors="coerce").astype(float).round(digits)
    b = pd.to_numeric(duck, errors="coerce").astype(float).round(digits)
    return float(((a == b) | (a.isna() & b.isna())).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=60000)
    parser.add_argument("--event-scale", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="Timed runs; the fastest counts.")
    parser.add_argument(
        "--skip-load", action="store_true", help="Skip timing CSV parse + validation (load_raw)."
    )
    args = parser.parse_args()

    t0 = time.perf_counter()
    cfg = SimulateConfig(partners=args.partners, seed=9, event_scale=args.event_scale)
    tables = {k: v for k, v in simulate_program(cfg).items() if k != "truth"}
    sim_s = time.perf_counter() - t0
    events = sum(len(v) for k, v in tables.items() if k != "partners")
    end = pd.Timestamp(cfg.end_date) + pd.Timedelta(days=1)
    build = BuildConfig()
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in tables.items())
    print(f"simulated {args.partners:,} partners, {events:,} raw event rows in {sim_s:.1f} s")
    print(f"  ({sizes})")

    if not args.skip_load:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_tables(tables, Path(tmp) / "raw", fmt="csv")
            write_s = time.perf_counter() - t0
            load_s, _, loaded = timed(
                lambda: load_raw(Path(tmp) / "raw", Path(tmp) / "q", write_quarantine=False)
            )
        rows = sum(len(v) for v in loaded.tables.values())
        print(
            f"load_raw (CSV parse + contract validation): {load_s:6.2f} s for {rows:,} rows "
            f"(writing the CSVs took {write_s:.1f} s; not part of the build figure)"
        )
        del loaded

    raw = RawData.from_frames(tables, end)
    snaps = make_snapshots(tables["partners"], build.ages)
    snaps = snaps[snaps["as_of"] + pd.Timedelta(days=build.horizon_days) <= end]
    snaps = snaps.reset_index(drop=True)
    feat_s, _, _ = timed(lambda: build_features(tables, snaps))
    label_s, _, _ = timed(lambda: build_labels(tables, snaps, build))

    con = duckdb.connect()
    con.execute(f"set threads to {args.threads}")
    for name, frame in tables.items():
        con.register(name, frame)
    con.register("snaps", snaps[["partner_id", "as_of", "signed_at"]])
    con.execute("select 1").fetchall()
    # interleaved runs, so that load from other processes hits both sides alike
    ours_runs, duck_runs = [], []
    for _ in range(args.repeat):
        *t, ts = timed(lambda: build_training_set(raw, build))
        ours_runs.append(t)
        *t, result = timed(lambda: con.execute(QUERY).df())
        duck_runs.append(t)
    ours, ours_cpu = (min(column) for column in zip(*ours_runs, strict=True))
    duck, duck_cpu = (min(column) for column in zip(*duck_runs, strict=True))
    print(
        f"partnerscore build_training_set: {ours:6.2f} s wall, {ours_cpu:6.2f} s CPU  "
        f"({len(ts):,} snapshots x {ts.shape[1]} columns)"
    )
    print(f"  of which, run alone: build_features {feat_s:.2f} s, build_labels {label_s:.2f} s")
    print(
        f"DuckDB single query:             {duck:6.2f} s wall, {duck_cpu:6.2f} s CPU  "
        f"({len(result):,} rows x {result.shape[1]} columns, {args.threads} threads)"
    )
    print(
        f"ratio partnerscore / DuckDB:     {ours / duck:6.2f}x wall, {ours_cpu / duck_cpu:.2f}x CPU "
        f"(fastest of {args.repeat} interleaved runs; goal <= 1.5x)"
    )

    check = result.set_index(["partner_id", "as_of"]).sort_index()
    mine = ts.set_index(["partner_id", "as_of"]).sort_index()
    pairs = {
        "label_revenue": ("label_revenue", 2),
        "label_engaged": ("label_engaged", 0),
        "deals_won_amount_todate": ("won_amount", 2),
        "deals_open_pipeline_amount": ("pipeline", 2),
        "deals_velocity_days_todate": ("cycle", 6),
        "activities_touchpoints_30d": ("n30", 0),
        "activities_response_hours_median_todate": ("resp", 6),
        "leads_qualified_30d": ("q30", 0),
        "trainings_certifications_todate": ("certs", 0),
        "activities_touchpoints_90d": ("n90", 0),
        "activities_active_periods_share_todate": ("act_share", 6),
        "activities_touchpoints_trend_90d": ("act_trend", 6),
        "portal_events_active_periods_share_todate": ("portal_share", 6),
        "portal_events_trend_90d": ("portal_trend", 6),
        "deals_won_amount_90d": ("won_amount90", 2),
        "deals_first_won_amount": ("first_won_amount", 2),
        "deals_won_gap_median_days_todate": ("won_gap", 6),
        "deals_won_amount_trend_90d": ("won_trend", 6),
        "feedback_score_last_todate": ("last_score", 6),
    }
    zero_when_missing = {"won_amount", "pipeline", "n30", "n90", "q30", "certs", "won_amount90"}
    zero_when_missing |= {"act_share", "portal_share"}
    print("agreement with DuckDB per snapshot:")
    for ours_col, (duck_col, digits) in pairs.items():
        duck_values = check[duck_col]
        if duck_col in zero_when_missing:
            duck_values = duck_values.fillna(0)
        if duck_col == "label_engaged":
            duck_values = duck_values.astype(int)
        share = agreement(mine[ours_col], duck_values, digits)
        print(f"  {ours_col:<42} {share:9.4%}")


if __name__ == "__main__":
    main()
