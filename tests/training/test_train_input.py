"""A training set the heads cannot fit stops ``train`` with one line, before any tuning."""

import pandas as pd
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
