"""The control plane's SQL store: models (one `Base`), engine and migrations."""
