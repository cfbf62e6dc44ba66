"""runstore on one SQLite table of keys and values, through runstore's key-value SPI."""
