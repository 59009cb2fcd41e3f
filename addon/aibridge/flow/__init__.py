"""One bridged exchange: its state, and the one function that ends it."""
