"""The item trie: the class, its array layout and file format, title tokenization and walks."""
