"""The item trie. Dependencies point one way: ``layout`` (array names, dtypes, ``TrieData``) <-
``build`` (arrays from paths) / ``file_format`` (save, load, validate) / ``titles`` (titles to
paths) / ``lookups`` / ``statistics`` / ``walk`` (the native walk of token rows) <-
``item_trie`` (the ``ItemTrie`` class); ``popularity`` stands alone. Import the class from
:mod:`igdbeam` or :mod:`igdbeam.trie.item_trie`.
"""
