"""numcast's shared library: the envelope, settings, the Redis connection, metrics and serving."""
