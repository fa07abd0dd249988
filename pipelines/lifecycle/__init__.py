"""Privacy over time: data subjects' opt-out and erasure requests, and retention, applied everywhere and proven."""
