"""Data: phantom simulator, ingest, annotation cleaning, packed shards, datasets, transforms."""
