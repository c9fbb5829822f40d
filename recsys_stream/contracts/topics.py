"""Topic names (DESIGN.md, "Topics"): one configurable prefix in front of fixed names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """The topic names of one deployment; tests use a fresh prefix per test."""

    prefix: str = ""

    @property
    def interactions(self) -> str:
        return f"{self.prefix}interactions"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}interactions.dlq"

    @property
    def catalog(self) -> str:
        return f"{self.prefix}catalog"

    @property
    def profiles(self) -> str:
        return f"{self.prefix}profiles"

    @property
    def models(self) -> str:
        return f"{self.prefix}models"

    @property
    def state_changelog(self) -> str:
        return f"{self.prefix}worker-state-changelog"

    @property
    def item_interactions(self) -> str:
        """(user, confidence, version, user vector) per event on a new item, keyed by item."""
        return f"{self.prefix}item-interactions"

    @property
    def item_vectors(self) -> str:
        """New items' vectors per model version (compacted, keyed tenant/algorithm/item)."""
        return f"{self.prefix}item-vectors"

    @property
    def recommendations(self) -> str:
        """Every answer the server gave (``ServedSlate``), keyed and partitioned like
        ``interactions``: the online stage joins the two by user."""
        return f"{self.prefix}recommendations"

    def compacted(self) -> tuple[str, ...]:
        """Topics whose latest value per key is the truth (cleanup.policy=compact)."""
        return (self.catalog, self.profiles, self.state_changelog, self.item_vectors)

    def raw(self) -> tuple[str, ...]:
        """Topics of raw events, retention-bound (``kafka.raw_retention_ms``): an erased user's
        raw events leave them when their segments age out."""
        return (self.interactions, self.dlq, self.item_interactions, self.recommendations)

    def partitioned(self) -> tuple[str, ...]:
        """Topics with ``kafka.interaction_partitions`` partitions (the others have one)."""
        return (self.interactions, self.profiles, self.state_changelog, self.dlq,
                self.item_interactions, self.recommendations)

    def all(self) -> tuple[str, ...]:
        return (self.interactions, self.dlq, self.catalog, self.profiles, self.models,
                self.state_changelog, self.item_interactions, self.item_vectors,
                self.recommendations)
