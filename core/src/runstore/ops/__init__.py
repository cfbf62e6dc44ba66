"""Store maintenance built on the public async API: recover, verify, diff
(:mod:`~.maintenance`), log retention and garbage collection
(:mod:`~.retention`) and copying runs between stores (:mod:`~.transfer`).
"""
