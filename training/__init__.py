"""partnerscore.training: splits, training, tuning, evaluation, MLflow tracking and registry."""
