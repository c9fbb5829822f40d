from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UserState(_message.Message):
    __slots__ = ("tenant", "user_id", "item_ids", "strengths", "item_last_seen_ms", "suppressed_item_ids", "last_event_ms", "input_partition", "applied_offset", "recent_event_ids", "event_count", "item_first_seen_ms", "rated_item_ids", "ratings", "rating_ms", "item_ids_nul", "strengths_f64", "last_seen_ms_i64", "first_seen_ms_i64", "recent_event_ids_nul", "suppressed_item_ids_nul", "rated_item_ids_nul", "ratings_f64", "rating_ms_i64", "caps")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    STRENGTHS_FIELD_NUMBER: _ClassVar[int]
    ITEM_LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_PARTITION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    RECENT_EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIRST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    RATED_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    RATINGS_FIELD_NUMBER: _ClassVar[int]
    RATING_MS_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_NUL_FIELD_NUMBER: _ClassVar[int]
    STRENGTHS_F64_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_I64_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_MS_I64_FIELD_NUMBER: _ClassVar[int]
    RECENT_EVENT_IDS_NUL_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_ITEM_IDS_NUL_FIELD_NUMBER: _ClassVar[int]
    RATED_ITEM_IDS_NUL_FIELD_NUMBER: _ClassVar[int]
    RATINGS_F64_FIELD_NUMBER: _ClassVar[int]
    RATING_MS_I64_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_id: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    strengths: _containers.RepeatedScalarFieldContainer[float]
    item_last_seen_ms: _containers.RepeatedScalarFieldContainer[int]
    suppressed_item_ids: _containers.RepeatedScalarFieldContainer[str]
    last_event_ms: int
    input_partition: int
    applied_offset: int
    recent_event_ids: _containers.RepeatedScalarFieldContainer[str]
    event_count: int
    item_first_seen_ms: _containers.RepeatedScalarFieldContainer[int]
    rated_item_ids: _containers.RepeatedScalarFieldContainer[str]
    ratings: _containers.RepeatedScalarFieldContainer[float]
    rating_ms: _containers.RepeatedScalarFieldContainer[int]
    item_ids_nul: bytes
    strengths_f64: bytes
    last_seen_ms_i64: bytes
    first_seen_ms_i64: bytes
    recent_event_ids_nul: bytes
    suppressed_item_ids_nul: bytes
    rated_item_ids_nul: bytes
    ratings_f64: bytes
    rating_ms_i64: bytes
    caps: ImpressionCaps
    def __init__(self, tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ..., strengths: _Optional[_Iterable[float]] = ..., item_last_seen_ms: _Optional[_Iterable[int]] = ..., suppressed_item_ids: _Optional[_Iterable[str]] = ..., last_event_ms: _Optional[int] = ..., input_partition: _Optional[int] = ..., applied_offset: _Optional[int] = ..., recent_event_ids: _Optional[_Iterable[str]] = ..., event_count: _Optional[int] = ..., item_first_seen_ms: _Optional[_Iterable[int]] = ..., rated_item_ids: _Optional[_Iterable[str]] = ..., ratings: _Optional[_Iterable[float]] = ..., rating_ms: _Optional[_Iterable[int]] = ..., item_ids_nul: _Optional[bytes] = ..., strengths_f64: _Optional[bytes] = ..., last_seen_ms_i64: _Optional[bytes] = ..., first_seen_ms_i64: _Optional[bytes] = ..., recent_event_ids_nul: _Optional[bytes] = ..., suppressed_item_ids_nul: _Optional[bytes] = ..., rated_item_ids_nul: _Optional[bytes] = ..., ratings_f64: _Optional[bytes] = ..., rating_ms_i64: _Optional[bytes] = ..., caps: _Optional[_Union[ImpressionCaps, _Mapping]] = ...) -> None: ...

class Shown(_message.Message):
    __slots__ = ("recommendation_id", "shown_ms", "reported", "item_ids", "item_ms")
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    SHOWN_MS_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ITEM_MS_FIELD_NUMBER: _ClassVar[int]
    recommendation_id: str
    shown_ms: int
    reported: bool
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    item_ms: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, recommendation_id: _Optional[str] = ..., shown_ms: _Optional[int] = ..., reported: _Optional[bool] = ..., item_ids: _Optional[_Iterable[str]] = ..., item_ms: _Optional[_Iterable[int]] = ...) -> None: ...

class ImpressionCaps(_message.Message):
    __slots__ = ("shown", "positive_item_ids", "positive_ms", "latest_ms")
    SHOWN_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_MS_FIELD_NUMBER: _ClassVar[int]
    LATEST_MS_FIELD_NUMBER: _ClassVar[int]
    shown: _containers.RepeatedCompositeFieldContainer[Shown]
    positive_item_ids: _containers.RepeatedScalarFieldContainer[str]
    positive_ms: _containers.RepeatedScalarFieldContainer[int]
    latest_ms: int
    def __init__(self, shown: _Optional[_Iterable[_Union[Shown, _Mapping]]] = ..., positive_item_ids: _Optional[_Iterable[str]] = ..., positive_ms: _Optional[_Iterable[int]] = ..., latest_ms: _Optional[int] = ...) -> None: ...
