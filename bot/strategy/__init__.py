"""Pure decision layers: regime classification, weighting schemes, regime overlay."""
