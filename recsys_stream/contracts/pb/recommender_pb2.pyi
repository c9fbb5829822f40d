from recsys_stream.contracts.pb import profiles_pb2 as _profiles_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    NEARLINE: _ClassVar[Source]
    BATCH: _ClassVar[Source]
    PROFILE_FOLD_IN: _ClassVar[Source]
    POPULARITY: _ClassVar[Source]
    EMPTY: _ClassVar[Source]
    TRENDING: _ClassVar[Source]
    BASELINE: _ClassVar[Source]
    SESSION: _ClassVar[Source]
SOURCE_UNSPECIFIED: Source
NEARLINE: Source
BATCH: Source
PROFILE_FOLD_IN: Source
POPULARITY: Source
EMPTY: Source
TRENDING: Source
BASELINE: Source
SESSION: Source

class RecommendRequest(_message.Message):
    __slots__ = ("tenant", "user_id", "k", "exclude_item_ids", "algorithm", "filter", "context_item_ids", "explain", "diversity", "session_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    algorithm: str
    filter: Filter
    context_item_ids: _containers.RepeatedScalarFieldContainer[str]
    explain: bool
    diversity: Diversity
    session_id: str
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., algorithm: _Optional[str] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., context_item_ids: _Optional[_Iterable[str]] = ..., explain: _Optional[bool] = ..., diversity: _Optional[_Union[Diversity, _Mapping]] = ..., session_id: _Optional[str] = ...) -> None: ...

class Diversity(_message.Message):
    __slots__ = ("max_per_category", "mmr_lambda")
    MAX_PER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MMR_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    max_per_category: int
    mmr_lambda: float
    def __init__(self, max_per_category: _Optional[int] = ..., mmr_lambda: _Optional[float] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("include_categories", "exclude_categories", "attributes", "created_after_ms")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INCLUDE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    include_categories: _containers.RepeatedScalarFieldContainer[str]
    exclude_categories: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    created_after_ms: int
    def __init__(self, include_categories: _Optional[_Iterable[str]] = ..., exclude_categories: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., created_after_ms: _Optional[int] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score", "reason", "because")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNSPECIFIED: _ClassVar[ScoredItem.Reason]
        PERSONALIZED: _ClassVar[ScoredItem.Reason]
        EXPLORATION: _ClassVar[ScoredItem.Reason]
        POPULAR: _ClassVar[ScoredItem.Reason]
        TRENDING: _ClassVar[ScoredItem.Reason]
        SIMILAR: _ClassVar[ScoredItem.Reason]
        UNKNOWN_ITEM: _ClassVar[ScoredItem.Reason]
    REASON_UNSPECIFIED: ScoredItem.Reason
    PERSONALIZED: ScoredItem.Reason
    EXPLORATION: ScoredItem.Reason
    POPULAR: ScoredItem.Reason
    TRENDING: ScoredItem.Reason
    SIMILAR: ScoredItem.Reason
    UNKNOWN_ITEM: ScoredItem.Reason
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    reason: ScoredItem.Reason
    because: _containers.RepeatedCompositeFieldContainer[Because]
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., reason: _Optional[_Union[ScoredItem.Reason, str]] = ..., because: _Optional[_Iterable[_Union[Because, _Mapping]]] = ...) -> None: ...

class Because(_message.Message):
    __slots__ = ("item_id", "contribution")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    contribution: float
    def __init__(self, item_id: _Optional[str] = ..., contribution: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "tenant", "algorithm", "model_version", "source", "reason", "recommendation_id", "experiment", "arm")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    tenant: str
    algorithm: str
    model_version: int
    source: Source
    reason: str
    recommendation_id: str
    experiment: str
    arm: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., tenant: _Optional[str] = ..., algorithm: _Optional[str] = ..., model_version: _Optional[int] = ..., source: _Optional[_Union[Source, str]] = ..., reason: _Optional[str] = ..., recommendation_id: _Optional[str] = ..., experiment: _Optional[str] = ..., arm: _Optional[str] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("tenant", "item_id", "k", "exclude_item_ids", "algorithm", "filter")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    item_id: str
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    algorithm: str
    filter: Filter
    def __init__(self, tenant: _Optional[str] = ..., item_id: _Optional[str] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., algorithm: _Optional[str] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class SimilarItemsResponse(_message.Message):
    __slots__ = ("items", "tenant", "algorithm", "model_version", "recommendation_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    tenant: str
    algorithm: str
    model_version: int
    recommendation_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., tenant: _Optional[str] = ..., algorithm: _Optional[str] = ..., model_version: _Optional[int] = ..., recommendation_id: _Optional[str] = ...) -> None: ...

class RankItemsRequest(_message.Message):
    __slots__ = ("tenant", "user_id", "context_item_ids", "item_ids", "filter", "algorithm", "session_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    context_item_ids: _containers.RepeatedScalarFieldContainer[str]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    filter: Filter
    algorithm: str
    session_id: str
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., context_item_ids: _Optional[_Iterable[str]] = ..., item_ids: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., algorithm: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class RankItemsResponse(_message.Message):
    __slots__ = ("items", "tenant", "algorithm", "model_version", "source", "unknown_item_ids", "reason", "recommendation_id", "experiment", "arm")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    tenant: str
    algorithm: str
    model_version: int
    source: Source
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    recommendation_id: str
    experiment: str
    arm: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., tenant: _Optional[str] = ..., algorithm: _Optional[str] = ..., model_version: _Optional[int] = ..., source: _Optional[_Union[Source, str]] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., recommendation_id: _Optional[str] = ..., experiment: _Optional[str] = ..., arm: _Optional[str] = ...) -> None: ...

class GetProfileRequest(_message.Message):
    __slots__ = ("tenant", "user_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class PredictRatingsRequest(_message.Message):
    __slots__ = ("tenant", "user_id", "item_ids")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictedRating(_message.Message):
    __slots__ = ("item_id", "rating", "known")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    rating: float
    known: bool
    def __init__(self, item_id: _Optional[str] = ..., rating: _Optional[float] = ..., known: _Optional[bool] = ...) -> None: ...

class PredictRatingsResponse(_message.Message):
    __slots__ = ("ratings", "tenant", "algorithm", "model_version", "source", "unknown_item_ids")
    RATINGS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ratings: _containers.RepeatedCompositeFieldContainer[PredictedRating]
    tenant: str
    algorithm: str
    model_version: int
    source: Source
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ratings: _Optional[_Iterable[_Union[PredictedRating, _Mapping]]] = ..., tenant: _Optional[str] = ..., algorithm: _Optional[str] = ..., model_version: _Optional[int] = ..., source: _Optional[_Union[Source, str]] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EraseUserRequest(_message.Message):
    __slots__ = ("tenant", "user_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class EraseUserResponse(_message.Message):
    __slots__ = ("tenant", "user_id", "event_id", "partition", "offset")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    event_id: str
    partition: int
    offset: int
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., event_id: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...
