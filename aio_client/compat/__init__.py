"""Compatibility modules: another library's API over aio_client, for migrating by one import.

- :mod:`aio_client.compat.aiocircuitbreaker`: aiocircuitbreaker 2.0's
  ``circuit``, ``CircuitBreaker``, ``CircuitBreakerError`` and ``State``.

Each module keeps the other library's names, signatures and observable
behaviour, except for the few deliberate differences its docstring lists.
New code should use aio_client's own API instead.
"""

__all__: list[str] = []
