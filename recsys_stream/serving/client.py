"""A small synchronous client of the Recommender service."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from recsys_stream.contracts.pb import profiles_pb2, recommender_pb2, recommender_pb2_grpc
from recsys_stream.serving.auth import METADATA_KEY
from recsys_stream.serving.tls import channel_credentials


class RecommenderClient:
    """``RecommenderClient(address, api_key).recommend(user_id, k=10)``; also
    ``similar_items(item_id, k)``, ``predict_ratings(user_id, item_ids)`` and, with an admin key, ``get_profile(user_id)``.

    Raises ``grpc.RpcError`` with the server's status code and message on any refusal.

    TLS: ``ca`` (PEM file) is the CA that signed the server's certificate (default: plaintext,
    unless ``tls=True``: then the system's roots); ``cert`` and ``key`` (PEM files) are the
    client's certificate for a server that asks for one (mutual TLS).
    """

    def __init__(self, address: str, api_key: str, timeout: float = 5.0, ca: str | None = None,
                 cert: str | None = None, key: str | None = None, tls: bool = False) -> None:
        self.channel = (grpc.secure_channel(address, channel_credentials(ca, cert, key))
                        if tls or ca or cert or key else grpc.insecure_channel(address))
        self.stub = recommender_pb2_grpc.RecommenderStub(self.channel)
        self.metadata = ((METADATA_KEY, api_key),)
        self.timeout = timeout

    def recommend(self, user_id: str, k: int = 10, exclude: Iterable[str] = (), tenant: str = "",
                  algorithm: str = "", **options) -> recommender_pb2.RecommendResponse:
        """``options``: further ``RecommendRequest`` fields (``filter``, ...)."""
        req = recommender_pb2.RecommendRequest(tenant=tenant, user_id=user_id, k=k,
                                               exclude_item_ids=list(exclude),
                                               algorithm=algorithm, **options)
        return self.stub.Recommend(req, metadata=self.metadata, timeout=self.timeout)

    def similar_items(self, item_id: str, k: int = 10, exclude: Iterable[str] = (),
                      tenant: str = "", algorithm: str = "", **options
                      ) -> recommender_pb2.SimilarItemsResponse:
        req = recommender_pb2.SimilarItemsRequest(tenant=tenant, item_id=item_id, k=k,
                                                  exclude_item_ids=list(exclude),
                                                  algorithm=algorithm, **options)
        return self.stub.SimilarItems(req, metadata=self.metadata, timeout=self.timeout)

    def rank_items(self, item_ids: Iterable[str], user_id: str = "", tenant: str = "",
                   **options) -> recommender_pb2.RankItemsResponse:
        """``item_ids`` ordered for the user (``options``: context_item_ids, filter, ...)."""
        req = recommender_pb2.RankItemsRequest(tenant=tenant, user_id=user_id,
                                               item_ids=list(item_ids), **options)
        return self.stub.RankItems(req, metadata=self.metadata, timeout=self.timeout)

    def predict_ratings(self, user_id: str, item_ids: Iterable[str], tenant: str = ""
                        ) -> recommender_pb2.PredictRatingsResponse:
        """Predicted ratings of ``item_ids`` for the user by the tenant's ``mf`` model."""
        req = recommender_pb2.PredictRatingsRequest(tenant=tenant, user_id=user_id,
                                                    item_ids=list(item_ids))
        return self.stub.PredictRatings(req, metadata=self.metadata, timeout=self.timeout)

    def get_profile(self, user_id: str, tenant: str = "") -> profiles_pb2.UserProfile:
        """The user's profile as the server holds it (an operator's admin key only)."""
        req = recommender_pb2.GetProfileRequest(tenant=tenant, user_id=user_id)
        return self.stub.GetProfile(req, metadata=self.metadata, timeout=self.timeout)

    def erase_user(self, user_id: str, tenant: str = "") -> recommender_pb2.EraseUserResponse:
        """Erase the user everywhere downstream (an operator's admin key only)."""
        req = recommender_pb2.EraseUserRequest(tenant=tenant, user_id=user_id)
        return self.stub.EraseUser(req, metadata=self.metadata, timeout=self.timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
