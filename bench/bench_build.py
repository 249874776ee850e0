"""Benchmark: the point-in-time feature + label build against one hand-written DuckDB query.

Simulates a program with ~10M raw events, then times (a) partnerscore's build of the stacked
training set (features from before each as_of, labels from the horizon) on the in-memory tables
and (b) a single DuckDB SQL query computing comparable aggregates per snapshot (counts, sums,
windowed counts, first/last dates, labels) over the same frames. Prints both and the ratio.

    .venv/bin/python bench/bench_build.py [--partners 60000] [--event-scale 2.0]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import duckdb  # noqa: E402
import pandas as pd  # noqa: E402

from partnerscore.features.config import BuildConfig, SimulateConfig  # noqa: E402
from partnerscore.features.pipeline import build_training_set, make_snapshots  # noqa: E402
from partnerscore.features.simulate import simulate_program  # noqa: E402
from partnerscore.features.validate import RawData  # noqa: E402

QUERY = """
with s as (
    select partner_id, as_of, as_of - interval 30 day as w30,
           as_of + interval 180 day as h_end from snaps
),
act as (
    select s.partner_id, s.as_of,
           count(*) as n, count(*) filter (where a.occurred_at >= s.w30) as n30,
           count(*) filter (where a.activity_type in ('co_sell', 'joint_event')) as collab,
           avg(a.response_hours) as resp, min(a.occurred_at) as first_t, max(a.occurred_at) as last_t
    from s join activities a on a.partner_id = s.partner_id and a.occurred_at < s.as_of
    group by all
),
portal as (
    select s.partner_id, s.as_of, count(*) as n,
           count(*) filter (where p.occurred_at >= s.w30) as n30
    from s join portal_events p on p.partner_id = s.partner_id and p.occurred_at < s.as_of
    group by all
),
tr as (
    select s.partner_id, s.as_of, count(*) as enrolled,
           count(*) filter (where t.completed_at < s.as_of) as completed,
           count(*) filter (where t.completed_at < s.as_of and t.is_certification) as certs,
           min(t.completed_at) filter (where t.completed_at < s.as_of) as first_done
    from s join trainings t on t.partner_id = s.partner_id and t.enrolled_at < s.as_of
    group by all
),
ld as (
    select s.partner_id, s.as_of, count(*) as created,
           count(*) filter (where l.qualified_at < s.as_of) as qualified,
           count(*) filter (where l.qualified_at < s.as_of and l.qualified_at >= s.w30) as q30,
           count(*) filter (where l.converted_at < s.as_of) as converted, min(l.created_at) as first_t
    from s join leads l on l.partner_id = s.partner_id and l.created_at < s.as_of
    group by all
),
dl as (
    select s.partner_id, s.as_of, count(*) as created,
           count(*) filter (where d.closed_at < s.as_of and d.status = 'won') as won,
           sum(d.amount) filter (where d.closed_at < s.as_of and d.status = 'won') as won_amount,
           count(*) filter (where d.closed_at < s.as_of) as closed,
           avg(date_diff('second', d.created_at, d.closed_at)) filter (where d.closed_at < s.as_of)
               as cycle,
           sum(d.amount) filter (where d.closed_at is null or d.closed_at >= s.as_of) as pipeline,
           min(d.closed_at) filter (where d.closed_at < s.as_of and d.status = 'won') as first_won
    from s join deals d on d.partner_id = s.partner_id and d.created_at < s.as_of
    group by all
),
fb as (
    select s.partner_id, s.as_of, count(*) as n, avg(f.score) as score
    from s join feedback f on f.partner_id = s.partner_id and f.submitted_at < s.as_of
    group by all
),
mc as (
    select s.partner_id, s.as_of, count(*) filter (where m.committed_at < s.as_of) as n,
           count(*) filter (where m.due_at < s.as_of) as due,
           count(*) filter (where m.due_at < s.as_of and m.delivered_at <= m.due_at) as on_time
    from s join marketing_commitments m on m.partner_id = s.partner_id
    group by all
),
lab as (
    select s.partner_id, s.as_of, sum(d.amount) as revenue
    from s join deals d on d.partner_id = s.partner_id and d.status = 'won'
         and d.closed_at > s.as_of and d.closed_at <= s.h_end
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
    from s join touch t on t.partner_id = s.partner_id and t.t > s.as_of and t.t <= s.h_end
    group by all
)
select s.partner_id, s.as_of, act.n, act.n30, act.collab, act.resp, act.first_t, act.last_t,
       portal.n as portal_n, portal.n30 as portal_n30, tr.enrolled, tr.completed, tr.certs,
       tr.first_done, ld.created as leads, ld.qualified, ld.q30, ld.converted,
       dl.created as deals, dl.won, dl.won_amount, dl.closed, dl.cycle, dl.pipeline, dl.first_won,
       fb.n as fb_n, fb.score, mc.n as mc_n, mc.due, mc.on_time,
       coalesce(lab.revenue, 0) as label_revenue, coalesce(eng.periods, 0) >= 3 as label_engaged
from s
left join act using (partner_id, as_of) left join portal using (partner_id, as_of)
left join tr using (partner_id, as_of) left join ld using (partner_id, as_of)
left join dl using (partner_id, as_of) left join fb using (partner_id, as_of)
left join mc using (partner_id, as_of) left join lab using (partner_id, as_of)
left join eng using (partner_id, as_of)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, default=60000)
    parser.add_argument("--event-scale", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    t0 = time.perf_counter()
    cfg = SimulateConfig(partners=args.partners, seed=9, event_scale=args.event_scale)
    tables = {k: v for k, v in simulate_program(cfg).items() if k != "truth"}
    sim_s = time.perf_counter() - t0
    events = sum(len(v) for k, v in tables.items() if k != "partners")
    end = pd.Timestamp(cfg.end_date) + pd.Timedelta(days=1)
    build = BuildConfig()
    print(f"simulated {args.partners:,} partners, {events:,} raw event rows in {sim_s:.1f} s")

    t0 = time.perf_counter()
    ts = build_training_set(RawData.from_frames(tables, end), build)
    ours = time.perf_counter() - t0
    print(
        f"partnerscore build_training_set: {ours:6.2f} s  ({len(ts):,} snapshots x "
        f"{ts.shape[1]} columns)"
    )

    snaps = make_snapshots(tables["partners"], build.ages)
    snaps = snaps[snaps["as_of"] + pd.Timedelta(days=build.horizon_days) <= end]
    con = duckdb.connect()
    con.execute(f"set threads to {args.threads}")
    for name, frame in tables.items():
        con.register(name, frame)
    con.register("snaps", snaps[["partner_id", "as_of"]])
    con.execute("select 1").fetchall()
    t0 = time.perf_counter()
    result = con.execute(QUERY).df()
    duck = time.perf_counter() - t0
    print(
        f"DuckDB single query:             {duck:6.2f} s  ({len(result):,} rows x "
        f"{result.shape[1]} columns, {args.threads} threads)"
    )
    print(f"ratio partnerscore / DuckDB:     {ours / duck:6.2f}x  (goal <= 1.5x)")
    check = result.set_index(["partner_id", "as_of"]).sort_index()
    mine = ts.set_index(["partner_id", "as_of"]).sort_index()
    same = (check["label_revenue"].round(2) == mine["label_revenue"].round(2)).mean()
    print(f"label_revenue agreement with DuckDB: {same:.4%}")


if __name__ == "__main__":
    main()
