"""Benchmark: does boosting the engagement head from the linear baseline beat the baseline?

On simulated programs (newest-cohort holdout): the logistic baseline, a plain LightGBM
classifier (the head's default parameters, untuned) and LightGBM boosted from the baseline's
logit (``init_score``, in-sample or cross-fitted by partner, 60-200 rounds), as holdout ROC
AUC, and the mean difference to the baseline with its s.e. across programs. Prints a table;
asserts nothing.

    .venv/bin/python bench/bench_engagement_init.py 5000 7,8,9,10,11
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import program  # noqa: E402

from partnerscore.features.registry import feature_specs  # noqa: E402
from partnerscore.models.baselines import LinearBaseline  # noqa: E402
from partnerscore.training.splits import holdout_split  # noqa: E402


def logit(p):
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("partners", type=int, help="partners per simulated program, e.g. 5000")
    parser.add_argument(
        "seeds", type=lambda text: [int(s) for s in text.split(",")], help="e.g. 7,8,9,10,11"
    )
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        frame, truth, _ = program(args.partners, seed)
        specs = feature_specs()
        names = [s.name for s in specs]
        tr, ho = holdout_split(frame, 0.2)
        X = frame[names].copy()
        for s in specs:
            if s.kind == "categorical":
                X[s.name] = X[s.name].astype("category")
        y = frame["label_engaged"].to_numpy()
        lin = LinearBaseline(specs).fit(frame[tr], frame["label_revenue"][tr].to_numpy(), y[tr])
        pl = lin.predict(frame)[1]
        # cross-fitted logit on the training rows (5 folds by partner) to avoid in-sample optimism
        pid = frame["partner_id"].to_numpy()
        upid = np.unique(pid[tr])
        rng = np.random.default_rng(0)
        fold_of = dict(zip(upid, rng.integers(0, 5, upid.size), strict=True))
        f = np.array([fold_of.get(p, -1) for p in pid])
        oof = np.full(len(frame), np.nan)
        for k in range(5):
            m_tr = tr & (f != k)
            m_va = tr & (f == k)
            lk = LinearBaseline(specs).fit(
                frame[m_tr], frame["label_revenue"][m_tr].to_numpy(), y[m_tr]
            )
            oof[m_va] = lk.predict(frame[m_va])[1]
        params = dict(
            n_estimators=120,
            learning_rate=0.08,
            num_leaves=8,
            max_depth=3,
            min_child_samples=40,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            reg_lambda=1.0,
            verbose=-1,
            n_jobs=1,
            random_state=7,
        )
        g = lgb.LGBMClassifier(**params).fit(X[tr], y[tr])
        pg = g.predict_proba(X)[:, 1]
        res = {
            "seed": seed,
            "linear": roc_auc_score(y[ho], pl[ho]),
            "gbm": roc_auc_score(y[ho], pg[ho]),
        }
        for init_name, init in (
            ("insample", logit(pl)),
            ("oof", np.where(tr, logit(np.nan_to_num(oof, nan=0.5)), logit(pl))),
        ):
            for n_est, lr in ((60, 0.05), (120, 0.05), (200, 0.03)):
                p2 = dict(params, n_estimators=n_est, learning_rate=lr)
                g2 = lgb.LGBMClassifier(**p2).fit(X[tr], y[tr], init_score=init[tr])
                m = g2.predict(X, raw_score=True) + logit(pl)
                res[f"lin+gbm {init_name} {n_est}/{lr}"] = roc_auc_score(y[ho], m[ho])
        te = truth["true_engagement_prob"].to_numpy()
        res["oracle"] = roc_auc_score(y[ho], te[ho])
        rows.append(res)
        print(res, flush=True)
    df = pd.DataFrame(rows).set_index("seed")
    d = df.sub(df["linear"], axis=0)
    print(df.round(4).T)
    print("mean diff vs linear, s.e.:")
    print(pd.DataFrame({"mean": d.mean(), "se": d.std() / np.sqrt(len(d))}).round(4))


if __name__ == "__main__":
    main()
