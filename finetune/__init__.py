"""Fine-tuning stage (UPerFuse / UPerNet heads for LC and LPIS): planned, not implemented yet."""
