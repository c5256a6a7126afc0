"""ZarrBridge's benchmark suite: ``python -m bench`` (``make bench``).

Every ZarrBridge measurement is taken side by side with an in-process Python
baseline in the same run and reported as a ratio. See ``bench/README.md``.
"""
