"""The studies behind the README's tables: each script is one command that trains through sweeps.sweep."""
