"""Framework-neutral code of twinnets: specs, data, weights, metrics, reports (never imports tensorflow or torch)."""
