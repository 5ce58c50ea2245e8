"""The demo and the rehearsal tools: `variantctl demo`'s scenarios (`scenarios`, with their policies
as package data) and `variantctl traffic`'s load generator (`loadgen`), which sends requests with
inference ids and writes their labels as a labelling pipeline would."""
