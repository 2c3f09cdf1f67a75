"""gradmix."""
