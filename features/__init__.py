"""partnerscore.features: raw-data contract, simulator, metric registry and point-in-time builders."""
