"""Benchmark data: reading the published files, downloading them, and the GCD split protocol.

* :mod:`gcdbench.data.readers` parses the file formats (TSV, JSON lines, label names).
* :mod:`gcdbench.data.loading` turns a dataset folder into :class:`~gcdbench.api.DatasetParts`.
* :mod:`gcdbench.data.store` finds a dataset's folder and downloads into the cache.
* :mod:`gcdbench.data.checks` reports what in loaded data would bend a run.
* :mod:`gcdbench.data.split` draws known classes and labeled rows (the GLEAN/Loop protocol).
"""
