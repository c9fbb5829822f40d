"""The batch layer: per-tenant ALS and BPR training, evaluation, quality gates and publishing."""
