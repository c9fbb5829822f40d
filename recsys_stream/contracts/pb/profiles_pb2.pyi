from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProfileVector(_message.Message):
    __slots__ = ("algorithm", "model_version", "values", "suppressed_rows", "user_bias")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_ROWS_FIELD_NUMBER: _ClassVar[int]
    USER_BIAS_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    model_version: int
    values: _containers.RepeatedScalarFieldContainer[float]
    suppressed_rows: _containers.RepeatedScalarFieldContainer[int]
    user_bias: float
    def __init__(self, algorithm: _Optional[str] = ..., model_version: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., suppressed_rows: _Optional[_Iterable[int]] = ..., user_bias: _Optional[float] = ...) -> None: ...

class UserProfile(_message.Message):
    __slots__ = ("tenant", "user_id", "vectors", "item_ids", "confidences", "suppressed_item_ids", "last_event_ms", "updated_ms", "rated_item_ids", "ratings", "rating_ms", "capped_item_ids", "capped_until_ms")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCES_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    RATED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    RATINGS_FIELD_NUMBER: _ClassVar[int]
    RATING_MS_FIELD_NUMBER: _ClassVar[int]
    CAPPED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CAPPED_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    vectors: _containers.RepeatedCompositeFieldContainer[ProfileVector]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    confidences: _containers.RepeatedScalarFieldContainer[float]
    suppressed_item_ids: _containers.RepeatedScalarFieldContainer[str]
    last_event_ms: int
    updated_ms: int
    rated_item_ids: _containers.RepeatedScalarFieldContainer[str]
    ratings: _containers.RepeatedScalarFieldContainer[float]
    rating_ms: _containers.RepeatedScalarFieldContainer[int]
    capped_item_ids: _containers.RepeatedScalarFieldContainer[str]
    capped_until_ms: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., vectors: _Optional[_Iterable[_Union[ProfileVector, _Mapping]]] = ..., item_ids: _Optional[_Iterable[str]] = ..., confidences: _Optional[_Iterable[float]] = ..., suppressed_item_ids: _Optional[_Iterable[str]] = ..., last_event_ms: _Optional[int] = ..., updated_ms: _Optional[int] = ..., rated_item_ids: _Optional[_Iterable[str]] = ..., ratings: _Optional[_Iterable[float]] = ..., rating_ms: _Optional[_Iterable[int]] = ..., capped_item_ids: _Optional[_Iterable[str]] = ..., capped_until_ms: _Optional[_Iterable[int]] = ...) -> None: ...
