"""The streaming server (WeNet's WebSocket protocol, HTTP transcription, a microphone page) and
its client.

>>> config = ServerConfig(port=8090, chunk_size=8, left_context=32, right_context=0)
>>> serve(echostream.load_model("path/to/model"), config)                       # doctest: +SKIP
"""

from echostream.server.app import ServerConfig, build_server, create_app, listen, serve
from echostream.server.client import ClientError, FinalResult, stream_file, stream_pcm

__all__ = [
    "ClientError",
    "FinalResult",
    "ServerConfig",
    "build_server",
    "create_app",
    "listen",
    "serve",
    "stream_file",
    "stream_pcm",
]
