"""Part arithmetic (pure) and, later, the part tracker and reassembly."""
