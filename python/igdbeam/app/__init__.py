"""The application: the ``igdbeam`` CLI, the dataset-to-model pipeline, recommending, the demo,
the experiment grid, asset set-up and file helpers.
"""
