"""Secret scanning: which texts hold provider keys, tokens, private keys and passwords, and
the placeholders that replace them (`rules`, `scanner`). Policy (which action for whom) is the
admission step's (`aibridge.admission.secrets`)."""
