"""``log-shuttle server``, the receiving end: a program of its own, which imports only common/
(and third-party libraries), so that it can be read, run and changed apart from the agent.

    cli.py      the ``server`` command's flags (agent/cli.py registers it under ``log-shuttle``)
    config.py   ServerConfig: the ``[server]`` table, LOG_SHUTTLE_SERVER__* variables, flags
    main.py     serve(): one asyncio loop, the receivers, the writer, the drain
    grpc.py     OTLP LogsService/Export and grpc.health.v1, on grpc.aio
    tcp.py      NDJSON and syslog over TCP or TLS, on asyncio streams
    frames.py   what one TCP frame means (JSON, RFC 5424, RFC 3164)
    writer.py   NDJSON to size-rotated files, or stdout
"""
