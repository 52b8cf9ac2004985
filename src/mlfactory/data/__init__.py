"""Data: a recipe's source -> a validated, deduplicated, split and cached `PreparedDataset`.

Entry point: `prepare.prepare_dataset(config)`. Sources are resolved in `sources` (one small
module per kind: `folders`, `tables`, `packaged`, `orange`, `remote`, `huggingface`); items are
checked by their modality (`Modality.check_file`, see `mlfactory.modalities`); the result type
and the hash split live in `dataset`. Nothing here imports torch.
"""
