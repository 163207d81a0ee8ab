"""Data files shipped with infragym (the DigitalOcean size table)."""
