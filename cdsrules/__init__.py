"""The `cdsrules` command line: above the engine, the store and the webhook, imported by none of them."""
