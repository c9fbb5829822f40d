from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ItemInteraction(_message.Message):
    __slots__ = ("tenant", "item_id", "user_id", "algorithm", "model_version", "confidence", "user_vector", "event_ms", "erase")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    USER_VECTOR_FIELD_NUMBER: _ClassVar[int]
    EVENT_MS_FIELD_NUMBER: _ClassVar[int]
    ERASE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    item_id: str
    user_id: str
    algorithm: str
    model_version: int
    confidence: float
    user_vector: _containers.RepeatedScalarFieldContainer[float]
    event_ms: int
    erase: bool
    def __init__(self, tenant: _Optional[str] = ..., item_id: _Optional[str] = ..., user_id: _Optional[str] = ..., algorithm: _Optional[str] = ..., model_version: _Optional[int] = ..., confidence: _Optional[float] = ..., user_vector: _Optional[_Iterable[float]] = ..., event_ms: _Optional[int] = ..., erase: _Optional[bool] = ...) -> None: ...

class ItemVector(_message.Message):
    __slots__ = ("tenant", "algorithm", "item_id", "model_version", "values", "users", "first_solved_ms", "event_ms", "young")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SOLVED_MS_FIELD_NUMBER: _ClassVar[int]
    EVENT_MS_FIELD_NUMBER: _ClassVar[int]
    YOUNG_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    algorithm: str
    item_id: str
    model_version: int
    values: _containers.RepeatedScalarFieldContainer[float]
    users: int
    first_solved_ms: int
    event_ms: int
    young: bool
    def __init__(self, tenant: _Optional[str] = ..., algorithm: _Optional[str] = ..., item_id: _Optional[str] = ..., model_version: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., users: _Optional[int] = ..., first_solved_ms: _Optional[int] = ..., event_ms: _Optional[int] = ..., young: _Optional[bool] = ...) -> None: ...

class ItemFoldInState(_message.Message):
    __slots__ = ("tenant", "algorithm", "item_id", "model_version", "user_ids", "confidences", "user_vectors", "width", "first_solved_ms", "event_ms", "input_partition", "applied_offset", "young")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCES_FIELD_NUMBER: _ClassVar[int]
    USER_VECTORS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    FIRST_SOLVED_MS_FIELD_NUMBER: _ClassVar[int]
    EVENT_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_PARTITION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    YOUNG_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    algorithm: str
    item_id: str
    model_version: int
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    confidences: _containers.RepeatedScalarFieldContainer[float]
    user_vectors: _containers.RepeatedScalarFieldContainer[float]
    width: int
    first_solved_ms: int
    event_ms: int
    input_partition: int
    applied_offset: int
    young: bool
    def __init__(self, tenant: _Optional[str] = ..., algorithm: _Optional[str] = ..., item_id: _Optional[str] = ..., model_version: _Optional[int] = ..., user_ids: _Optional[_Iterable[str]] = ..., confidences: _Optional[_Iterable[float]] = ..., user_vectors: _Optional[_Iterable[float]] = ..., width: _Optional[int] = ..., first_solved_ms: _Optional[int] = ..., event_ms: _Optional[int] = ..., input_partition: _Optional[int] = ..., applied_offset: _Optional[int] = ..., young: _Optional[bool] = ...) -> None: ...
