"""BioASQ: file formats (stdlib), golden -> SQuAD conversion and SQuAD-format reading, test-set evaluation."""
