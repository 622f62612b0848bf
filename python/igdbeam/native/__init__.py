"""The one path into the compiled extension ``igdbeam._C`` (mirrors ``csrc/bindings``).

``library`` loads the module and says which backends it was built with; ``checks`` holds the
argument checks every op runs before a pointer reaches native code; ``dispatch`` runs an op on the
backend of its tensors and turns a failed status into a typed error.
"""
