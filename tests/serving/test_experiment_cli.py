"""`partnerscore experiment ...` and `simulate --treatment`: exit codes and one-line errors."""

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from support import hand_scores

from partnerscore.serving.cli import app, main

SUBCOMMANDS = ["assign", "analyze", "plan", "stop"]


def test_experiment_group_is_registered_as_a_sub_app():
    groups = {g.name for g in app.registered_groups}
    assert "experiment" in groups


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_on_every_subcommand(command, capsys):
    assert main(["experiment", command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out and command in out


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A small simulated program with a known effect injected by `simulate --treatment`."""
    out = tmp_path_factory.mktemp("exp_raw")
    code = main(
        [
            "simulate",
            "--partners",
            "300",
            "--seed",
            "21",
            "--out",
            str(out),
            "--treatment",
            "onb",
            "--effect-revenue",
            "0.4",
            "--effect-engagement",
            "2",
            "--treated-fraction",
            "0.4",
        ]
    )
    assert code == 0
    return out


def test_simulate_treatment_json_is_one_object(tmp_path, capsys):
    """``--json simulate --treatment`` printed the simulation's JSON, then the experiment's
    plain-text lines: stdout did not parse."""
    args = ["--json", "simulate", "--partners", "60", "--out", str(tmp_path / "r")]
    assert main([*args, "--treatment", "onb", "--effect-revenue", "0.2"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["experiment"]["summary"]["experiment"] == "onb"
    assert "experiment 'onb' injected" in payload["summary"]
    assert payload["experiment"]["files"]


def analyze_args(simulated, out) -> list[str]:
    """``experiment analyze`` of the simulated experiment at 180 days into ``out``."""
    assignments = str(simulated / "experiment_assignment.csv")
    return ["experiment", "analyze", "--assignments", assignments, "--raw", str(simulated),
            "--horizon", "180", "--out", str(out), "--bootstrap", "300"]  # fmt: skip


def test_simulate_treatment_then_analyze_end_to_end(simulated, tmp_path, capsys):
    capsys.readouterr()
    truth = json.loads((simulated / "experiment_truth.json").read_text())
    assert truth["arms"]["treatment"] < truth["arms"]["control"]  # 40% treated
    args = analyze_args(simulated, tmp_path / "out")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "sample ratio: chi2" in out and "ok" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    engaged = next(
        e
        for e in results["effects"]
        if e["outcome"] == "engaged"
        and e["method"] == "adjusted"
        and e["stratum"] == "all"
        and e["day"] == 180
    )
    assert engaged["ci_low"] <= truth["true_effect"]["engaged"] <= engaged["ci_high"]
    assert results["sample_ratio"]["expected"]["treatment"] == pytest.approx(
        0.4 * sum(truth["arms"].values())
    )


def test_analyze_headline_names_its_method(simulated, tmp_path, capsys):
    """The summary's effect was the adjusted (CUPED) estimate, unnamed, while effects.csv's
    first row is Welch's: each headline line and ``--json`` name the method."""
    from partnerscore.serving.experiment import _money_text, _points_text

    capsys.readouterr()
    args = ["--json", *analyze_args(simulated, tmp_path / "out")]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["headline_method"] == "adjusted"
    overall = {
        (e["outcome"], e["method"]): e
        for e in payload["results"]["effects"]
        if e["stratum"] == "all" and e["day"] == 180 and e["arm"] == "treatment"
    }
    assert payload["headline"] == [overall["revenue", "adjusted"], overall["engaged", "adjusted"]]
    effects = pd.read_csv(tmp_path / "out" / "effects.csv")
    assert effects.loc[0, "method"] == "welch"  # the file's first row is not the headline
    lines = payload["summary"].splitlines()
    for outcome, fmt in (("revenue", _money_text), ("engaged", _points_text)):
        adjusted, welch = overall[outcome, "adjusted"], overall[outcome, "welch"]
        assert adjusted["effect"] != welch["effect"]
        line = next(t for t in lines if t.startswith(f"  treatment vs control: {outcome} "))
        assert line.startswith(
            f"  treatment vs control: {outcome} {fmt(adjusted['effect'])} "
            f"[{fmt(adjusted['ci_low'])}, {fmt(adjusted['ci_high'])}] adjusted (CUPED)"
        )
        assert line.endswith(f"; welch {fmt(welch['effect'])}")


def _page_tables(page: str) -> dict[str, list[list[str]]]:
    """Every ``<table id=...>`` of a page: its rows' cell texts, the header row first."""
    from html.parser import HTMLParser

    class Tables(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.current, self.cell = {}, None, None

        def handle_starttag(self, tag, attrs):
            if tag == "table" and dict(attrs).get("id"):
                self.current = self.tables.setdefault(dict(attrs)["id"], [])
            elif tag == "tr" and self.current is not None:
                self.current.append([])
            elif tag in ("td", "th") and self.current is not None:
                self.cell = []

        def handle_endtag(self, tag):
            if tag == "table":
                self.current = None
            elif tag in ("td", "th") and self.cell is not None:
                self.current[-1].append("".join(self.cell).strip())
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    parser = Tables()
    parser.feed(page)
    return parser.tables


def test_report_headline_is_the_commands_headline(simulated, tmp_path, capsys):
    """report.html's headline and per-stratum tables showed Welch's difference in means (the
    first row of each) while the summary and ``--json`` headline the adjusted (CUPED)
    estimate: the page's headline rows are ``--json``'s, named by method, Welch's beside them,
    and its per-stratum table is by the same method."""
    from partnerscore.serving.experiment import _METHOD_NAMES, _money_text, _points_text

    capsys.readouterr()
    assert main(["--json", *analyze_args(simulated, tmp_path / "out")]) == 0
    payload = json.loads(capsys.readouterr().out)
    method = _METHOD_NAMES[payload["headline_method"]]
    tables = _page_tables((tmp_path / "out" / "report.html").read_text(encoding="utf-8"))
    effects = payload["results"]["effects"]
    welch = {
        (e["arm"], e["outcome"], e["stratum"]): e
        for e in effects
        if e["method"] == "welch" and e["day"] == 180
    }
    fmts = {"revenue": _money_text, "engaged": _points_text}
    for outcome, fmt in fmts.items():
        header, *rows = tables[f"effects-{outcome}"]
        got = [dict(zip(header, row, strict=True)) for row in rows]
        want = [e for e in payload["headline"] if e["outcome"] == outcome]
        assert len(want) == 1 and len(got) == len(want), (got, want)
        for page_row, e in zip(got, want, strict=True):
            plain = welch[e["arm"], outcome, "all"]
            assert page_row["arm"] == e["arm"] and page_row["method"] == method
            assert page_row["effect"] == fmt(e["effect"]) != fmt(plain["effect"])
            assert page_row["interval"] == f"[{fmt(e['ci_low'])}, {fmt(e['ci_high'])}]"
            assert page_row["welch"] == fmt(plain["effect"])
            assert (
                page_row["welch interval"] == f"[{fmt(plain['ci_low'])}, {fmt(plain['ci_high'])}]"
            )
    header, *rows = tables["strata"]
    assert method in header, header  # the effect column names its method
    got = [dict(zip(header, row, strict=True)) for row in rows]
    want = [
        e
        for e in effects
        if e["method"] == payload["headline_method"] and e["stratum"] != "all" and e["day"] == 180
    ]
    assert len(want) > 2 and len(got) == len(want)
    for page_row, e in zip(got, want, strict=True):
        fmt, plain = fmts[e["outcome"]], welch[e["arm"], e["outcome"], e["stratum"]]
        assert [page_row["stratum"], page_row["arm"], page_row["outcome"]] == [
            e["stratum"], e["arm"], e["outcome"]
        ]  # fmt: skip
        assert page_row[method] == fmt(e["effect"])
        assert page_row["interval"] == f"[{fmt(e['ci_low'])}, {fmt(e['ci_high'])}]"
        assert page_row["welch"] == fmt(plain["effect"])


def test_every_experiment_chart_has_an_accessible_name(simulated, tmp_path, capsys):
    """report.html's interval and trajectory charts had role="img" and no name (screen
    readers skip them): each one now says what it shows with its key numbers."""
    from support import chart_names

    assert main(analyze_args(simulated, tmp_path / "out")) == 0
    names = chart_names((tmp_path / "out" / "report.html").read_text(encoding="utf-8"))
    assert set(names) == {"intervals", "trajectory"}, names
    assert len(names["intervals"]) == 2 and len(names["trajectory"]) >= 2, names
    for name in [*names["intervals"], *names["trajectory"]]:
        assert name and "control" in name, name
        assert any(ch.isdigit() for ch in name), name  # its key numbers


def test_sample_ratio_mismatch_exits_1(simulated, tmp_path, capsys):
    table = pd.read_csv(simulated / "experiment_assignment.csv", dtype=str, keep_default_na=False)
    table = table[~((table["arm"] == "control") & (table.index % 2 == 0))]
    table.to_csv(tmp_path / "lossy.csv", index=False)
    code = main(
        [
            "experiment", "analyze", "--assignments", str(tmp_path / "lossy.csv"),
            "--raw", str(simulated), "--horizon", "180", "--out", str(tmp_path / "o"),
            "--bootstrap", "100",
        ]
    )  # fmt: skip
    assert code == 1
    assert "MISMATCH" in capsys.readouterr().out


def _err(capsys) -> str:
    """The one error line (a usage error's comes after the command's usage line)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    if len(lines) == 2 and lines[0].startswith("Usage: "):
        lines = lines[1:]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_missing_column_in_assignments_is_one_line(simulated, tmp_path, capsys):
    table = pd.read_csv(simulated / "experiment_assignment.csv", dtype=str, keep_default_na=False)
    table.drop(columns=["arm"]).to_csv(tmp_path / "a.csv", index=False)
    code = main(
        [
            "experiment", "analyze", "--assignments", str(tmp_path / "a.csv"),
            "--raw", str(simulated), "--horizon", "90", "--out", str(tmp_path / "o"),
        ]
    )  # fmt: skip
    assert code == 2
    assert (
        _err(capsys)
        == f"error: --assignments {tmp_path / 'a.csv'}: missing column 'arm' (not an assignment table)"
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # pandera's coercion errors (SchemaErrors) escaped as "unexpected", exit 1
        ({"target_share": "abc"}, "column 'target_share' row 6: 'abc' is not a number"),
        ({"seed": "x"}, "column 'seed' row 6: 'x' is not a whole number"),
        # the second of two equal rows, not a pandera schema name and a dangling ':'
        ("duplicate", "column 'partner_id' row {last}: a partner assigned twice in one experiment"),
    ],
)
def test_bad_assignment_values_are_one_line(simulated, tmp_path, capsys, edit, message):
    table = pd.read_csv(simulated / "experiment_assignment.csv", dtype=str, keep_default_na=False)
    if edit == "duplicate":
        table = pd.concat([table, table.iloc[[3]]], ignore_index=True)
    else:
        for col, value in edit.items():
            table.loc[table.index[5], col] = value
    err = _analyze_table(simulated, tmp_path, capsys, table)
    assert err == f"error: --assignments {tmp_path / 'a.csv'}: " + message.format(last=len(table))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyze", "--bootstrap", "0"], "--bootstrap: expected a positive number of resamples"),
        (
            ["analyze", "--horizon", "100000"],
            "--horizon 100000: expected a number of days from 1 to 36,525",
        ),
        (["plan", "--effect-engagement", "0.7"], "plus the lift is 110.0%, outside (0%, 100%)"),
        (["plan", "--effect-engagement", "-0.5"], "plus the lift is -10.0%, outside"),
        (
            ["plan", "--horizon", "100000"],
            "--horizon 100000: expected a number of days from 1 to 36,525",
        ),
    ],
)
def test_out_of_range_options_are_one_line(simulated, tmp_path, capsys, args, message):
    """Each stopped with an internal ValueError or OverflowError (exit 1), or sized a 59.9-point
    lift under a 70-point label."""
    command, *extra = args
    if command == "analyze":
        base = [
            "--assignments", str(simulated / "experiment_assignment.csv"),
            "--raw", str(simulated), "--horizon", "90", "--out", str(tmp_path / "o"),
        ]  # fmt: skip
    else:
        base = ["--partners", "100", "--revenue-sd", "1000", "--base-rate", "0.4"]
        base += ["--raw", str(simulated)] if "--horizon" in extra else []
    assert main(["experiment", command, *base, *extra]) == 2
    assert message in _err(capsys)


def test_simulate_checks_the_treatment_before_writing(tmp_path, capsys):
    """A bad treatment option stopped the job after the tables were rewritten (the old truth
    files left beside data without the effect); an assignment too late for the horizon
    promised a true effect over days the data does not cover."""
    base = ["simulate", "--partners", "300", "--seed", "3", "--out", str(tmp_path / "raw")]
    cases = [
        (["--treatment", "t", "--treated-fraction", "1"], "--treated-fraction: expected a share"),
        (["--treatment", "t", "--effect-revenue", "-1"], "--effect-revenue: must be greater"),
        (["--treatment", "t", "--assigned-at", "2026-06-20"], "assign by 2026-01-01"),
        (["--effect-revenue", "0.5"], "need --treatment"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        assert message in _err(capsys)
        assert not (tmp_path / "raw").exists()


def test_unknown_control_arm_is_one_line(simulated, tmp_path, capsys):
    path = simulated / "experiment_assignment.csv"
    code = main(
        [
            "experiment", "analyze", "--assignments", str(path), "--raw", str(simulated),
            "--horizon", "90", "--out", str(tmp_path / "o"), "--control", "placebo",
        ]
    )  # fmt: skip
    assert code == 2
    assert _err(capsys) == (
        f"error: --control: unknown arm 'placebo' (arms in {path}: control, treatment)"
    )


def test_a_horizon_shorter_than_the_engagement_period_is_refused(simulated, tmp_path, capsys):
    """--horizon 20 under the default 30-day engagement period made ``engaged`` 'any
    qualifying touchpoint in the 20 days' (one period cut at the horizon), exit 0; build and
    the config file refuse such a period with the same line."""
    base = [
        "experiment", "analyze", "--assignments", str(simulated / "experiment_assignment.csv"),
        "--raw", str(simulated), "--bootstrap", "50",
    ]  # fmt: skip
    code = main([*base, "--horizon", "20", "--out", str(tmp_path / "o")])
    assert code == 2
    assert _err(capsys) == (
        "error: build.engagement_period_days 30 is longer than --horizon 20: label_engaged "
        "would be one period cut at the horizon (any qualifying touchpoint in it); give an "
        "engagement period of at most the horizon"
    )
    assert not (tmp_path / "o").exists()
    # a horizon of one period is still analysed
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"build": {"engagement_period_days": 20}}))
    out = tmp_path / "p"
    assert main([*base, "--horizon", "20", "--out", str(out), "--config", str(config)]) == 0
    assert (out / "results.json").exists()
    # plan estimates the engaged base rate with the same label
    plan = ["experiment", "plan", "--partners", "100", "--raw", str(simulated), "--horizon", "20"]
    assert main(plan) == 2
    assert _err(capsys).startswith(
        "error: build.engagement_period_days 30 is longer than --horizon 20"
    )
    assert main([*plan, "--base-rate", "0.4"]) == 0  # given: only revenue is estimated
    assert main([*plan, "--config", str(config)]) == 0


def test_a_milestone_shorter_than_the_engagement_period_is_refused(simulated, tmp_path, capsys):
    """--milestones 20 under the 30-day engagement period made ``engaged_d20`` 'any qualifying
    touchpoint in the 20 days' (one period cut at the milestone), exit 0, where --horizon 20 is
    refused. Default milestones (every 30 days) start at the period: a 45-day period's
    defaults held day 30, so analyze itself labelled it so."""
    base = [
        "experiment", "analyze", "--assignments", str(simulated / "experiment_assignment.csv"),
        "--raw", str(simulated), "--bootstrap", "50", "--horizon", "90",
    ]  # fmt: skip
    code = main([*base, "--milestones", "60,20", "--out", str(tmp_path / "o")])
    assert code == 2
    assert _err(capsys) == (
        "error: build.engagement_period_days 30 is longer than --milestones day 20: "
        "engaged_d20 would be one period cut at the milestone (any qualifying touchpoint in "
        "it); give milestones of at least 30 days"
    )
    assert not (tmp_path / "o").exists()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"build": {"engagement_period_days": 45}}))
    out = tmp_path / "p"
    assert main([*base, "--out", str(out), "--config", str(config)]) == 0
    assert json.loads((out / "results.json").read_text())["milestones"] == [60, 90]
    # a milestone of one period is still analysed
    out = tmp_path / "q"
    assert main([*base, "--milestones", "45", "--out", str(out), "--config", str(config)]) == 0
    assert json.loads((out / "results.json").read_text())["milestones"] == [45, 90]


def _assign(tmp_path, *extra):
    return [
        "experiment", "assign", "--scores", str(tmp_path / "scores.csv"), "--name", "e",
        "--out", str(tmp_path / "a.csv"), "--registry", str(tmp_path / "reg.csv"), *extra,
    ]  # fmt: skip


def test_assign_cli_is_reproducible_and_refuses_reassignment(tmp_path, capsys):
    hand_scores(tmp_path)
    assert main(_assign(tmp_path, "--seed", "7")) == 0
    first = (tmp_path / "a.csv").read_bytes()
    assert main(_assign(tmp_path, "--seed", "7")) == 0  # identical re-run: a no-op
    assert (tmp_path / "a.csv").read_bytes() == first
    assert "registry unchanged" in capsys.readouterr().out
    assert main(_assign(tmp_path, "--seed", "8")) == 2
    assert "is already in running experiment 'e'" in _err(capsys)
    assert main(["experiment", "stop", "--name", "e", "--registry", str(tmp_path / "reg.csv")]) == 0
    assert main(_assign(tmp_path, "--seed", "8")) == 0
    assert (tmp_path / "a.csv").read_bytes() != first


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fraction", "1.5"], "error: --fraction: expected a share between 0 and 1, got 1.5"),
        (["--fraction", "0"], "error: --fraction: expected a share between 0 and 1, got 0.0"),
        (
            ["--arms", "control"],
            "error: --arms: expected at least two distinct comma-separated names, got 'control'",
        ),
        (["--stratify", "tier,channel"], "missing column 'channel' (given in --stratify)"),
        (["--assigned-at", "2026-02-30"], "error: --assigned-at: expected a date YYYY-MM-DD"),
    ],
)
def test_assign_bad_input_is_one_line(tmp_path, capsys, extra, message):
    hand_scores(tmp_path)
    assert main(_assign(tmp_path, *extra)) == 2
    assert message in _err(capsys)
    assert not (tmp_path / "a.csv").exists()


def test_assign_scores_missing_a_column_is_one_line(tmp_path, capsys):
    hand_scores(tmp_path, drop="score")
    assert main(_assign(tmp_path)) == 2
    assert _err(capsys).endswith("missing column 'score' (not a partnerscore scores file)")


def test_plan_given_and_estimated(raw_dir, capsys):
    args = ["experiment", "plan", "--partners", "1000", "--revenue-sd", "50000"]
    assert main([*args, "--base-rate", "0.4", "--effect-revenue", "10000"]) == 0
    out = capsys.readouterr().out
    assert "detectable difference $8,868 per partner" in out
    assert "partners needed to detect a revenue difference of $10,000: 787" in out
    assert main(["experiment", "plan", "--partners", "400", "--raw", str(raw_dir)]) == 0
    out = capsys.readouterr().out
    assert "estimated from" in out and "engagement: detectable lift" in out
    assert main(["experiment", "plan", "--partners", "400"]) == 2
    assert "give --revenue-sd and/or --base-rate" in _err(capsys)
    assert main(["experiment", "plan", "--partners", "400", "--base-rate", "1.2"]) == 2
    assert "--base-rate: expected a share in (0, 1)" in _err(capsys)


def test_console_script_experiment_error_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", *_assign(tmp_path, "--fraction", "2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    *usage, err = proc.stderr.strip().splitlines()  # a usage error (its line may wrap)
    assert usage[0].startswith("Usage: ") and " experiment assign " in " ".join(usage)
    assert err == "error: --fraction: expected a share between 0 and 1, got 2.0"


def test_a_horizon_past_the_data_says_how_long_one_fits(simulated, tmp_path, capsys):
    # assigned one 180-day horizon before the simulated program's end: 180 days fit, 200 do not
    code = main(
        [
            "experiment", "analyze", "--assignments", str(simulated / "experiment_assignment.csv"),
            "--raw", str(simulated), "--horizon", "200", "--out", str(tmp_path / "o"),
        ]
    )  # fmt: skip
    assert code == 2
    message = _err(capsys)
    assert message.startswith("error: --horizon 200: the data ends 2026-06-30")
    assert message.endswith("(use --horizon 180 or less)"), message


def _analyze_assigned_at(simulated, tmp_path, capsys, assigned_at: str) -> str:
    """experiment analyze --horizon 90 of the simulated assignments re-dated to ``assigned_at``:
    its one error line (exit 2)."""
    table = pd.read_csv(simulated / "experiment_assignment.csv", dtype=str, keep_default_na=False)
    table["assigned_at"] = assigned_at
    return _analyze_table(simulated, tmp_path, capsys, table)


def _analyze_table(simulated, tmp_path, capsys, table: pd.DataFrame) -> str:
    """experiment analyze --horizon 90 of ``table`` written as a.csv: its one error line
    (exit 2)."""
    table.to_csv(tmp_path / "a.csv", index=False)
    code = main(
        [
            "experiment", "analyze", "--assignments", str(tmp_path / "a.csv"),
            "--raw", str(simulated), "--horizon", "90", "--out", str(tmp_path / "o"),
        ]
    )  # fmt: skip
    assert code == 2
    return _err(capsys)


def test_an_assignment_at_the_data_end_has_no_outcomes_yet(simulated, tmp_path, capsys):
    """It said "use a shorter --horizon", which no horizon satisfies (the README's example:
    partners assigned on the latest scores' as_of, analysed on the same raw data)."""
    assert _analyze_assigned_at(simulated, tmp_path, capsys, "2026-07-01") == (
        f"error: --assignments {tmp_path / 'a.csv'}: the latest assigned_at, 2026-07-01, is not a day before "
        f"the end of the data in {simulated} (2026-06-30): no outcomes to analyse yet; run it "
        "on raw data that covers the horizon"
    )


def test_data_shorter_than_the_engagement_period_after_the_assignment_is_one_line(
    simulated, tmp_path, capsys
):
    """20 days of data after the latest assignment said "use --horizon 20 or less", and
    --horizon 20 is then refused as shorter than the 30-day engagement period: no horizon fits."""
    assert _analyze_assigned_at(simulated, tmp_path, capsys, "2026-06-10") == (
        f"error: --assignments {tmp_path / 'a.csv'}: the latest assigned_at, 2026-06-10, is 20 days before the "
        f"end of the data in {simulated} (2026-06-30), fewer than build.engagement_period_days "
        "30, the shortest --horizon: run it on raw data that covers the horizon"
    )


BASE_RAW = Path(__file__).parents[1] / "features" / "malformed" / "_base"
HEADER = "experiment,partner_id,arm,stratum,assigned_at,target_share,seed\n"
ROW = "e,P1,control,all,2024-01-01,0.5,0\n"


def _assignments_parquet(path: Path, assigned_at) -> None:
    pd.DataFrame(
        {
            "experiment": ["e", "e"],
            "partner_id": ["P1", "P2"],
            "arm": ["control", "treatment"],
            "stratum": ["all", "all"],
            "assigned_at": assigned_at,
            "target_share": [0.5, 0.5],
            "seed": [0, 0],
        }
    ).to_parquet(path)


# junk content, each: (file name, writer, the error after "--assignments <path>: "). They said
# pandas' or Arrow's words ("Error tokenizing data. C error: Expected 7 fields in line 3,
# saw 9", "Could not open Parquet input source ...: Parquet magic bytes not found in footer",
# "not UTF-8 text at line 1 (the header): byte 0xF0"), a CSV line for a row ("row 3" for the
# second data record), or "row 1 '2024-01-01' is not a date/time" for a zone change
JUNK_TABLES = {
    "longer_row": (
        "a.csv",
        lambda p: p.write_text(HEADER + ROW + "e,P2,treatment,all,2024-01-01,0.5,0,9,9\n"),
        "line 3: more fields than the header's 7",
    ),
    "parquet_named_csv": (
        "a.csv",
        lambda p: _assignments_parquet(p, ["2024-01-01", "2024-01-01"]),
        "cannot read file: a Parquet file, not CSV text (name it .parquet)",
    ),
    "csv_named_parquet": (
        "a.parquet",
        lambda p: p.write_text(HEADER + ROW),
        "cannot read file: not a Parquet file (no Parquet footer; CSV text named .parquet?)",
    ),
    "binary_named_parquet": (
        "a.parquet",
        lambda p: p.write_bytes(bytes(range(256)) * 4),
        "cannot read file: not a Parquet file (no Parquet footer; CSV text named .parquet?)",
    ),
    "bad_date": (
        "a.csv",
        lambda p: p.write_text(HEADER + ROW + "e,P2,treatment,all,soon,0.5,0\n"),
        "column 'assigned_at' row 2: 'soon' is not a date",
    ),
    "bad_date_parquet": (
        "a.parquet",
        lambda p: _assignments_parquet(p, ["2024-01-01", "soon"]),
        "column 'assigned_at' row 2: 'soon' is not a date",
    ),
    "empty_date": (
        "a.csv",
        lambda p: p.write_text(HEADER + ROW + "e,P2,treatment,all,,0.5,0\n"),
        "column 'assigned_at' row 2: is empty",
    ),
    "two_zones": (
        "a.csv",
        lambda p: p.write_text(HEADER + ROW + "e,P2,treatment,all,2024-01-01T00:00+02:00,0.5,0\n"),
        "column 'assigned_at' row 2: '2024-01-01T00:00+02:00' has a UTC offset and row 1 "
        "('2024-01-01') has none (partner 'P2'); give every assigned_at in one time zone, or none",
    ),
    # an empty partner_id read "not in the partners table" (until 2026-12-06)
    "empty_partner_id": (
        "a.csv",
        lambda p: p.write_text(HEADER + ROW + "e,,treatment,all,2024-01-01,0.5,0\n"),
        "column 'partner_id' row 2: is empty",
    ),
    "blank_arm": (
        "a.csv",
        lambda p: p.write_text(HEADER + ROW + "e,P2, ,all,2024-01-01,0.5,0\n"),
        "column 'arm' row 2: is empty",
    ),
    "duplicate_partner": (
        "a.parquet",
        lambda p: pd.concat([pd.read_csv(StringIO(HEADER + ROW))] * 2).to_parquet(p),
        "column 'partner_id' row 2: a partner assigned twice in one experiment",
    ),
}


@pytest.mark.parametrize("case", sorted(JUNK_TABLES))
def test_a_junk_assignment_table_is_one_line_naming_option_file_column_and_row(
    case, tmp_path, capsys
):
    name, write, message = JUNK_TABLES[case]
    path = tmp_path / name
    write(path)
    argv = ["experiment", "analyze", "--assignments", str(path), "--raw", str(BASE_RAW),
            "--horizon", "90", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    assert _err(capsys) == f"error: --assignments {path}: {message}"


@pytest.mark.parametrize("case", ["longer_row", "parquet_named_csv", "csv_named_parquet"])
def test_a_junk_registry_is_one_line_naming_option_and_line(case, tmp_path, capsys):
    name, write, message = JUNK_TABLES[case]
    path = tmp_path / name
    write(path)
    if case == "longer_row":  # the registry's 8 columns, a record of 9
        header = "experiment,partner_id,arm,stratum,assigned_at,seed,status,assignment_file\n"
        row = "e,P1,control,all,2024-01-01,0,running,a.csv"
        path.write_text(f"{header}{row}\n{row},9\n")
        message = "line 3: more fields than the header's 8"
    assert main(["experiment", "stop", "--name", "e", "--registry", str(path)]) == 2
    assert _err(capsys) == f"error: --registry {path}: {message}"


REGISTRY_HEADER = "experiment,partner_id,arm,stratum,assigned_at,seed,status,assignment_file\n"
RUNNING = "e,P001,control,all,2026-03-01 00:00:00,0,running,a.csv\n"

# a hand-edited or merged registry: each is refused by `assign` (under the registry's name or
# another) and `stop` with one line naming --registry, the column and the 1-based row, and
# nothing is written. Until 2026-12-06 every one was read as it came: a partner running twice
# was released twice by `stop` ("2 partners released") and refused by `assign` with a pandas
# Series printed in the line; an unknown or empty status was no running experiment (`assign`
# assigned the partner again, `stop` found nothing to stop); an empty id was released
# as a partner; a date that is none or of another time zone was taken as text
BAD_REGISTRIES = {
    "running_twice_same_arm": (
        RUNNING + RUNNING,
        "column 'partner_id' row 2: a partner running twice in one experiment "
        "(row 1 too: 'P001' in 'e')",
    ),
    "running_twice_other_arm": (
        RUNNING
        + "x,P009,control,all,2026-03-01,0,stopped,a.csv\n"
        + RUNNING.replace("control", "treatment"),
        "column 'partner_id' row 3: a partner running twice in one experiment "
        "(row 1 too: 'P001' in 'e')",
    ),
    "unknown_status": (
        RUNNING.replace("running", "Running"),
        "column 'status' row 1: 'Running' is not running or stopped",
    ),
    "empty_status": (RUNNING.replace("running", ""), "column 'status' row 1: is empty"),
    "empty_partner_id": (
        RUNNING + RUNNING.replace("P001", ""),
        "column 'partner_id' row 2: is empty",
    ),
    "empty_experiment": (RUNNING + "," + RUNNING[2:], "column 'experiment' row 2: is empty"),
    "not_a_date": (
        RUNNING.replace("2026-03-01 00:00:00", "soon"),
        "column 'assigned_at' row 1: 'soon' is not a date",
    ),
    "empty_date": (
        RUNNING + RUNNING.replace("P001", "P002").replace("2026-03-01 00:00:00", ""),
        "column 'assigned_at' row 2: is empty",
    ),
    "two_zones": (
        RUNNING + RUNNING.replace("P001", "P002").replace("00:00:00", "00:00:00+02:00"),
        "column 'assigned_at' row 2: '2026-03-01 00:00:00+02:00' has a UTC offset and row 1 "
        "('2026-03-01 00:00:00') has none (partner 'P002'); give every assigned_at in one time "
        "zone, or none",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REGISTRIES))
@pytest.mark.parametrize("command", ["assign_same_name", "assign_other_name", "stop"])
def test_a_bad_registry_row_is_one_line_naming_column_and_row(case, command, tmp_path, capsys):
    rows, message = BAD_REGISTRIES[case]
    hand_scores(tmp_path)
    registry = tmp_path / "reg.csv"
    registry.write_text(REGISTRY_HEADER + rows)
    argv = {
        "assign_same_name": _assign(tmp_path),
        "assign_other_name": [*_assign(tmp_path), "--name", "other"],
        "stop": ["experiment", "stop", "--name", "e", "--registry", str(registry)],
    }[command]
    assert main(argv) == 2
    assert _err(capsys) == f"error: --registry {registry}: {message}"
    assert registry.read_text() == REGISTRY_HEADER + rows  # nothing changed
    assert not (tmp_path / "a.csv").exists()


def test_registry_states_that_are_legitimate(tmp_path, capsys):
    """A partner stopped in an experiment (even twice) beside its running row, running in two
    experiments of other names, and a registry of one UTC offset: read as they are. ``stop``
    releases each running partner once; ``assign`` writes its rows in the registry's offset
    (plain rows among them made a registry of two time zones, refused next time) and re-running
    it is still a no-op."""
    hand_scores(tmp_path)
    registry = tmp_path / "reg.csv"
    zoned = RUNNING.replace("00:00:00", "01:00:00+01:00")
    stopped = zoned.replace("running", "stopped")
    other = zoned.replace("e,", "f,", 1)
    registry.write_text(REGISTRY_HEADER + stopped + stopped + zoned + other)
    assert main(_assign(tmp_path, "--name", "g", "--stratify", "")) == 0
    written = pd.read_csv(registry, dtype=str)
    assert len(written) == 4 + 40
    assert set(written["assigned_at"].iloc[4:]) == {"2026-03-01 01:00:00+01:00"}
    capsys.readouterr()
    assert main(_assign(tmp_path, "--name", "g", "--stratify", "")) == 0
    assert "registry unchanged" in capsys.readouterr().out
    stop = ["experiment", "stop", "--registry", str(registry), "--name"]
    assert main([*stop, "e"]) == 0
    assert "1 partners released" in capsys.readouterr().out
    assert main([*stop, "g"]) == 0
    assert "40 partners released" in capsys.readouterr().out


def test_an_assigned_at_with_a_utc_offset_is_read_in_utc(tmp_path, capsys):
    """``--assigned-at 2026-03-02T00:00+02:00`` stopped with "unexpected TypeError: Cannot
    compare tz-naive and tz-aware timestamps", exit 70: read in UTC, zone dropped, as every
    as_of and assigned_at is."""
    hand_scores(tmp_path)
    assert main(_assign(tmp_path, "--assigned-at", "2026-03-02T00:00+02:00")) == 0
    table = pd.read_csv(tmp_path / "a.csv", dtype=str)
    assert set(table["assigned_at"]) == {"2026-03-01 22:00:00"}
    registry = pd.read_csv(tmp_path / "reg.csv", dtype=str)
    assert set(registry["assigned_at"]) == {"2026-03-01 22:00:00"}
    capsys.readouterr()
    # before the scores' as_of once in UTC: refused as any earlier date
    assert main(_assign(tmp_path, "--name", "f", "--assigned-at", "2026-03-01T01:00+02:00")) == 2
    assert "before the scores' as_of 2026-03-01" in _err(capsys)
