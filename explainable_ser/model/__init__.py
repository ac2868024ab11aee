"""The method: the network, its parts, prompts and tokenizer (free of Lightning and data code)."""
