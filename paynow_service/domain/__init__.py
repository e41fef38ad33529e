"""Pure Python: PayNow events, signatures, ledger rules and errors. No I/O, no generated code."""
