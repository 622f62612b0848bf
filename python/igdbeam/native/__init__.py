"""The one path into the compiled extension ``igdbeam._C`` (mirrors ``csrc/bindings``).

``library`` loads the module and says which backends it was built with; ``op_table`` holds every
op's argument lists (the torch schema and the binding's), the one source the rest is generated
from or checked against; ``torch_ops`` registers the ops with ``torch.library`` as
``torch.ops.igdbeam.*``; ``checks`` holds the argument checks of the public functions and
``value_checks`` those that read tensor values inside the ops' kernels; ``dispatch`` runs a
binding on the backend of its tensors and turns a failed status into a typed error.
"""
