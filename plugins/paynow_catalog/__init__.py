"""Built-in product mapping from PRODUCT_CATALOG, loaded through entry points like any plugin."""
