"""cell package."""
