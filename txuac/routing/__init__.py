"""The routing layer: a transaction-stateful proxy driven by a Python routing script."""
