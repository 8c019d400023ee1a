"""Pure payment logic: currencies, the double-entry ledger, receipts, reconciliation. No I/O."""
