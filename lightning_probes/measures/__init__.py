"""Pure measurements on tensors: no Lightning import here, each module usable on its own."""
