"""Ground truth: reading data capture and label files incrementally (`stores`, `incremental`,
`records`), joining predictions with labels (`ingest`, `pairing`) and writing the joined outcomes as
observations the decision core weighs."""
