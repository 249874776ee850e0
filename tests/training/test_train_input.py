"""A training set the heads cannot fit stops ``train`` with one line, before any tuning."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from support import with_two_largest_won_deals

from partnerscore.serving.cli import main


def test_two_largest_amounts_of_one_partner_stop_train_with_one_line(
    raw_dir, tracking_uri, tmp_path, capsys
):
    # each amount is valid raw data and touches only its partner's rows, but the two add up to
    # inf in that partner's won amount and label_revenue: Optuna printed the heads' traceback
    # and the job ended "error: unexpected ValueError: revenue labels must be finite" (exit 1)
    raw = tmp_path / "raw"
    first = with_two_largest_won_deals(raw_dir, raw)
    features = tmp_path / "features"
    assert main(["build", "--raw", str(raw), "--out", str(features)]) == 0
    capsys.readouterr()
    rows = pd.read_parquet(features / "training_set.parquet")
    inf_rows = rows.index[rows["partner_id"] == first]
    assert (rows.loc[inf_rows, "label_revenue"] == float("inf")).any()  # the 30-day snapshot

    code = main(["train", "--features", str(features), "--trials", "1", "--no-register"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err and "unexpected" not in err, err
    row = int(inf_rows[0]) + 1
    as_of = pd.Timestamp(rows["as_of"].iloc[row - 1]).strftime("%Y-%m-%d")
    assert err.startswith(
        f"error: {features / 'training_set.parquet'}: column 'label_revenue' row {row} "
        f"(partner {first}, as_of {as_of}): inf"
    ), err


def test_an_infinite_value_beside_a_missing_as_of_still_names_its_row(tmp_path):
    # a hand-edited training set: formatting the missing as_of ended in "NaTType does not
    # support strftime" instead of the one line
    import numpy as np
    import pytest

    from partnerscore.features.core import PartnerscoreError
    from partnerscore.training.train import check_finite

    frame = pd.DataFrame(
        {
            "partner_id": ["P1", "P2"],
            "as_of": pd.to_datetime(["2024-01-01", None]),
            "deals_won_amount_todate": [1.0, np.inf],
            "label_revenue": [0.0, 1.0],
        }
    )
    with pytest.raises(PartnerscoreError) as error:
        check_finite(frame, tmp_path / "training_set.parquet")
    assert "column 'deals_won_amount_todate' row 2 (partner P2, as_of missing): inf" in str(
        error.value
    )


def edited_training_set(built_dir, tmp_path, edit) -> Path:
    """A copy of the shared training set with ``edit(frame, train_mask, holdout_mask)`` applied."""
    from partnerscore.training.splits import holdout_split

    out = tmp_path / "features"
    shutil.copytree(built_dir, out)
    frame = pd.read_parquet(out / "training_set.parquet")
    train, holdout = holdout_split(frame, 0.2)
    edit(frame, train, holdout)
    frame.to_parquet(out / "training_set.parquet")
    return out


def no_revenue_in_training_cohorts(frame, train, _holdout):
    frame.loc[train, "label_revenue"] = 0.0


def one_engagement_class_in_the_holdout(frame, _train, holdout):
    frame.loc[holdout, "label_engaged"] = 1


def no_revenue_in_the_holdout(frame, _train, holdout):
    frame.loc[holdout, "label_revenue"] = 0.0


def negative_revenue(frame, _train, _holdout):
    frame.loc[4, "label_revenue"] = -100.0


def engagement_label_two(frame, _train, _holdout):
    frame.loc[4, "label_engaged"] = 2


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        # LightGBM's "[tweedie]: sum of labels is zero" after the setup: "error: unexpected
        # LightGBMError" (exit 1) and a [LightGBM] [Fatal] line
        (
            no_revenue_in_training_cohorts,
            "column 'label_revenue' is 0 in every row of the training cohorts (",
        ),
        # the run registered a version whose holdout AUC, and so its primary score, was NaN:
        # a champion no challenger could beat
        (
            one_engagement_class_in_the_holdout,
            "column 'label_engaged' is 1 in every row of the holdout cohorts (",
        ),
        # the same with the revenue Gini and bias
        (no_revenue_in_the_holdout, "column 'label_revenue' is 0 in every row of the holdout"),
        # "unexpected ValueError: revenue labels must be finite and non-negative" once tuning
        # had begun, and the same for the engagement head's 0/1
        (negative_revenue, "column 'label_revenue' row 5 (partner "),
        (engagement_label_two, "column 'label_engaged' row 5 (partner "),
    ],
)
def test_labels_no_head_can_fit_or_judge_stop_train_with_one_line(
    edit, said, built_dir, tracking_uri, tmp_path, capsys
):
    features = edited_training_set(built_dir, tmp_path, edit)
    code = main(["train", "--features", str(features), "--trials", "0"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "unexpected" not in err and "LightGBM" not in err, err
    assert err.startswith(f"error: {features / 'training_set.parquet'}: {said}"), err
    assert not (tmp_path / "mlflow.db").exists()  # stopped before the store was touched


def test_too_few_training_partners_stop_train_before_the_store(
    built_dir, tracking_uri, tmp_path, capsys, monkeypatch
):
    # holdout_share 0.99 keeps the oldest cohort alone for training: 44 of the 343 partners
    # here (11 on a smaller program), and the run registered a model fitted on them (exit 0)
    import json

    from partnerscore.training.config import TrainConfig
    from partnerscore.training.splits import holdout_split
    from partnerscore.training.train import trainable_split

    frame = pd.read_parquet(built_dir / "training_set.parquet")
    train, holdout = holdout_split(frame, 0.99)
    trained, held = frame[train]["partner_id"].nunique(), frame[holdout]["partner_id"].nunique()
    assert trained < 50 <= held  # the default train.min_training_partners
    monkeypatch.chdir(tmp_path)  # the config's default folders, were the run not stopped
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"train": {"holdout_share": 0.99, "trials": 0}}))
    code = main(["train", "--features", str(built_dir), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err == (
        f"error: {built_dir / 'training_set.parquet'}: train.holdout_share 0.99 leaves {trained} "
        f"partners in the training cohorts and {held} in the holdout cohorts; training needs at "
        "least 50 (train.min_training_partners): lower train.holdout_share or build from more "
        "partners\n"
    )
    assert sorted(tmp_path.iterdir()) == [config]  # stopped before the store was touched
    # the setting decides: a lower minimum lets the same split train
    assert TrainConfig().min_training_partners == 50
    lower = TrainConfig(holdout_share=0.99, min_training_partners=trained)
    assert trainable_split(frame, lower)[1]["partner_id"].nunique() == trained


def test_too_few_partners_says_partners_not_rows(built_dir, tmp_path):
    # 19 partners of ~4 rows each: "only 72 rows; need at least 50 to train"
    from partnerscore.features.core import PartnerscoreError
    from partnerscore.training.train import load_training_set

    out = tmp_path / "features"
    shutil.copytree(built_dir, out)
    frame = pd.read_parquet(out / "training_set.parquet")
    few = frame[frame["partner_id"].isin(frame["partner_id"].unique()[:19])]
    assert len(few) >= 50
    few.to_parquet(out / "training_set.parquet")
    with pytest.raises(PartnerscoreError) as error:
        load_training_set(out)
    assert f"only {len(few)} rows of 19 partners; need at least 50 rows of 20 partners" in str(
        error.value
    )


def test_a_partner_fold_without_revenue_leaves_its_rows_out_of_fold():
    # one partner holds all the revenue: the fold that validates it trains on zeros only, and
    # LightGBM stopped train with "[tweedie]: sum of labels is zero"
    import numpy as np

    from partnerscore.training.train import out_of_fold_revenue

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=80)})
    y = np.zeros(80)
    y[:4] = [100.0, 50.0, 0.0, 20.0]
    fold = np.arange(80) % 4
    fold[:4] = 0  # the one earning partner's rows, all in fold 0
    folds = [(fold != i, fold == i) for i in range(4)]
    params = {"n_estimators": 5, "min_child_samples": 5}
    oof = out_of_fold_revenue(X, y, folds, params)
    assert np.isnan(oof[fold == 0]).all()
    assert np.isfinite(oof[fold != 0]).all()
