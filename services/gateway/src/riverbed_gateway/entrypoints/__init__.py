"""The gateway's HTTP entrypoints: routes, the ingestion fast path and access log
middleware, the problem documents, and the dependencies routes reach use cases through."""
