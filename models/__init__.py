"""partnerscore.models: model heads, baselines, explainer and scoring policy."""
