"""recsys-stream: a streaming, nearline recommender (see README.md and ../shared/DESIGN.md)."""

import os

# gRPC's fork handlers, off unless asked for: our processes fork only to exec (subprocess,
# PySpark's gateway JVM, broker and stage processes) and never use a channel across a fork.
# With them on, a fork while another thread is in gRPC ("skipping fork() handlers") can leave
# gRPC's poller closing descriptors that the new child's pipes just reused: PySpark's gateway
# lost its stdin and exited at start ("JAVA_GATEWAY_EXITED") in a full suite, beside
# "epoll_wait error: Bad file descriptor" (grpc/grpc#13873; BuildStream turned them off for
# the same fork-then-exec use). Set before anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
