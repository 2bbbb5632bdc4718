"""Read models built from events; `projections.registry` lists them all."""
