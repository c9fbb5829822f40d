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
SOURCE_UNSPECIFIED: Source
NEARLINE: Source
BATCH: Source
PROFILE_FOLD_IN: Source
POPULARITY: Source
EMPTY: Source
TRENDING: Source
BASELINE: Source

class RecommendRequest(_message.Message):
    __slots__ = ("tenant", "user_id", "k", "exclude_item_ids", "algorithm")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    algorithm: str
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., algorithm: _Optional[str] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "tenant", "algorithm", "model_version", "source", "reason")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    tenant: str
    algorithm: str
    model_version: int
    source: Source
    reason: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., tenant: _Optional[str] = ..., algorithm: _Optional[str] = ..., model_version: _Optional[int] = ..., source: _Optional[_Union[Source, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("tenant", "item_id", "k", "exclude_item_ids", "algorithm")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    item_id: str
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    algorithm: str
    def __init__(self, tenant: _Optional[str] = ..., item_id: _Optional[str] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., algorithm: _Optional[str] = ...) -> None: ...

class SimilarItemsResponse(_message.Message):
    __slots__ = ("items", "tenant", "algorithm", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    tenant: str
    algorithm: str
    model_version: int
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., tenant: _Optional[str] = ..., algorithm: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

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
