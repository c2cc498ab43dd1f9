"""The functional ops, one module per family; `convcore.functional` re-exports them."""
