"""Packed shards: pack a corpus into memory-mapped uint8 arrays and read them back."""
