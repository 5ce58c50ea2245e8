"""The history and what is built from it: the hash-chained audit log (`audit`), what each event says
the registry's rows must be (`attest`), point-in-time views (`timeline`), signed digests
(`digests`), exports (`exports`), redaction of secrets in what is recorded (`redaction`) and the
rollout report (`report`)."""
