"""partnerscore.serving: batch scoring, score history, HTML reports and the CLI."""
