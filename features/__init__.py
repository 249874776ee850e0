"""partnerscore.features: raw-data contract, simulator, metric registry, point-in-time builders."""
