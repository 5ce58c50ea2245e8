"""Pure numerics for decisions taken on a growing sample: nothing here does I/O."""
