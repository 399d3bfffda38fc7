"""Stage 3, estimate: depth estimators (the interface and runtime policy, the registry, one module
per estimator) and the depth cache."""
