"""Fine-tuning with IGD: the weighted losses, the transformers Trainer integration, collators,
prompt templates and LoRA helpers.
"""
