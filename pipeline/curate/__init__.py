"""From an output to a training set, beside the data and never rewriting a part: safety policies
(`policy`), near-duplicates (`dedup`), quotas counted after filtering (`quota`), export to WebDataset or an
image folder (`export`) with its dataset card (`card`), and the contact sheet (`contact`)."""
