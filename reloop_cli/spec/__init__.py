"""The pipeline spec (TOML): its sections, how it is read and overridden, and the field layout
every stage derives from it (which fields are looked up in tables, which are dense values)."""
