"""Checksum algorithms by v02 ``sum`` letter; see :mod:`sarra.integrity.sums`."""
