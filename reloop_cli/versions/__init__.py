"""A trained version: its folder on disk (weights and metadata), and scoring logs with it."""
