"""DigitalOcean components."""
