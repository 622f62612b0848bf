"""Shared builders of the tests and benchmarks: tiny models, synthetic catalogs, tiny data.

One definition each: ``ids`` (the special token ids), ``catalogs`` (the synthetic catalog
generator), ``models`` (the tiny Llama, the tiny tokenizers, a tiny model folder), ``data`` (the
tiny BIGRec and RecBole folders), ``training`` (Trainer fixtures), ``cli`` (running the CLI) and
``trie_files`` (an independent writer of trie files). The benchmarks reach this package through
pytest's ``pythonpath`` setting (``tests`` is on it).
"""
