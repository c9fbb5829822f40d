from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    VIEW: _ClassVar[EventType]
    CLICK: _ClassVar[EventType]
    ADD_TO_CART: _ClassVar[EventType]
    PURCHASE: _ClassVar[EventType]
    RATING: _ClassVar[EventType]
    LIKE: _ClassVar[EventType]
    HIDE: _ClassVar[EventType]
    DISLIKE: _ClassVar[EventType]
    REPORT: _ClassVar[EventType]
    ERASE: _ClassVar[EventType]
    IMPRESSION: _ClassVar[EventType]

class ItemState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_STATE_UNSPECIFIED: _ClassVar[ItemState]
    AVAILABLE: _ClassVar[ItemState]
    BANNED: _ClassVar[ItemState]
    REMOVED: _ClassVar[ItemState]
EVENT_TYPE_UNSPECIFIED: EventType
VIEW: EventType
CLICK: EventType
ADD_TO_CART: EventType
PURCHASE: EventType
RATING: EventType
LIKE: EventType
HIDE: EventType
DISLIKE: EventType
REPORT: EventType
ERASE: EventType
IMPRESSION: EventType
ITEM_STATE_UNSPECIFIED: ItemState
AVAILABLE: ItemState
BANNED: ItemState
REMOVED: ItemState

class Interaction(_message.Message):
    __slots__ = ("event_id", "tenant", "user_id", "item_id", "type", "value", "timestamp_ms", "recommendation_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    tenant: str
    user_id: str
    item_id: str
    type: EventType
    value: float
    timestamp_ms: int
    recommendation_id: str
    def __init__(self, event_id: _Optional[str] = ..., tenant: _Optional[str] = ..., user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., value: _Optional[float] = ..., timestamp_ms: _Optional[int] = ..., recommendation_id: _Optional[str] = ...) -> None: ...

class CatalogItem(_message.Message):
    __slots__ = ("tenant", "item_id", "state", "updated_ms", "categories", "attributes", "created_ms")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    item_id: str
    state: ItemState
    updated_ms: int
    categories: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    created_ms: int
    def __init__(self, tenant: _Optional[str] = ..., item_id: _Optional[str] = ..., state: _Optional[_Union[ItemState, str]] = ..., updated_ms: _Optional[int] = ..., categories: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., created_ms: _Optional[int] = ...) -> None: ...
