from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServedItem(_message.Message):
    __slots__ = ("item_id", "position", "score", "reason")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    position: int
    score: float
    reason: str
    def __init__(self, item_id: _Optional[str] = ..., position: _Optional[int] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class ServedSlate(_message.Message):
    __slots__ = ("recommendation_id", "tenant", "user_id", "items", "algorithm", "model_version", "source", "experiment", "arm", "served_ms", "method", "anonymous")
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    SERVED_MS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_FIELD_NUMBER: _ClassVar[int]
    recommendation_id: str
    tenant: str
    user_id: str
    items: _containers.RepeatedCompositeFieldContainer[ServedItem]
    algorithm: str
    model_version: int
    source: str
    experiment: str
    arm: str
    served_ms: int
    method: str
    anonymous: bool
    def __init__(self, recommendation_id: _Optional[str] = ..., tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ServedItem, _Mapping]]] = ..., algorithm: _Optional[str] = ..., model_version: _Optional[int] = ..., source: _Optional[str] = ..., experiment: _Optional[str] = ..., arm: _Optional[str] = ..., served_ms: _Optional[int] = ..., method: _Optional[str] = ..., anonymous: _Optional[bool] = ...) -> None: ...
