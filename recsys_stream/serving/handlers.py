"""Registering the Recommender service with request bodies parsed by the handler, not by gRPC.

The generated ``add_RecommenderServicer_to_server`` hands each body to ``FromString`` inside
grpc: a body that does not parse (random or truncated bytes, invalid UTF-8 in a string field)
then fails before any handler runs and the client gets ``UNKNOWN`` with no message. Here every
method's deserializer returns an :class:`Unparsed` marker instead of raising, and the service
answers it ``INVALID_ARGUMENT`` naming the message (``RecommenderService._handle``). The method
table is read from the service descriptor, so a new method needs no change here.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from recsys_stream.contracts.pb import recommender_pb2

SERVICE = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"]


@dataclass(frozen=True)
class Unparsed:
    """A request body that is not a valid ``message``; ``error`` says why."""

    message: str
    error: str
    tenant: str = ""  # so the shared request path can read ``request.tenant``


def lenient(cls):
    """``FromString`` of ``cls`` that returns :class:`Unparsed` instead of raising."""
    name = cls.DESCRIPTOR.full_name

    def parse(body: bytes):
        try:
            return cls.FromString(body)
        except (DecodeError, UnicodeDecodeError, ValueError) as e:
            return Unparsed(name, str(e) or type(e).__name__)
    return parse


def add_to_server(servicer, server) -> None:
    """``add_RecommenderServicer_to_server`` with lenient request parsing."""
    handlers = {}
    for m in SERVICE.methods:
        req, resp = GetMessageClass(m.input_type), GetMessageClass(m.output_type)
        handlers[m.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, m.name), request_deserializer=lenient(req),
            response_serializer=resp.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
