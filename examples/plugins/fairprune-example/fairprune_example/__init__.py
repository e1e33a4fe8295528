"""Example third-party fairprune plugins."""
