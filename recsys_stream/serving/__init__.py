"""The serving layer: immutable per-tenant snapshots, read models and the gRPC Recommender."""
